"""LoRA through peft: a thin layer that picks each family's attention projections and keeps peft's format.

Folders saved from here load in plain peft (`PeftModel.from_pretrained`), and `merge_and_unload` folds the
update into the weights so inference has no overhead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from groundtune import arch


@dataclass
class LoraConfig:
    """r, alpha: rank and scale (the seed paper's r=1, alpha=1); target_modules: peft's option, by default
    the query, key, value and output projections of the model's attention, whatever the family (the families
    in groundtune.arch.FAMILIES; other models need target_modules)."""

    method = "lora"
    r: int = 1
    alpha: int = 1
    dropout: float = 0.0
    target_modules: list[str] | str | None = field(default=None)


def attention_targets(model) -> str:
    """A regex over module names matching the attention projections, e.g. `.*\\.self_attn\\.(q_proj|...)`.

    Raises ValueError for a family outside groundtune.arch.FAMILIES: give LoraConfig(target_modules=...) there."""
    try:
        spec = arch.attention_layers(model, "LoRA's default target_modules")[0]
    except ValueError as err:
        raise ValueError(f"{err}. Name the modules to adapt: LoraConfig(target_modules=[...])") from None
    name = next(n for n, m in model.named_modules() if m is spec.module).rsplit(".", 1)[-1]
    return rf".*\.{re.escape(name)}\.({'|'.join(spec.family.projections)})"


def peft_config(model, config: LoraConfig):
    import peft

    row = arch.lookup(model)
    return peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules or attention_targets(model),
        fan_in_fan_out=bool(row is not None and row.conv1d),  # GPT-2's Conv1D stores weights transposed
        task_type=_task_type(model),
    )


def _task_type(model) -> str | None:
    # SEQ_CLS makes peft train and save the classification head alongside.
    if type(model).__name__.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    return "CAUSAL_LM" if model.can_generate() else None


def attach(model, config: LoraConfig):
    import peft

    return peft.get_peft_model(model, peft_config(model, config))


def detach(model):
    return model.unload() if hasattr(model, "unload") else model


def merge_and_unload(model):
    """Fold LoRA into the base weights: the returned plain model runs at base speed."""
    from groundtune.methods import _ATTR

    merged = model.merge_and_unload()
    if hasattr(merged, _ATTR):
        delattr(merged, _ATTR)
    return merged
