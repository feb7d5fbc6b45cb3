"""RAG bench: retrieval recall of every pipeline, re-ranking included, and what retrieval does to the answers.

On doc2dial reading-comprehension questions (--data-dir: documents JSON + question JSONL) split by dialogue
into a train half and a test half (by a hash of the dialogue id):

1. Retrieval: 100-word passages, BM25 + dense; the fusion weight is chosen on a dev fifth of the train half;
   a reranker (late interaction, `train_reranker`'s default) is trained on the rest of the train half.
   Recall@1/5/10 and MRR on test questions for bm25, dense, hybrid, hybrid+rerank and hybrid+upr (UPR is slow on a CPU: it runs on
   the first --upr-queries of them, and hybrid is reported on that same subset for comparison), with each
   pipeline's queries/s.
2. End to end, on --e2e-queries test questions with the embedded SmolLM2-135M-Instruct: answer F1 (and the
   rest of the metrics) with the gold document, with the top-k retrieved passages, and with retrieved
   passages after RAG training (LLaMA-Adapter, --rag-steps on train-half questions with retrieved passages).
   The reading-comprehension release's answers are grounding spans, so the task is extracting the span.

    python bench/rag.py --data-dir DIR            # minutes on 2 CPU cores, subsampled (see the options)
    python bench/rag.py --smoke                   # seconds: shipped fixtures, a tiny random LM, 16 questions

The last line printed is one JSON object:

JSON keys: data, passages, train_questions, dev_questions, test_questions, upr_questions, dense_weight,
reranker_train_s, reranker_first_loss, reranker_last_loss, recall, upr_subset_recall, qps, e2e_questions,
f1_gold_document, f1_retrieved, f1_retrieved_after_rag_training, rag_train_steps, knowledge_f1_retrieved,
gold_passage_given, smoke, skipped
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import json_keys  # noqa: E402

JSON_KEYS = json_keys(__doc__)
PIPELINES = ("bm25", "dense", "hybrid", "hybrid+rerank")


def _half(qid: str) -> int:
    return int(hashlib.md5(qid.rsplit("_", 1)[0].encode()).hexdigest(), 16) % 2


def _fifth(qid: str) -> bool:
    return int(hashlib.md5(("dev" + qid.rsplit("_", 1)[0]).encode()).hexdigest(), 16) % 5 == 0


def load_data(data_dir: Path | None):
    """(documents, passages, queries with answers, description). Queries carry the gold span text as response."""
    from dataclasses import replace

    from groundtune.data import asset_path, load_dialogues, load_documents
    from groundtune.retrieval import document_passages, load_rc_queries, queries_from_dialogues

    if data_dir is None:
        documents = load_documents(asset_path("doc2dial/doc2dial_doc.json"))
        queries = []
        for name in ("doc2dial_dial_train.json", "doc2dial_dial_validation.json"):
            found, _ = queries_from_dialogues(load_dialogues(asset_path(f"doc2dial/{name}")), documents=documents)
            queries += found
        return documents, document_passages(documents, "token"), queries, "shipped doc2dial fixtures"
    documents = load_documents(data_dir)
    jsonl = sorted(data_dir.glob("*.jsonl"))
    if not documents or not jsonl:
        raise SystemExit(f"{data_dir}: expected a doc2dial documents JSON and a question .jsonl file")
    queries = []
    for path in jsonl:
        answers = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    answers[str(row["id"])] = " ".join(row.get("answers", {}).get("text", [""])[:1]).strip()
        queries += [replace(q, response=answers.get(q.qid, "")) for q in load_rc_queries(path)]
    return (documents, document_passages(documents, "token"), queries,
            f"{data_dir.name}: {len(documents)} documents, {len(queries)} questions, 100-word passages")


def _split_query(query: str) -> tuple[str, list[str]]:
    """MultiDoc2Dial query -> (question, history oldest first)."""
    question, _, rest = query.partition("[SEP]")
    return question, [t for t in rest.split("||") if t][::-1]


def gold_document_sample(q, documents, tokenizer, max_tokens: int):
    """The question over its gold document, cut to `max_tokens` around the grounding span."""
    from groundtune.data import Sample
    from groundtune.data.grounded import build_prompt

    doc = documents[q.doc_id]
    text = doc.text
    span = next((doc.span(s) for s in q.span_ids if doc.span(s) is not None), None)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_tokens:
        centre = len(tokenizer(text[: span.start_sp], add_special_tokens=False)["input_ids"]) if span else 0
        lo = max(0, min(centre - max_tokens // 2, len(ids) - max_tokens))
        text = tokenizer.decode(ids[lo : lo + max_tokens])
    question, history = _split_query(q.query)
    return Sample(q.qid, build_prompt(text, history[-2:], question), q.response, q.doc_id, {})


def retrieved_samples(queries, rankings, passages):
    """The question over its top-k passages (no highlight), with what rag_report needs in meta."""
    from groundtune.data import Sample
    from groundtune.data.grounded import build_prompt

    out = []
    for q, ranking in zip(queries, rankings):
        found = [passages[i] for i, _ in ranking]
        question, history = _split_query(q.query)
        spans = set(q.span_ids)
        meta = {"retrieved": [{"doc_id": p.doc_id} for p in found], "passage_texts": [p.text for p in found],
                "gold_retrieved": any(p.doc_id == q.doc_id and spans & set(p.span_ids) for p in found),
                "gold_document_retrieved": any(p.doc_id == q.doc_id for p in found)}
        out.append(Sample(q.qid, build_prompt("\n".join(p.text for p in found), history[-2:], question),
                          q.response, q.doc_id, meta))
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="doc2dial reading-comprehension folder")
    parser.add_argument("--rerank-train", type=int, default=None,
                        help="train-half questions the reranker trains on (default: all but the dev fifth)")
    parser.add_argument("--rerank-epochs", type=int, default=None, help="default: train_reranker's (2)")
    parser.add_argument("--eval-queries", type=int, default=300, help="test questions scored for recall")
    parser.add_argument("--upr-queries", type=int, default=40, help="of those, how many UPR re-ranks (slow on CPU)")
    parser.add_argument("--depth", type=int, default=20, help="candidates the rerankers re-score")
    parser.add_argument("--k", type=int, default=3, help="passages in a RAG prompt")
    parser.add_argument("--e2e-queries", type=int, default=30, help="test questions answered end to end")
    parser.add_argument("--rag-steps", type=int, default=30, help="LLaMA-Adapter steps of RAG training (batch 4)")
    parser.add_argument("--out", type=Path, default=None, help="also write the full report as JSON here")
    parser.add_argument("--smoke", action="store_true", help="seconds: fixtures, a tiny random LM, few questions")
    args = parser.parse_args()

    import torch

    from groundtune.config import DataConfig, GenerationConfig, TrainConfig
    from groundtune.metrics import score
    from groundtune.retrieval import Retriever, build_index, evaluate_rankings
    from groundtune.retrieval.rag import rag_report
    from groundtune.retrieval.late_interaction import DOCUMENT_TOKENS, LateInteractionReranker, new_model
    from groundtune.retrieval.pipelines import reranker as reranker_stage
    from groundtune.retrieval.rerank import mine_examples, train_reranker
    from groundtune.retrieval.upr import UPRReranker
    from groundtune.train import train

    if args.smoke:
        args.data_dir = None
        args.rerank_train, args.eval_queries, args.upr_queries, args.e2e_queries, args.rag_steps = 8, 8, 4, 4, 2
    documents, passages, queries, what = load_data(args.data_dir)
    if args.smoke:  # the fixtures' dialogues are few: a split by turn, not by dialogue
        train_q, test_q = queries[::2], queries[1::2]
    else:
        train_q = [q for q in queries if _half(q.qid) == 0]
        test_q = [q for q in queries if _half(q.qid) == 1]
    dev_q = [q for q in train_q if _fifth(q.qid)] or train_q[:4]
    fit_q = [q for q in train_q if q not in dev_q][: args.rerank_train]  # None: all
    test_q = test_q[: max(args.eval_queries, args.e2e_queries)]
    print(f"[rag] {what}; {len(passages):,} passages; train {len(train_q)} (dev {len(dev_q)}, reranker {len(fit_q)}), "
          f"test {len(test_q)}", flush=True)

    if args.smoke:
        from _smoke import tiny_llama, tiny_tokenizer

        tokenizer = tiny_tokenizer([p.text for p in passages[:50]])
        lm = tiny_llama(vocab_size=len(tokenizer))
    else:
        from groundtune.models import load_model

        lm, tokenizer = load_model()

    result: dict = {"data": what, "passages": len(passages), "train_questions": len(train_q), "dev_questions": len(dev_q),
                    "test_questions": min(len(test_q), args.eval_queries), "smoke": args.smoke,
                    "skipped": {}}  # no peer library: UPR, the reranker and RAG training are all ours
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_index(passages, Path(tmp) / "index", dev_queries=dev_q, show_progress=False)
        retriever = Retriever.load(folder)
        result["dense_weight"] = retriever.dense_weight
        examples, _ = mine_examples(retriever, fit_q, negatives=reranker_stage("late-interaction").defaults["negatives"],
                                    method="default", show_progress=False)
        reranker, result["reranker_train_s"] = timed(lambda: train_reranker(
            examples, Path(tmp) / "reranker", epochs=args.rerank_epochs, batch_size=4 if args.smoke else None,
            max_length=64 if args.smoke else None, show_progress=False))
        info = json.loads((reranker / "groundtune_reranker.json").read_text())
        result["reranker_first_loss"], result["reranker_last_loss"] = info["first_loss"], info["last_loss"]
        retriever = Retriever.load(folder, reranker=reranker)
        retriever.use(UPRReranker(lm, tokenizer))

        recall_q = test_q[: args.eval_queries]
        texts = [q.query for q in recall_q]
        rankings, qps = {}, {}
        for name in PIPELINES:
            ranked, seconds = timed(lambda: retriever.rank_pipelines(texts, 10, [name], rerank_depth=args.depth)[name])
            rankings[name], qps[name] = ranked, len(texts) / seconds
        # what training adds: the same late-interaction model before any step
        untrained = Retriever.load(folder, reranker=LateInteractionReranker(
            new_model(document_tokens=64 if args.smoke else DOCUMENT_TOKENS)))
        name = "hybrid+rerank_untrained"
        ranked, seconds = timed(lambda: untrained.rank_pipelines(texts, 10, ["hybrid+rerank"], rerank_depth=args.depth))
        rankings[name], qps[name] = ranked["hybrid+rerank"], len(texts) / seconds
        upr_q = recall_q[: args.upr_queries]
        ranked, seconds = timed(lambda: retriever.rank_pipelines([q.query for q in upr_q], 10, ["hybrid+upr"],
                                                                 rerank_depth=args.depth)["hybrid+upr"])
        qps["hybrid+upr"] = len(upr_q) / seconds
        recall = {name: evaluate_rankings([[i for i, _ in r] for r in ranked_], recall_q, retriever.passages)
                  for name, ranked_ in rankings.items()}
        # every pipeline on UPR's questions too, so the UPR row has its comparison
        subset = {name: evaluate_rankings([[i for i, _ in r] for r in ranked_[: len(upr_q)]], upr_q, retriever.passages)
                  for name, ranked_ in {**rankings, "hybrid+upr": ranked}.items()}
        result.update(upr_questions=len(upr_q), recall=_passage(recall), upr_subset_recall=_passage(subset),
                      qps={k: round(v, 2) for k, v in qps.items()})
        for name, levels in {**recall, **{f"{k} (UPR subset)": v for k, v in subset.items()}}.items():
            p = levels["passage"]
            print(f"[rag] {name:36s} R@1 {100 * p['recall@1']:5.1f}  R@5 {100 * p['recall@5']:5.1f}  "
                  f"R@10 {100 * p['recall@10']:5.1f}  MRR {100 * p['mrr']:5.1f}  ({p['queries']} q)", flush=True)

        # end to end: the best pipeline without a reranker picks the passages (the index's default)
        pipeline = retriever.default_method
        e2e_q = [q for q in test_q if q.response][: args.e2e_queries]
        rag_train_q = [q for q in train_q if q.response][: 4 * args.rag_steps]
        gen = GenerationConfig(max_new_tokens=8 if args.smoke else 48, batch_size=6)
        max_doc = 64 if args.smoke else 384
        gold = [gold_document_sample(q, documents, tokenizer, max_doc) for q in e2e_q]
        rank = lambda qs: retriever.rank_pipelines([q.query for q in qs], args.k, [pipeline])[pipeline]  # noqa: E731
        retrieved = retrieved_samples(e2e_q, rank(e2e_q), retriever.passages)
        from groundtune.generate import generate

        def answer(model, samples):
            return generate(model, tokenizer, [s.prompt for s in samples], gen, max_prompt_tokens=1024, progress=False)

        preds_gold = answer(lm, gold)
        preds_ret = answer(lm, retrieved)
        rag_train = retrieved_samples(rag_train_q, rank(rag_train_q), retriever.passages)
        cfg = TrainConfig(method={"method": "llama_adapter", "layers": 2 if args.smoke else 30, "length": 10},
                          data=DataConfig(), output_dir=str(Path(tmp) / "rag_run"), lr=1e-2, max_steps=args.rag_steps,
                          batch_size=4, precision="fp32" if args.smoke else "auto", save_every=10_000)
        trained = train(cfg, rag_train, model=lm, tokenizer=tokenizer, progress=False).model
        preds_rag = answer(trained, retrieved)
    lang = "en"
    f1 = lambda preds, samples: score(preds, [s.answer for s in samples], lang=lang, metrics=["F1"]).scores["F1"]  # noqa: E731
    report = rag_report(retrieved, preds_ret, lang=lang, metrics=["F1"])
    result.update(e2e_questions=len(e2e_q), f1_gold_document=round(f1(preds_gold, gold), 2),
                  f1_retrieved=round(f1(preds_ret, retrieved), 2),
                  f1_retrieved_after_rag_training=round(f1(preds_rag, retrieved), 2), rag_train_steps=args.rag_steps,
                  knowledge_f1_retrieved=round(report["grounding"]["knowledge_f1"], 2),
                  gold_passage_given=report["grounding"]["gold_passage_given"])
    print(f"[rag] end to end on {len(e2e_q)} questions ({pipeline}, k={args.k}): F1 gold document "
          f"{result['f1_gold_document']}, retrieved {result['f1_retrieved']}, after {args.rag_steps} steps of RAG "
          f"training {result['f1_retrieved_after_rag_training']}", flush=True)
    del torch
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    missing = set(JSON_KEYS) - set(result)
    assert not missing, missing
    print(json.dumps({k: result[k] for k in JSON_KEYS}, ensure_ascii=False))


def _passage(results: dict) -> dict:
    return {name: {k: round(v, 4) for k, v in levels["passage"].items() if k.startswith(("recall", "mrr"))}
            for name, levels in results.items()}


if __name__ == "__main__":
    main()
