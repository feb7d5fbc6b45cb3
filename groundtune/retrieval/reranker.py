"""The reranker interface: re-order the top of each ranking by a score of (query, passage) pairs.

A module of its own so that each reranker (rerank.py's cross-encoder, late_interaction.py, upr.py) builds on it
without importing the others; `rerank.load_reranker`, above them all, picks the one a folder holds.
"""

from __future__ import annotations

from typing import Sequence

from groundtune.retrieval.passages import Passage


class Reranker:
    """Re-order the top of each ranking by `score` of (query, passage) pairs; subclasses say how to score."""

    kind = "reranker"

    def query_text(self, query: str) -> str:
        """What the scorer reads of a MultiDoc2Dial query (default: all of it)."""
        return query

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        raise NotImplementedError

    def rerank(
        self, queries: Sequence[str], ranked: list[list[tuple[int, float]]], passages: Sequence[Passage], *, depth: int = 20
    ) -> list[list[tuple[int, float]]]:
        """Re-order the top `depth` of each ranking by score (the rest keep their order after)."""
        queries = [self.query_text(q) for q in queries]
        pairs = [(q, passages[pid].text) for q, r in zip(queries, ranked) for pid, _ in r[:depth]]
        scores = iter(self.score(pairs))  # one call for all queries: batches stay full
        out = []
        for r in ranked:
            head = sorted(((pid, next(scores)) for pid, _ in r[:depth]), key=lambda x: -x[1])
            out.append(head + list(r[depth:]))
        return out
