"""Retrieval bench: our BM25 (bm25s + Korean-aware tokenizer) against rank_bm25, and recall of each pipeline.

Part 1, speed: a synthetic corpus of Korean and English passages (>= 100k) made from Zipf-distributed
vocabularies, indexed and queried by both libraries with the same tokenizer (Kiwi morphemes for Korean),
tokenisation included in both timings. rank_bm25 scores every passage in Python per query term, so it is
timed on a subset of the queries and its queries/s extrapolated from that subset.

Part 2, quality: recall@1/5/10 and MRR of BM25, dense, hybrid and hybrid + cross-encoder rerank on
dialogues. With --data-dir pointing to a doc2dial reading-comprehension folder (documents JSON + question
JSONL), the questions are split by dialogue: the reranker is trained on one half and every pipeline is
scored on the other. Without it, the shipped doc2dial fixtures are used (train dialogues -> reranker,
validation dialogues -> scores).

    python bench/retrieval.py [--data-dir DIR] [--passages 100000]
    python bench/retrieval.py --smoke   # seconds: 300 passages; 8 fixture questions train, 8 are scored

The last line printed is one JSON object. Without rank_bm25 its figures are null and `skipped` says why.
bench/rag.py adds UPR, the fusion weight chosen on dev questions and end-to-end F1.

JSON keys: passages, queries, rank_bm25_timed_queries, tokenize_s, index_s, rank_bm25_index_s, mmap_load_s, qps,
rank_bm25_qps, qps_ratio_vs_rank_bm25, index_time_ratio_vs_rank_bm25, same_top1_as_rank_bm25, recall_data,
recall_queries, reranker_train_queries, reranker_train_s, recall_eval_s, recall@5_bm25, recall@5_dense,
recall@5_hybrid, recall@5_hybrid+rerank, smoke, skipped
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import json_keys, peer  # noqa: E402
from groundtune.data import asset_path, load_dialogues, load_documents  # noqa: E402
from groundtune.retrieval import (  # noqa: E402
    BM25Index,
    Retriever,
    Tokenizer,
    build_index,
    document_passages,
    evaluate_retriever,
    format_table,
    load_rc_queries,
    queries_from_dialogues,
)
from groundtune.retrieval.rerank import mine_examples, train_reranker  # noqa: E402

JSON_KEYS = json_keys(__doc__)

PARTICLES = ["은", "는", "이", "가", "을", "를", "에", "에서", "의", "로", "와", "과", "도", "만"]
ENDINGS = ["하다", "했다", "합니다", "하는", "해서", "이다", "입니다"]


# ------------------------------------------------------------------------------------------- corpus


def _zipf(rng: np.random.Generator, n_vocab: int, size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_vocab + 1)
    return rng.choice(n_vocab, size=size, p=weights / weights.sum())


def synthetic_corpus(n: int, seed: int = 0) -> list[str]:
    """Half Korean (nouns of random syllables with particles, verbs with endings), half English pseudo-words."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    english = ["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(20000)]
    syllables = [chr(0xAC00 + int(i)) for i in rng.integers(0, 11172, size=1500)]
    nouns = ["".join(rng.choice(syllables, size=rng.integers(2, 4))) for _ in range(8000)]
    texts = []
    for i in range(n):
        length = int(rng.integers(20, 45))
        if i % 2 == 0:
            words = []
            for j, w in enumerate(_zipf(rng, len(nouns), length)):
                tail = ENDINGS[j % len(ENDINGS)] if j % 5 == 4 else PARTICLES[int(rng.integers(len(PARTICLES)))]
                words.append(nouns[w] + tail)
            texts.append(" ".join(words) + ".")
        else:
            texts.append(" ".join(english[w] for w in _zipf(rng, len(english), length)) + ".")
    return texts


