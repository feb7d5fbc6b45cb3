"""Adapter folders in peft's layout: adapter_config.json + adapter_model.safetensors.

LoRA folders are peft's own (they load in plain peft). The other methods write the same two files; their
config names the method, its settings, the base model and the base model's shape, so that loading onto a
model of another shape fails with a message rather than a tensor-size traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from groundtune import __version__
from groundtune.arch import model_shape, weight_is_transposed
from groundtune.fileio import atomic_folder
from groundtune.methods import attach, attached_config, config_from_dict, config_to_dict, detach, trainable_state_dict

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter(model, folder: str | os.PathLike) -> Path:
    """Write the attached method's trainable parameters and settings to `folder` (atomically)."""
    config = attached_config(model)
    if config is None:
        raise ValueError("no adapter is attached to this model: call groundtune.attach(model, config) first")
    with atomic_folder(folder) as tmp:
        if config.method == "lora":
            model.save_pretrained(tmp)
        else:
            meta = {
                "peft_type": config.method.upper(),
                "groundtune_method": config.method,
                "groundtune_version": __version__,
                "base_model_name_or_path": getattr(model, "name_or_path", None),
                "base_model_shape": model_shape(model),
                "config": config_to_dict(config),
            }
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in trainable_state_dict(model).items()}
            save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt", "method": config.method})
    return Path(folder)


def read_adapter_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the adapter") from None


def load_adapter(model, folder: str | os.PathLike):
    """Attach the adapter saved in `folder` to `model` and return the model to use.

    An adapter already attached is removed first, so several adapters can be swapped on one loaded base.
    """
    folder = Path(folder)
    meta = read_adapter_config(folder)
    model = detach(model)
    if "groundtune_method" not in meta:
        return _load_peft(model, folder, meta)
    expected, actual = meta.get("base_model_shape", {}), model_shape(model)
    diff = {k: (v, actual.get(k)) for k, v in expected.items() if actual.get(k) != v}
    if diff:
        details = ", ".join(f"{k}: adapter {a}, model {b}" for k, (a, b) in diff.items())
        raise ValueError(
            f"adapter {folder} was trained on a model of another shape ({details}); load it onto "
            f"{meta.get('base_model_name_or_path') or 'the model it was trained on'}"
        )
    model = attach(model, config_from_dict(meta["config"]))
    saved = load_file(folder / WEIGHTS_NAME)
    params = trainable_state_dict(model)
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        detach(model)
        raise ValueError(f"adapter {folder} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != saved[name].shape:
                detach(model)
                raise ValueError(f"adapter {folder}: {name} has shape {tuple(saved[name].shape)}, model expects {tuple(p.shape)}")
            p.copy_(saved[name])
    return model


def _load_peft(model, folder: Path, meta: dict):
    from peft import PeftModel

    from groundtune.methods import _ATTR
    from groundtune.methods.lora import LoraConfig

    if meta.get("peft_type") != "LORA":
        raise ValueError(f"{folder}: peft type {meta.get('peft_type')!r} is not one groundtune loads; LoRA folders are")
    problems = _lora_shape_problems(model, folder / WEIGHTS_NAME)
    if problems:  # checked before peft injects anything, so a refused adapter leaves the base untouched
        raise ValueError(
            f"adapter {folder} does not fit this model (trained on {meta.get('base_model_name_or_path')}): "
            + "; ".join(problems[:5])
        )
    peft_model = PeftModel.from_pretrained(model, folder, is_trainable=True)  # same state as after attach()
    config = LoraConfig(r=meta["r"], alpha=meta["lora_alpha"], dropout=meta.get("lora_dropout", 0.0),
                        target_modules=meta.get("target_modules"))
    setattr(peft_model, _ATTR, config)
    return peft_model


def _lora_shape_problems(model, weights: Path) -> list[str]:
    from safetensors import safe_open

    modules = dict(model.named_modules())
    problems = []
    with safe_open(weights, "pt") as f:
        for key in f.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            name = key.removeprefix("base_model.model.").split(".lora_")[0]
            module = modules.get(name)
            shape = f.get_slice(key).get_shape()
            if module is None or not hasattr(module, "weight"):
                problems.append(f"{name} does not exist in the model")
                continue
            out_f, in_f = module.weight.shape
            if weight_is_transposed(model, module):  # GPT-2's Conv1D stores [in, out]
                out_f, in_f = in_f, out_f
            if ".lora_A." in key and shape[1] != in_f:
                problems.append(f"{name}: adapter input size {shape[1]}, model {in_f}")
            if ".lora_B." in key and shape[0] != out_f:
                problems.append(f"{name}: adapter output size {shape[0]}, model {out_f}")
    return problems
