"""Recall@k and MRR of a retriever on queries with known grounding, at passage and at document level.

A retrieved passage is relevant (passage level) when it covers one of the query's gold spans, and
(document level) when it comes from the gold document. Recall@k is the share of queries with a relevant
passage in the top k; MRR the mean of 1 / rank of the first relevant one (0 when none is retrieved).
Queries without gold spans count at document level only.
"""

from __future__ import annotations

from typing import Sequence

from groundtune.retrieval.passages import Passage
from groundtune.retrieval.queries import RetrievalQuery
from groundtune.errors import GroundtuneError

KS = (1, 5, 10)


def passages_by_doc(passages: Sequence[Passage]) -> dict[str, list[int]]:
    by_doc: dict[str, list[int]] = {}
    for i, p in enumerate(passages):
        by_doc.setdefault(p.doc_id, []).append(i)
    return by_doc


def gold_passages(query: RetrievalQuery, passages: Sequence[Passage], by_doc: dict[str, list[int]] | None = None) -> list[int]:
    """Ids of the passages covering one of the query's gold spans, in document order."""
    by_doc = passages_by_doc(passages) if by_doc is None else by_doc
    spans = set(query.span_ids)
    return [i for i in by_doc.get(query.doc_id, []) if spans.intersection(passages[i].span_ids)]


def first_relevant_rank(ranking: Sequence[int], relevant) -> int | None:
    for rank, pid in enumerate(ranking, start=1):
        if relevant(pid):
            return rank
    return None


def retrieval_metrics(ranks: list[int | None], ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k for each k and MRR from the rank of the first relevant passage per query (None = missed)."""
    n = len(ranks)
    if n == 0:
        return {**{f"recall@{k}": float("nan") for k in ks}, "mrr": float("nan"), "queries": 0}
    out = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / n for k in ks}
    out["mrr"] = sum(1.0 / r for r in ranks if r is not None) / n
    out["queries"] = n
    return out


def evaluate_rankings(
    rankings: list[list[int]], queries: Sequence[RetrievalQuery], passages: Sequence[Passage], ks: Sequence[int] = KS
) -> dict[str, dict[str, float]]:
    """{"passage": metrics, "document": metrics} for `rankings` (passage indices, best first, one per query)."""
    if len(rankings) != len(queries):
        raise GroundtuneError(f"{len(rankings)} rankings for {len(queries)} queries")
    by_doc = passages_by_doc(passages)
    passage_ranks, document_ranks, no_gold_span = [], [], 0
    for ranking, query in zip(rankings, queries):
        document_ranks.append(first_relevant_rank(ranking, lambda pid: passages[pid].doc_id == query.doc_id))
        gold = set(gold_passages(query, passages, by_doc))
        if gold:
            passage_ranks.append(first_relevant_rank(ranking, gold.__contains__))
        else:
            no_gold_span += 1
    result = {"passage": retrieval_metrics(passage_ranks, ks), "document": retrieval_metrics(document_ranks, ks)}
    result["passage"]["no_gold_passage"] = no_gold_span
    return result


def format_table(results: dict[str, dict[str, dict[str, float]]], ks: Sequence[int] = KS) -> str:
    """Plain-text table: one row per (pipeline, level), columns recall@k and MRR in percent."""
    header = ["pipeline", "level", *[f"R@{k}" for k in ks], "MRR", "queries"]
    rows = [header]
    for name, levels in results.items():
        for level in ("passage", "document"):
            m = levels[level]
            rows.append(
                [name, level, *[f"{100 * m[f'recall@{k}']:.1f}" for k in ks], f"{100 * m['mrr']:.1f}", str(m["queries"])]
            )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def evaluate_retriever(
    retriever, queries: Sequence[RetrievalQuery], pipelines: Sequence[str] = ("bm25",), *,
    ks: Sequence[int] = KS, rerank_depth: int = 20, batch_size: int = 64, show_progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """{pipeline: {"passage": metrics, "document": metrics}} for a `Retriever` on `queries`.

    pipelines: e.g. ("bm25", "dense", "hybrid", "hybrid+rerank"); each index is searched once for all.
    """
    from tqdm.auto import tqdm

    rankings: dict[str, list[list[int]]] = {name: [] for name in pipelines}
    for start in tqdm(range(0, len(queries), batch_size), desc="retrieve", unit="batch", disable=not show_progress):
        batch = [q.query for q in queries[start : start + batch_size]]
        for name, ranked in retriever.rank_pipelines(batch, max(ks), pipelines, rerank_depth=rerank_depth).items():
            rankings[name] += [[pid for pid, _ in r] for r in ranked]
    return {name: evaluate_rankings(r, queries, retriever.passages, ks) for name, r in rankings.items()}


def evaluate_question_files(retriever, files, pipelines: Sequence[str] | None = None, limit: int | None = None):
    """Score `retriever` on the questions in `files` (dialogues or question .jsonl). Returns (drop report,
    number of questions scored, {pipeline: metrics}).

    A question grounded in a document the index does not hold cannot be scored: it is dropped and counted,
    not counted as a miss. Default pipelines: every first stage the index has the parts for (BM25; dense and
    hybrid when it has vectors), plus the default one re-ranked when a reranker is loaded.
    """
    from groundtune.errors import DataError
    from groundtune.retrieval.queries import load_queries

    queries, report = load_queries(files)
    indexed = {p.doc_id for p in retriever.passages}
    scorable = []
    for q in queries:
        if q.doc_id in indexed:
            scorable.append(q)
        else:
            report.kept -= 1
            report.drop("document not in the index", f"{q.qid} ({q.doc_id})")
    queries = scorable[:limit] if limit else scorable
    if not queries:
        raise DataError(f"no query with a gold grounding in this index to score; {report}")
    if not pipelines:
        pipelines = retriever.runnable_stages()
        if retriever.reranker is not None:
            pipelines.append(f"{retriever.default_method}+rerank")
    return report, len(queries), evaluate_retriever(retriever, queries, list(pipelines))