def synthetic_queries(texts: list[str], n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice(texts).rstrip(".").split()
        out.append(" ".join(rng.sample(words, min(len(words), rng.randint(3, 6)))))
    return out


def bench_speed(n_passages: int, n_queries: int, n_rank_queries: int, skipped: dict) -> dict:
    rank_bm25 = peer("rank_bm25", skipped)

    texts = synthetic_corpus(n_passages)
    queries = synthetic_queries(texts, n_queries)
    tokenizer = Tokenizer("auto")
    print(f"[speed] {len(texts):,} passages (half Korean), {len(queries):,} queries", flush=True)

    # Both libraries index the same Kiwi / word tokens; cutting them is the same work for both, so it is done
    # once and its time added to each library's indexing time.
    start = time.perf_counter()
    tokens = tokenizer(texts)
    tokenize_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = BM25Index.from_tokens(tokens, tokenizer, show_progress=False)
    ours_index_s = tokenize_s + time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        ours.save(tmp)
        start = time.perf_counter()
        ours = BM25Index.load(tmp, mmap=True)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        ours_results = ours.search(queries, k=10)
        ours_query_s = time.perf_counter() - start
    print(f"[speed] tokenizing the passages (in both index times): {tokenize_s:.1f}s", flush=True)
    print(f"[speed] ours: index {ours_index_s:.1f}s, mmap load {load_s:.2f}s, {len(queries) / ours_query_s:,.0f} queries/s", flush=True)
    ours_qps = len(queries) / ours_query_s
    result = {
        "passages": len(texts),
        "queries": len(queries),
        "rank_bm25_timed_queries": None,
        "tokenize_s": round(tokenize_s, 2),
        "index_s": round(ours_index_s, 2),
        "rank_bm25_index_s": None,
        "mmap_load_s": round(load_s, 3),
        "qps": round(ours_qps, 1),
        "rank_bm25_qps": None,
        "qps_ratio_vs_rank_bm25": None,
        "index_time_ratio_vs_rank_bm25": None,
        "same_top1_as_rank_bm25": None,
    }
    if rank_bm25 is None:
        print("[speed] rank_bm25 is not installed: timing ours only", flush=True)
        return result

    BM25Okapi = rank_bm25.BM25Okapi
    start = time.perf_counter()
    theirs = BM25Okapi(tokens)
    theirs_index_s = tokenize_s + time.perf_counter() - start
    del tokens
    subset = queries[:n_rank_queries]
    start = time.perf_counter()
    theirs_top = []
    for q in subset:
        scores = theirs.get_scores(tokenizer([q])[0])
        top = np.argpartition(-scores, 10)[:10]
        theirs_top.append(top[np.argsort(-scores[top])].tolist())
    theirs_query_s = time.perf_counter() - start
    theirs_qps = len(subset) / theirs_query_s
    same_top1 = sum(bool(o) and o[0][0] == t[0] for o, t in zip(ours_results, theirs_top))
    print(f"[speed] rank_bm25: index {theirs_index_s:.1f}s, {theirs_qps:,.2f} queries/s (timed on {len(subset)} queries); "
          f"same top-1 on {same_top1}/{len(subset)} (bm25s uses Lucene's idf, rank_bm25 Okapi's)", flush=True)
    result.update({
        "rank_bm25_timed_queries": len(subset),
        "rank_bm25_index_s": round(theirs_index_s, 2),
        "rank_bm25_qps": round(theirs_qps, 3),
        "qps_ratio_vs_rank_bm25": round(ours_qps / theirs_qps, 1),
        "index_time_ratio_vs_rank_bm25": round(theirs_index_s / ours_index_s, 2),
        "same_top1_as_rank_bm25": f"{same_top1}/{len(subset)}",
    })
    return result


# ------------------------------------------------------------------------------------------- recall


def _half(qid: str) -> int:
    dialogue = qid.rsplit("_", 1)[0]
    return int(hashlib.md5(dialogue.encode()).hexdigest(), 16) % 2


def dialogue_data(data_dir: Path | None):
    """(passages, train queries, eval queries, description)."""
    if data_dir is not None:
        documents = load_documents(data_dir)
        jsonl = sorted(data_dir.glob("*.jsonl"))
        if not documents or not jsonl:
            raise SystemExit(f"{data_dir}: expected a doc2dial documents JSON and a question .jsonl file")
        queries = [q for f in jsonl for q in load_rc_queries(f)]
        # The reading-comprehension documents have no section ids, so only 100-word windows are possible.
        passages = document_passages(documents, "token")
        train = [q for q in queries if _half(q.qid) == 0]
        test = [q for q in queries if _half(q.qid) == 1]
        return passages, train, test, f"{data_dir.name}: {len(documents)} documents, {len(queries)} questions, token passages"
    documents = load_documents(asset_path("doc2dial/doc2dial_doc.json"))
    train, _ = queries_from_dialogues(load_dialogues(asset_path("doc2dial/doc2dial_dial_train.json")), documents=documents)
    test, _ = queries_from_dialogues(load_dialogues(asset_path("doc2dial/doc2dial_dial_validation.json")), documents=documents)
    passages = document_passages(documents, "structure")
    return passages, train, test, f"shipped fixtures: {len(documents)} documents, structure passages"


def bench_recall(args) -> dict:
    passages, train, test, what = dialogue_data(args.data_dir)
    train, test = train[: args.rerank_train], test[: args.eval_queries]
    print(f"[recall] {what}; {len(passages):,} passages; reranker trained on {len(train)} questions, "
          f"all pipelines scored on {len(test)} held-out questions", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_index(passages, Path(tmp) / "index", show_progress=False)
        index_s = time.perf_counter() - start
        retriever = Retriever.load(Path(tmp) / "index")
        print(f"[recall] BM25 + dense index built in {index_s:.0f}s", flush=True)
        start = time.perf_counter()
        examples, dropped = mine_examples(retriever, train, negatives=args.negatives, show_progress=False)
        # A short CPU run: 128-token pairs.
        reranker_dir = train_reranker(examples, Path(tmp) / "reranker", epochs=args.epochs, lr=args.lr,
                                      max_length=args.max_length, show_progress=not args.quiet)
        train_s = time.perf_counter() - start
        info = json.loads((reranker_dir / "groundtune_reranker.json").read_text())
        print(f"[recall] reranker: {info['pairs']} pairs, loss {info['first_loss']:.3f} -> {info['last_loss']:.3f}, "
              f"{train_s:.0f}s (dropped {dropped})", flush=True)
        retriever = Retriever.load(Path(tmp) / "index", reranker=reranker_dir)
        start = time.perf_counter()
        results = evaluate_retriever(retriever, test, ["bm25", "dense", "hybrid", "hybrid+rerank"],
                                     rerank_depth=args.rerank_depth, show_progress=not args.quiet)
        eval_s = time.perf_counter() - start
    print(format_table(results), flush=True)
    return {
        "recall_data": what,
        "recall_queries": len(test),
        "reranker_train_queries": len(examples),
        "reranker_train_s": round(train_s, 1),
        "recall_eval_s": round(eval_s, 1),
        "results": results,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="doc2dial reading-comprehension folder (documents JSON + question JSONL)")
    parser.add_argument("--passages", type=int, default=100_000, help="synthetic passages for the speed part")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic queries for our BM25")
    parser.add_argument("--rank-bm25-queries", type=int, default=20, help="of those, how many rank_bm25 is timed on")
    parser.add_argument("--rerank-train", type=int, default=300, help="at most this many questions train the reranker")
    parser.add_argument("--eval-queries", type=int, default=300, help="at most this many held-out questions are scored")
    parser.add_argument("--negatives", type=int, default=3, help="BM25 hard negatives per training question")
    parser.add_argument("--epochs", type=int, default=1, help="reranker training epochs")
    parser.add_argument("--lr", type=float, default=1e-4, help="reranker peak learning rate")
    parser.add_argument("--max-length", type=int, default=256, help="reranker tokens per (query, passage) pair")
    parser.add_argument("--rerank-depth", type=int, default=10, help="hybrid candidates the reranker re-scores")
    parser.add_argument("--out", type=Path, default=None, help="also write the full report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: tiny corpus, a few fixture questions")
    args = parser.parse_args()
    if args.smoke:
        args.data_dir = None  # the shipped fixtures
        args.passages, args.queries, args.rank_bm25_queries = 300, 20, 5
        args.rerank_train, args.eval_queries, args.negatives, args.max_length = 8, 8, 2, 64
        args.quiet = True

    skipped: dict[str, str] = {}
    speed = bench_speed(args.passages, args.queries, args.rank_bm25_queries, skipped)
    recall = bench_recall(args)
    summary = {**speed, **{k: v for k, v in recall.items() if k != "results"}}
    for name, levels in recall["results"].items():
        summary[f"recall@5_{name}"] = round(levels["passage"]["recall@5"], 4)
    summary.update({"smoke": args.smoke, "skipped": skipped})
    if args.out:
        args.out.write_text(json.dumps({**summary, "results": recall["results"]}, indent=2, ensure_ascii=False) + "\n")
    missing = set(JSON_KEYS) - set(summary)
    if missing:
        raise SystemExit(f"bench/retrieval.py: the summary lacks {sorted(missing)}")
    print(json.dumps({k: summary[k] for k in JSON_KEYS}, ensure_ascii=False))


if __name__ == "__main__":
    main()
