"""Parameter-efficient methods. Each lives in one file with a Config dataclass and an attach().

The contract every method module follows (peft's tuners are the model):
- a dataclass config with a class attribute ``method`` (the name written into adapter folders)
  and plain JSON-able fields;
- ``attach(model, config) -> model``: freeze nothing itself (``attach`` here freezes the base first),
  add the trainable parts, return the model to use (the same object, or a wrapper such as peft's);
- ``detach(model) -> model``: remove what attach added and return the bare base model;
- optionally ``optimizer_groups(model, config, lr) -> list[dict]`` when parts train at different rates.
"""

from __future__ import annotations

import dataclasses
from importlib import import_module
from typing import Any

import torch

# method name -> (module, config class name)
METHODS: dict[str, tuple[str, str]] = {
    "llama_adapter": ("groundtune.methods.llama_adapter", "LlamaAdapterConfig"),
    "lora": ("groundtune.methods.lora", "LoraConfig"),
    "prompt_tuning": ("groundtune.methods.prompts", "PromptTuningConfig"),
    "dept": ("groundtune.methods.prompts", "DeptConfig"),
    "accept": ("groundtune.methods.prompts", "AcceptConfig"),
    "bitfit": ("groundtune.methods.bitfit", "BitFitConfig"),
}

_ATTR = "groundtune_method"  # the attached config is kept on the model under this name


def _module(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return import_module(METHODS[method][0])


def config_class(method: str) -> type:
    return getattr(_module(method), METHODS[method][1])


def config_from_dict(d: dict[str, Any]):
    """Build a method config from a dict such as a YAML block: {method: lora, r: 8, ...}."""
    d = dict(d)
    method = d.pop("method", None)
    if method is None:
        raise ValueError(f"method config {d} has no 'method' key; add one of {', '.join(METHODS)}")
    cls = config_class(method)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{method}: unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


def config_to_dict(config) -> dict[str, Any]:
    return {"method": config.method, **dataclasses.asdict(config)}


def attached_config(model):
    """The config of the method attached to `model`, or None for a bare model."""
    return getattr(model, _ATTR, None)


def attach(model, config):
    """Freeze `model` and attach the method described by `config`. Returns the model to train."""
    if attached_config(model) is not None:
        raise ValueError(
            f"a {attached_config(model).method} adapter is already attached; call groundtune.detach(model) first"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    model = _module(config.method).attach(model, config)
    setattr(model, _ATTR, config)
    return model


def detach(model):
    """Remove the attached method; returns the bare base model (weights untouched)."""
    config = attached_config(model)
    if config is None:
        return model
    base = _module(config.method).detach(model)
    if hasattr(base, _ATTR):
        delattr(base, _ATTR)
    if hasattr(model, _ATTR):
        delattr(model, _ATTR)
    return base


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    """Exactly the parameters that train: what an adapter file holds."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_trainable(model) -> int:
    return sum(p.numel() for p in trainable_state_dict(model).values())


def optimizer_groups(model, lr: float) -> list[dict]:
    """Parameter groups for the optimizer; a method may ask for several learning rates."""
    config = attached_config(model)
    module = _module(config.method) if config is not None else None
    if module is not None and hasattr(module, "optimizer_groups"):
        return module.optimizer_groups(model, config, lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
