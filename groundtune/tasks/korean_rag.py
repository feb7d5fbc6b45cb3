"""`groundtune demo ko-rag`: a Korean grounded assistant end to end, offline, on shipped Korean news.

1. documents: the twenty shipped sci-news-sum-kr-50 articles (MIT; its README asks for non-commercial use), one
   text file each with a sentence a paragraph, so that a passage is one sentence and a citation points at it;
2. index: Kiwi BM25 (`groundtune index`'s build_index; no dense vectors: the shipped encoder is English-only);
3. questions: `groundtune synth` with Gemma 3 270M as the teacher, one Korean question a sentence, kept only when
   it passes synth's filters (length, verbatim copy, duplicate, round-trip retrieval), each drop counted;
4. split by article: the questions of every fifth article are held out, so "after" is scored on articles whose
   questions training never saw;
5. samples: a question with its top-k retrieved passages, in the prompt `serve` builds for the adapter
   (serve.citations: the same retrieval and the same prompt function); the answer is the sentence the question
   was written from (extractive, as doc2dial's answers are grounding spans);
6. LLaMA-Adapter training on the frozen base;
7. one `serve` app over the frozen base and the adapter, retrieving from the index: the held-out questions go to
   both over HTTP ("before" is the base, "after" the adapter) and come back with their citations;
8. scores with the Korean metrics (Kiwi morphemes; ko-mecab for SacreBLEU) and bootstrap intervals, and how often
   the source sentence is among the citations.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from groundtune.config import DataConfig, GenerationConfig, TrainConfig
from groundtune.errors import GroundtuneError

ARTICLE_FOLDERS = ("ko_summarization/sci-news-sum-kr-50", "ko_news/sci-news-sum-kr-50")
HELD_OUT_EVERY = 5  # the questions of every fifth article (by id) are held out
K = 3  # passages retrieved for a question, in training and in serving
ADAPTER_NAME = "ko-rag"
SENTENCES = 110  # of the 218: every second sentence gets a question, which keeps synth to a few CPU minutes


def korean_rag_config(output_dir: str = "runs/demo-ko-rag", steps: int = 60, model: str | None = None,
                      method: dict | None = None) -> TrainConfig:
    """LLaMA-Adapter on all 18 layers of Gemma 3 270M (K=10), lr 1e-2, batch 4: `demo ko`'s recipe. Answers are
    single news sentences, up to 96 tokens."""
    from groundtune.tasks.demo import KOREAN_MODEL

    data = DataConfig(format="jsonl", max_answer_tokens=96, history_turns=0)
    return TrainConfig(model=model or KOREAN_MODEL, method=method or {"method": "llama_adapter", "layers": 18, "length": 10},
                       data=data, generation=GenerationConfig(max_new_tokens=80, batch_size=8), output_dir=output_dir,
                       lr=1e-2, warmup_ratio=0.1, max_steps=steps, batch_size=4, precision="fp32", save_every=steps)


def write_documents(folder: Path, sources=None) -> list[Path]:
    """Each shipped article as `sci-news-NN.txt`, a sentence a paragraph, its final full stop put back."""
    from groundtune.data import asset_path
    from groundtune.fileio import atomic_write
    from groundtune.tasks.summarize import join_sentences

    files = sorted(f for s in (sources or [asset_path(a) for a in ARTICLE_FOLDERS]) for f in Path(s).glob("*.json"))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        sentences = json.loads(f.read_text(encoding="utf-8"))["sentences"]
        text = "\n\n".join(join_sentences([s]) for s in sentences if s.strip())
        written.append(atomic_write(folder / f"sci-news-{f.stem}.txt", text + "\n"))
    return written


def sentence_of(passage) -> str:
    """The passage's sentence without the "file // " title that text passages start with."""
    from groundtune.retrieval.passages import TITLE_SEP

    return passage.text.split(TITLE_SEP, 1)[-1].strip()


def split_by_article(rows: list[dict], every: int = HELD_OUT_EVERY) -> tuple[list[dict], list[dict]]:
    """(train, held out): the questions of every `every`-th article, in sorted order, are held out."""
    articles = sorted({r["doc_id"] for r in rows})
    held = set(articles[every - 1::every])
    return [r for r in rows if r["doc_id"] not in held], [r for r in rows if r["doc_id"] in held]


