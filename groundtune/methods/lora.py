"""LoRA through peft: a thin layer that picks each family's attention projections and keeps peft's format.

Folders saved from here load in plain peft (`PeftModel.from_pretrained`), and `merge_and_unload` folds the
update into the weights so inference has no overhead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from groundtune.arch import attention_layers

# Projection names per layout: separate q/k/v/o, GPT-NeoX's fused qkv + dense, GPT-2's fused c_attn + c_proj.
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "dense", "c_attn", "c_proj")


@dataclass
class LoraConfig:
    """r, alpha: rank and scale (the seed paper's r=1, alpha=1); target_modules: peft's option, by default
    the query, key, value and output projections of the model's attention, whatever the family."""

    method = "lora"
    r: int = 1
    alpha: int = 1
    dropout: float = 0.0
    target_modules: list[str] | str | None = field(default=None)


def attention_targets(model) -> str:
    """A regex over module names matching the attention projections, e.g. `.*\\.self_attn\\.(q_proj|...)`."""
    spec = attention_layers(model)[0]
    name = next(n for n, m in model.named_modules() if m is spec.module).rsplit(".", 1)[-1]
    projections = [p for p in _PROJECTIONS if hasattr(spec.module, p)]
    return rf".*\.{re.escape(name)}\.({'|'.join(projections)})"


def peft_config(model, config: LoraConfig):
    import peft

    return peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules or attention_targets(model),
        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
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
