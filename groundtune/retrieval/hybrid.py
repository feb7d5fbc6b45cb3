"""Reciprocal rank fusion (Cormack et al., 2009): score(p) = sum over rankings of w / (k + rank of p).

RRF uses ranks only, so BM25 scores (unbounded) and cosines (in [-1, 1]) need no calibration to be fused.
Plain RRF weights both retrievers equally, so a retriever that knows nothing about the corpus (an English
encoder on Korean text) drags a good one down; `weighted_fusion` gives the dense ranking weight `w` and
BM25 1 - w, with w = 0 and w = 1 returning BM25's and the dense ranking unchanged. `tune_dense_weight`
picks w on questions with known grounding, so the fused default is never worse than its best part there.
"""

from __future__ import annotations

from typing import Sequence

from groundtune.retrieval.pipelines import FUSION_DEPTH, FirstStage, first_stages, register_first_stage
from groundtune.errors import GroundtuneError

RRF_K = 60
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0


def reciprocal_rank_fusion(
    rankings: list[list[tuple[int, float]]], *, k: int = RRF_K, top: int | None = None,
    weights: Sequence[float] | None = None,
) -> list[tuple[int, float]]:
    """Fuse rankings of (passage index, score), each best first, into one ranking of (index, RRF score)."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise GroundtuneError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        if weight <= 0:
            continue
        for rank, (pid, _) in enumerate(ranking, start=1):
            fused[pid] = fused.get(pid, 0.0) + weight / (k + rank)
    # Ties (same ranks in every list) break on the passage index, so results are deterministic.
    out = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return out[:top] if top is not None else out


def weighted_fusion(
    bm25: list[tuple[int, float]], dense: list[tuple[int, float]], dense_weight: float, *, k: int = RRF_K
) -> list[tuple[int, float]]:
    """BM25 and dense rankings fused by RRF with weights (1 - dense_weight, dense_weight).

    At the ends the other ranking is not consulted at all: 0 is BM25's ranking, 1 the dense one."""
    if not 0.0 <= dense_weight <= 1.0:
        raise GroundtuneError(f"dense_weight must be in [0, 1], got {dense_weight}")
    if dense_weight == 0.0:
        return list(bm25)
    if dense_weight == 1.0:
        return list(dense)
    # scaled by 2 so that 0.5 is plain RRF, scores included
    return reciprocal_rank_fusion([bm25, dense], k=k, weights=[2 * (1.0 - dense_weight), 2 * dense_weight])


def tune_dense_weight(
    bm25: list[list[tuple[int, float]]], dense: list[list[tuple[int, float]]], relevant: list[set[int]],
    grid: Sequence[float] = WEIGHT_GRID, *, k: int = RRF_K,
) -> tuple[float, dict[float, float]]:
    """The dense weight with the best mean of recall@1, recall@5 and MRR on queries whose relevant passage
    ids are `relevant` (queries without any are skipped); ties go to the weight nearest 0.5 (plain RRF), then
    to the smaller one. Returns (weight, {weight: objective})."""
    todo = [i for i, rel in enumerate(relevant) if rel]
    if not todo:
        raise GroundtuneError("tune_dense_weight: no query has a relevant passage")
    scores = {}
    for w in grid:
        total = 0.0
        for i in todo:
            ranking = weighted_fusion(bm25[i], dense[i], w, k=k)
            rank = next((r for r, (pid, _) in enumerate(ranking, start=1) if pid in relevant[i]), None)
            if rank is not None:
                total += ((rank <= 1) + (rank <= 5) + 1.0 / rank) / 3
        scores[w] = total / len(todo)
    best = max(grid, key=lambda w: (round(scores[w], 9), -abs(w - 0.5), -w))
    return best, scores


def _rank(retriever, queries: list[str], depth: int, inputs: dict) -> list[list[tuple[int, float]]]:
    return [weighted_fusion(b, d, retriever.dense_weight) for b, d in zip(inputs["bm25"], inputs["dense"])]


def _languages(meta: dict):
    """What BM25 ranks, less what the encoder does not cover unless the fusion gives it no weight."""
    stages = first_stages()
    bm25, dense = stages["bm25"].languages(meta), stages["dense"].languages(meta)
    if not dense or meta.get("fusion", {}).get("dense_weight") == 0.0 or "multilingual" in dense:
        return bm25
    return [x for x in bm25 if x in dense] if bm25 else dense


register_first_stage(FirstStage("hybrid", _rank, combines=("bm25", "dense"), candidates=FUSION_DEPTH,
                                languages=_languages))