def grounded_samples(rows: list[dict], retriever, tokenizer, fmt: dict, k: int = K) -> list:
    """Training samples built as `serve` builds a chat request's prompt: the question's top-k passages from the
    index and the adapter's prompt format; the answer is the question's source sentence."""
    from groundtune.data.sample import Sample
    from groundtune.serve.citations import Grounding, build_chat_prompt, split_conversation

    grounding = Grounding(retriever)
    samples = []
    for r in rows:
        citations = grounding.passages(r["question"], [], k)
        prompt = build_chat_prompt(fmt, tokenizer, split_conversation([{"role": "user", "content": r["question"]}]),
                                   citations)
        samples.append(Sample(r["id"], prompt, sentence_of(retriever.passages[r["passage_id"]]), r["doc_id"],
                              {"dial_id": r["doc_id"]}))
    return samples


def ask(url: str, model: str, questions: list[str], *, k: int = K, max_tokens: int = 80, workers: int = 8) -> list[dict]:
    """POST each question to the server's /v1/chat/completions (greedy), `workers` at a time so that its engine
    batches them; returns the replies' text and citations."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def one(question: str) -> dict:
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                "temperature": 0, "k": k}
        request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=600) as response:
            reply = json.loads(response.read())
        return {"answer": reply["choices"][0]["message"]["content"].strip(), "citations": reply["citations"]}

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, questions))


def default_teacher(model, tokenizer):
    """The base model itself writes the questions (synth's Korean prompt; greedy, 40 new tokens)."""
    from groundtune.retrieval.synth import LocalTeacher

    return LocalTeacher(model, tokenizer, max_new_tokens=40, batch_size=8)


def _stage(timings: dict, name: str, start: float) -> float:
    timings[f"{name}_s"] = round(time.perf_counter() - start, 1)
    return time.perf_counter()


def run_korean_rag_demo(cfg: TrainConfig, *, teacher=None, model=None, tokenizer=None, max_passages: int | None = SENTENCES,
                        k: int = K, progress: bool = True) -> dict:
    """The flow in the module docstring; writes into cfg.output_dir: documents/, index/, questions.jsonl (with
    its .done.jsonl), adapter/, loss.png, predictions_before.jsonl, predictions.jsonl, results.json, NOTICE.

    teacher: what writes the questions (anything with `complete(prompts)`; default: the base model itself through
    synth's LocalTeacher). max_passages: only the first this many passages get a question (tests)."""
    from groundtune.data import asset_path
    from groundtune.data.prompt_format import from_data_config
    from groundtune.fileio import atomic_write
    from groundtune.methods import detach
    from groundtune.metrics import score
    from groundtune.models import GEMMA_NAME, load_model
    from groundtune.retrieval.index import Retriever, build_index
    from groundtune.retrieval.passages import load_passages
    from groundtune.retrieval.synth import SynthConfig, done_path, synthesize
    from groundtune.serve import BackgroundServer, build
    from groundtune.tasks.demo import before_after
    from groundtune.train import train

    out = Path(cfg.output_dir)
    timings, started = {}, time.perf_counter()
    t = started
    docs = write_documents(out / "documents")
    passages = load_passages([out / "documents"], "structure")
    build_index(passages, out / "index", language="ko", dense=False, segmentation="structure", show_progress=False)
    retriever = Retriever.load(out / "index")
    print(f"index: {len(passages)} sentences of {len(docs)} articles, Kiwi BM25 ({out / 'index'})")
    t = _stage(timings, "index", t)

    if model is None:
        print(f"loading {cfg.model} (the first run assembles and converts it once, about a minute)")
        model, tokenizer = load_model(cfg.model, dtype="auto")  # bf16 only where the CPU runs it natively
    teacher = teacher or default_teacher(model, tokenizer)
    questions_file = out / "questions.jsonl"
    for stale in (questions_file, done_path(questions_file)):  # the demo starts afresh (the guard made sure it is ours)
        stale.unlink(missing_ok=True)
    # sizing: `max_passages` sentences spread evenly over all the articles, so that every fifth is still held out
    stride = -(-len(passages) // max_passages) if max_passages else 1
    report = synthesize(retriever, teacher, questions_file, passage_ids=list(range(0, len(passages), stride)), show_progress=progress,
                        config=SynthConfig(round_trip_k=5, batch_size=8, max_new_tokens=40))
    print(f"questions: {report.summary()}")
    rows = [json.loads(line) for line in questions_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    train_rows, held_rows = split_by_article(rows)
    if not train_rows or not held_rows:
        raise GroundtuneError(f"{questions_file}: {len(train_rows)} training and {len(held_rows)} held-out questions were "
                         "kept; the demo needs both (see the drop counts above)")
    held_articles = sorted({r["doc_id"] for r in held_rows})
    print(f"split by article: {len(train_rows)} training questions, {len(held_rows)} held out "
          f"(articles {', '.join(held_articles)})")
    t = _stage(timings, "synth", t)

    fmt = from_data_config(cfg.data) | {"k": k}
    train_samples = grounded_samples(train_rows, retriever, tokenizer, fmt, k)
    print(f"training {cfg.method} for {cfg.max_steps} steps of {cfg.batch_size} on {len(train_samples)} grounded samples")
    result = train(cfg, train_samples, model=model, tokenizer=tokenizer, overwrite=True, progress=progress)
    t = _stage(timings, "train", t)

    base = detach(result.model)
    app, engine = build(base, tokenizer, {ADAPTER_NAME: result.adapter_dir}, retriever=retriever, base_name="base")
    references = [sentence_of(retriever.passages[r["passage_id"]]) for r in held_rows]
    questions, ids = [r["question"] for r in held_rows], [r["id"] for r in held_rows]
    replies = {}
    try:
        with BackgroundServer(app) as url:
            print(f"serve: {url} with the frozen base and adapter {ADAPTER_NAME!r}; asking {len(questions)} held-out questions")
            for name in ("base", ADAPTER_NAME):
                replies[name] = ask(url, name, questions, k=k, max_tokens=cfg.generation.max_new_tokens,
                                    workers=cfg.generation.batch_size)
    finally:
        engine.close()
    t = _stage(timings, "serve", t)

    scores = {name: score([r["answer"] for r in replies[name]], references, lang="ko", ids=ids) for name in replies}
    before, after = scores["base"], scores[ADAPTER_NAME]
    cited = [str(r["passage_id"]) in {c["id"] for c in reply["citations"]} for r, reply in zip(held_rows, replies["base"])]
    for name, path in (("base", "predictions_before.jsonl"), (ADAPTER_NAME, "predictions.jsonl")):
        atomic_write(out / path, "".join(json.dumps({"id": i, "question": q, "prediction": reply["answer"],
                                                     "reference": ref, "citations": [c["id"] for c in reply["citations"]]},
                                                    ensure_ascii=False) + "\n"
                                         for i, q, reply, ref in zip(ids, questions, replies[name], references)))
    if cfg.model == GEMMA_NAME:
        atomic_write(out / "NOTICE", asset_path("gemma/NOTICE").read_bytes())  # the adapter is a Gemma Model Derivative
    timings["total_s"] = round(time.perf_counter() - started, 1)
    summary = {"model": cfg.model, "method": cfg.method, "steps": cfg.max_steps, "batch_size": cfg.batch_size, "k": k,
               "articles": len(docs), "passages": len(passages), "synth": report.to_dict(),
               "train_questions": len(train_rows), "held_out_questions": len(held_rows), "held_out_articles": held_articles,
               "source_cited": round(100 * sum(cited) / len(cited), 2), "trainable_params": result.trainable_params,
               "before": before.scores, "after": after.scores, "before_intervals": before.as_dict()["intervals"],
               "after_intervals": after.as_dict()["intervals"], "signatures": after.signatures,
               "train_loss": result.losses, "timings": timings,
               "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    atomic_write(out / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(f"\n({len(held_rows)} held-out questions on {len(held_articles)} articles; answers from `serve`, "
          "Kiwi morphemes, ko-mecab for SacreBLEU)")
    print(before_after(before.scores, before.intervals, after.scores, after.intervals))
    print(f"source sentence among the {k} citations: {summary['source_cited']:.1f}% (the same index for both)")
    print(f"times: {timings}  load average: {summary['load_average']}")
    print(f"adapter: {result.adapter_dir} (serve it: groundtune serve --model {cfg.model} "
          f"--adapter {ADAPTER_NAME}={result.adapter_dir} --index {out / 'index'})")
    return summary
