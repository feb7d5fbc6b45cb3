"""DePT (Shi & Lipani, 2024): a shorter prompt plus a low-rank update A·B of the first max_length input embeddings,
trained at two learning rates (see _prompt_embedding)."""

from __future__ import annotations

from dataclasses import dataclass

from groundtune.methods import register
from groundtune.ranges import COUNT, NONNEG, POSITIVE, ranged
from groundtune.methods._prompt_embedding import (
    DenseTable, LowRankTable, PromptTransform, check_prompt, hidden_size, initial_prompt, prompt_method)
from groundtune.errors import ConfigError


@dataclass
class DeptConfig:
    """DePT: a prompt of `length` vectors plus A [max_length, rank] · B [rank, hidden] added to the embeddings of
    the first max_length text positions. update_lr: learning rate of A and B (None: the run's lr)."""

    method = "dept"
    length: int = ranged(60, COUNT)
    rank: int = ranged(30, NONNEG)
    max_length: int = ranged(256, COUNT)
    init: str = "vocab"
    init_text: str | None = None
    tokenizer: str | None = None
    update_lr: float | None = ranged(None, POSITIVE)

    def __post_init__(self):
        check_prompt(self)
        if self.rank < 1 or self.max_length < 1:
            raise ConfigError(f"DeptConfig: rank and max_length must be >= 1 (got {self.rank}, {self.max_length})")


def build(model, config: DeptConfig) -> PromptTransform:
    return PromptTransform(DenseTable(initial_prompt(model, config)),
                           LowRankTable(config.max_length, config.rank, hidden_size(model)))


def parameter_count(config: DeptConfig, hidden: int) -> int:
    return config.length * hidden + config.rank * (config.max_length + hidden)


register(prompt_method(DeptConfig, build, describe=lambda config: {"layer": "input", "length": f"{config.length} + rank {config.rank}"},
                       parameter_count=parameter_count))
