"""ACCEPT (Lin et al., 2024): prompt and added part from product-quantised codebooks, SCPP and SCAP
(see _prompt_embedding for the transform, CodebookTable for the construction)."""

from __future__ import annotations

from dataclasses import dataclass

from groundtune.methods import register
from groundtune.ranges import COUNT, NONNEG, POSITIVE, ranged
from groundtune.methods._prompt_embedding import (
    CodebookTable, LowRankTable, PromptTransform, hidden_size, prompt_method)
from groundtune.errors import ConfigError


@dataclass
class AcceptConfig:
    """ACCEPT. SCPP: `length` prompt vectors from `subspaces` (K) codebooks of `codewords` (r) each. The added
    part over the first max_length positions: SCAP (scap=True) from scap_subspaces × scap_codewords, else DePT's
    A·B of `rank` (rank=0: none). Subspace counts must divide hidden; None picks the paper's sub-vector sizes:
    t = 32 for SCPP and 256 for SCAP (the largest divisor of hidden at or below hidden/t). update_lr: learning
    rate of the added part (None: the run's lr); the paper trains the prompt near 0.3 and the added part near 1e-3.
    """

    method = "accept"
    length: int = ranged(60, COUNT)
    subspaces: int | None = ranged(None, COUNT)
    codewords: int = ranged(20, COUNT)
    scap: bool = True
    scap_subspaces: int | None = ranged(None, COUNT)
    scap_codewords: int = ranged(30, COUNT)
    max_length: int = ranged(256, COUNT)
    rank: int = ranged(0, NONNEG)
    update_lr: float | None = ranged(None, POSITIVE)

    def __post_init__(self):
        if self.length < 1 or self.codewords < 1 or self.max_length < 1:
            raise ConfigError(f"AcceptConfig: length, codewords and max_length must be >= 1 ({self})")
        if self.scap and self.scap_codewords < 1:
            raise ConfigError(f"AcceptConfig: scap_codewords must be >= 1, got {self.scap_codewords}")
        if self.rank < 0:
            raise ConfigError(f"AcceptConfig: rank must be >= 0, got {self.rank}")


def default_subspaces(hidden: int, sub_dim: int) -> int:
    """The largest divisor of hidden at or below hidden / sub_dim (at least 1)."""
    k = max(1, hidden // sub_dim)
    while hidden % k:
        k -= 1
    return k

def build(model, config: AcceptConfig) -> PromptTransform:
    hidden = hidden_size(model)
    prompt = CodebookTable(config.length, config.subspaces or default_subspaces(hidden, 32), config.codewords, hidden)
    if config.scap:
        # Zero codebook: the added part starts at zero, as DePT's B does. The paper's code draws it at random
        # too and leaves zero init as a commented-out option; a random start perturbs every input embedding.
        update = CodebookTable(config.max_length, config.scap_subspaces or default_subspaces(hidden, 256),
                               config.scap_codewords, hidden, zero_codebook=True)
    else:
        update = LowRankTable(config.max_length, config.rank, hidden) if config.rank else None
    return PromptTransform(prompt, update)


def parameter_count(config: AcceptConfig, hidden: int) -> int:
    """What build() allocates: n·K·r + K·r·(hidden/K) per codebook table, n·rank + rank·hidden for A·B."""
    def codebook(n: int, subspaces: int | None, codewords: int, sub_dim: int) -> int:
        k = subspaces or default_subspaces(hidden, sub_dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"AcceptConfig: subspace counts must be whole numbers >= 1, got {k!r}")
        return n * k * codewords + k * codewords * (hidden // k)

    prompt = codebook(config.length, config.subspaces, config.codewords, 32)
    if config.scap:
        update = codebook(config.max_length, config.scap_subspaces, config.scap_codewords, 256)
    else:
        update = config.rank * (config.max_length + hidden)
    return prompt + update


register(prompt_method(AcceptConfig, build, describe=lambda config: {"layer": "input", "length": config.length},
                       parameter_count=parameter_count))
