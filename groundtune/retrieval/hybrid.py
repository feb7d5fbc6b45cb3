"""Reciprocal rank fusion (Cormack et al., 2009): score(p) = sum over rankings of 1 / (k + rank of p).

RRF uses ranks only, so BM25 scores (unbounded) and cosines (in [-1, 1]) need no calibration to be fused.
"""

from __future__ import annotations

RRF_K = 60


def reciprocal_rank_fusion(
    rankings: list[list[tuple[int, float]]], *, k: int = RRF_K, top: int | None = None
) -> list[tuple[int, float]]:
    """Fuse rankings of (passage index, score), each best first, into one ranking of (index, RRF score)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (pid, _) in enumerate(ranking, start=1):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / (k + rank)
    # Ties (same ranks in every list) break on the passage index, so results are deterministic.
    out = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return out[:top] if top is not None else out
