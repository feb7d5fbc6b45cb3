"""Prompt tuning (Lester et al., 2021): m trained vectors put before the text (see _prompt_embedding)."""

from __future__ import annotations

from dataclasses import dataclass

from groundtune.methods import register
from groundtune.ranges import COUNT, ranged
from groundtune.methods._prompt_embedding import (
    DenseTable, PromptTransform, check_prompt, initial_prompt, prompt_method)


@dataclass
class PromptTuningConfig:
    """length: prompt vectors m. init: "vocab" (embeddings of tokens sampled uniformly from the vocabulary),
    "text" (embeddings of init_text's tokens, repeated to m) or "random" (normal, with the embedding table's
    mean and std). tokenizer: for init="text", a tokenizer folder or hub id; default the model's own folder."""

    method = "prompt_tuning"
    length: int = ranged(20, COUNT)
    init: str = "vocab"
    init_text: str | None = None
    tokenizer: str | None = None

    def __post_init__(self):
        check_prompt(self)


def build(model, config: PromptTuningConfig) -> PromptTransform:
    return PromptTransform(DenseTable(initial_prompt(model, config)), None)


register(prompt_method(PromptTuningConfig, build, describe=lambda config: {"layer": "input", "length": config.length},
                       parameter_count=lambda config, hidden: config.length * hidden))
