"""The order examples are trained in: a shuffle per epoch, optionally grouped by length.

A sampler concern, apart from collation: which examples share a batch decides how much of a left-padded batch is
padding, and the order depends only on (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import torch


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) from a fresh generator per epoch: it depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n, generator=g).tolist()


def batches(lengths: list[int], size: int, seed: int, epoch: int, group_by_length: bool = False) -> list[list[int]]:
    """The epoch's batches of example indices. Grouped by length (transformers' group_by_length scheme): the
    shuffled order is cut into windows of 50 batches, each sorted by length, so a batch holds examples of similar
    length and little padding; the batches are then shuffled, so that training does not run from the longest
    examples to the shortest."""
    order = epoch_order(len(lengths), seed, epoch)
    if not group_by_length:
        return [order[i:i + size] for i in range(0, len(order), size)]
    window = 50 * size
    grouped = []
    for i in range(0, len(order), window):
        chunk = sorted(order[i:i + window], key=lambda j: -lengths[j])
        grouped += [chunk[k:k + size] for k in range(0, len(chunk), size)]
    g = torch.Generator().manual_seed(seed * 1000 + epoch + 1)
    return [grouped[k] for k in torch.randperm(len(grouped), generator=g).tolist()]
