"""Training base parameters in place, and putting them back: shared by BitFit, full fine-tuning and the prompt
methods (which train an encoder's task head alongside).

attach keeps a copy of each such parameter's value and detach restores it, so a detached model is the base
model again and adapters can be swapped on one loaded base.
"""

from __future__ import annotations

import torch

# Layer names of the task heads transformers puts on sequence classifiers (peft's modules_to_save for SEQ_CLS).
HEAD_NAMES = ("classifier", "score")
_ORIGINALS = "_groundtune_originals"


def is_head(name: str) -> bool:
    """Whether a parameter name belongs to a sequence classifier's task head."""
    return any(part in HEAD_NAMES for part in name.split("."))


def task_head(model) -> list[str]:
    """Names of the task-head parameters (empty for causal LMs)."""
    return [name for name, _ in model.named_parameters() if is_head(name)]


def head_parameters(model) -> int:
    """How many parameters the task head holds (0 for causal LMs): they train alongside a method."""
    return sum(p.numel() for name, p in model.named_parameters() if is_head(name))


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
