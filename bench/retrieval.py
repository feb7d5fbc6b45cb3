"""Retrieval bench: our BM25 (bm25s + Korean-aware tokenizer) against rank_bm25, and recall of each pipeline.

Part 1, speed: a synthetic corpus of Korean and English passages (>= 100k) made from Zipf-distributed
vocabularies, indexed and queried by both libraries with the same tokenizer (Kiwi morphemes for Korean),
tokenisation included in both timings. rank_bm25 scores every passage in Python per query term, so it is
timed on a subset of the queries and its queries/s extrapolated from that subset.

Recall of every pipeline (BM25, dense, hybrid, + reranker, + UPR) on held-out doc2dial questions, and what
retrieval does to the answers, is bench/rag.py.

    python bench/retrieval.py [--passages 100000]
    python bench/retrieval.py --smoke   # seconds: 300 passages

The last line printed is one JSON object. Without rank_bm25 its figures are null and `skipped` says why.

JSON keys: passages, queries, rank_bm25_timed_queries, tokenize_s, index_s, rank_bm25_index_s, mmap_load_s, qps,
rank_bm25_qps, qps_ratio_vs_rank_bm25, index_time_ratio_vs_rank_bm25, same_top1_as_rank_bm25, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import json_keys, peer  # noqa: E402
from groundtune.retrieval import BM25Index, Tokenizer  # noqa: E402

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=100_000, help="synthetic passages for the speed part")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic queries for our BM25")
    parser.add_argument("--rank-bm25-queries", type=int, default=20, help="of those, how many rank_bm25 is timed on")
    parser.add_argument("--out", type=Path, default=None, help="also write the full report as JSON here")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: tiny corpus, a few fixture questions")
    args = parser.parse_args()
    if args.smoke:
        args.passages, args.queries, args.rank_bm25_queries = 300, 20, 5

    skipped: dict[str, str] = {}
    speed = bench_speed(args.passages, args.queries, args.rank_bm25_queries, skipped)
    summary = {**speed, "smoke": args.smoke, "skipped": skipped}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    missing = set(JSON_KEYS) - set(summary)
    if missing:
        raise SystemExit(f"bench/retrieval.py: the summary lacks {sorted(missing)}")
    print(json.dumps({k: summary[k] for k in JSON_KEYS}, ensure_ascii=False))


if __name__ == "__main__":
    main()
