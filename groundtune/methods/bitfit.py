"""BitFit (Ben Zaken et al., 2022): train only the bias terms of the frozen model.

Every bias is trained: attention, feed-forward and layer-norm biases, as in the paper. Families without biases
have nothing to train: Llama, Mistral and Gemma have none at all (attach raises), Qwen2 has them on the query,
key and value projections only (BitFit trains those), GPT-2 and GPT-NeoX have them everywhere.

BitFit changes base parameters in place, so attach keeps a copy of their values and detach puts them back:
a detached model is the base model again, and adapters can be swapped on one loaded base. The same helpers let
the prompt methods train an encoder's task head (the `classifier` / `score` layer) alongside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Layer names of the task heads transformers puts on sequence classifiers (peft's modules_to_save for SEQ_CLS).
HEAD_NAMES = ("classifier", "score")
_ORIGINALS = "_groundtune_originals"


@dataclass
class BitFitConfig:
    """No options: every bias term trains, plus the task head of a sequence classifier."""

    method = "bitfit"


def is_head(name: str) -> bool:
    """Whether a parameter name belongs to a sequence classifier's task head."""
    return any(part in HEAD_NAMES for part in name.split("."))


def task_head(model) -> list[str]:
    """Names of the task-head parameters (empty for causal LMs)."""
    return [name for name, _ in model.named_parameters() if is_head(name)]


def train_in_place(model, names: list[str]) -> None:
    """Unfreeze these base parameters, keeping their values so that `restore_in_place` can put them back."""
    params = dict(model.named_parameters())
    originals = getattr(model, _ORIGINALS, {})
    with torch.no_grad():
        for name in names:
            originals.setdefault(name, params[name].detach().clone())
            params[name].requires_grad_(True)
    setattr(model, _ORIGINALS, originals)


def restore_in_place(model) -> None:
    """Give the parameters trained in place their original values back, frozen."""
    originals = getattr(model, _ORIGINALS, None)
    if originals is None:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in originals.items():
            params[name].copy_(value)
            params[name].requires_grad_(False)
    delattr(model, _ORIGINALS)


def attach(model, config: BitFitConfig):
    head = set(task_head(model))
    biases = [name for name, _ in model.named_parameters() if name.endswith("bias") and name not in head]
    if not biases:
        raise ValueError(
            f"{type(model).__name__} ({model.config.model_type}) has no bias terms, so BitFit has nothing to train "
            "(Llama, Mistral and Gemma models have none). Use lora, llama_adapter or a prompt method instead."
        )
    train_in_place(model, biases + sorted(head))
    return model


def detach(model):
    restore_in_place(model)
    return model
