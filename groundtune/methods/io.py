"""Adapter folders in peft's layout: adapter_config.json + adapter_model.safetensors.

A method may write a layout of its own (LoRA writes peft's, which loads in plain peft). The others write the
same two files through this module; their
config names the method, its settings, the base model and the base model's shape, so that loading onto a
model of another shape fails with a message rather than a tensor-size traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from groundtune.version import __version__
from groundtune.arch import model_shape
from groundtune.fileio import atomic_folder
from groundtune.methods import (attach, attached_config, check_counts, config_from_dict, config_to_dict, detach, get,
                                parameter_count, registry, trainable_state_dict)
from groundtune.errors import ConfigError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter(model, folder: str | os.PathLike, prompt_format: dict | None = None) -> Path:
    """Write the attached method's trainable parameters and settings to `folder` (atomically).

    prompt_format: how the training prompts were built (`groundtune.data.prompt_format`), written beside them
    so that `groundtune serve` builds its prompts the same way."""
    config = attached_config(model)
    if config is None:
        raise ConfigError("no adapter is attached to this model: call groundtune.attach(model, config) first")
    with atomic_folder(folder) as tmp:
        if prompt_format is not None:
            from groundtune.data.prompt_format import write as write_prompt_format

            write_prompt_format(tmp, prompt_format)
        method = get(config.method)
        if method.save is not None:  # a layout of the method's own (LoRA: peft's)
            method.save(model, tmp)
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
        raise ConfigError(f"{path} is not valid JSON ({err}); re-save the adapter") from None


def adapter_method(folder: str | os.PathLike) -> str:
    """The registered method name of an adapter folder, from its adapter_config.json alone (nothing is loaded):
    groundtune's own layout names it, a peft folder's peft_type is read by the method that lists that type."""
    meta = read_adapter_config(folder)
    if not isinstance(meta, dict):
        raise ConfigError(f"{Path(folder) / CONFIG_NAME} holds a JSON {type(meta).__name__}, not an object; "
                         "re-save the adapter")
    if "groundtune_method" in meta:
        name = meta["groundtune_method"]
        if name not in registry():
            raise ConfigError(f"{Path(folder) / CONFIG_NAME}: method {name!r} is not one groundtune knows "
                             f"({', '.join(registry())})")
        return name
    readers = [m for m in registry().values() if meta.get("peft_type") in m.peft_types]
    if not readers:
        known = sorted(t for m in registry().values() for t in m.peft_types)
        raise ConfigError(f"{Path(folder) / CONFIG_NAME}: peft type {meta.get('peft_type')!r} is not one groundtune "
                         f"loads; it loads {known}")
    return readers[0].name


def check_weights(folder: str | os.PathLike) -> None:
    """ValueError naming the file when the folder's weights are not a whole safetensors file (zeroed, truncated,
    a header that claims more than the file holds); safetensors checks the header against the file's size."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        with safe_open(path, "pt") as f:
            for key in f.keys():
                f.get_slice(key).get_shape()
    except SafetensorError as err:
        raise ConfigError(f"{path} is not a valid safetensors file ({err}); save the adapter again") from None


def planned_parameters(model, folder: str | os.PathLike) -> int | None:
    """How many trainable parameters loading `folder` onto `model` would create, from its adapter_config.json and
    the model's shapes alone: nothing is allocated, so a server can refuse an adapter too large before loading
    it. None when the method cannot tell; ValueError when the config is not one this model can load."""
    meta = read_adapter_config(folder)
    if not isinstance(meta, dict):
        raise ConfigError(f"{CONFIG_NAME} holds a JSON {type(meta).__name__}, not an object; re-save the adapter")
    try:
        if "groundtune_method" in meta:
            if not isinstance(meta.get("config"), dict):
                raise ConfigError(f"{CONFIG_NAME} has no 'config' object (the method's settings); re-save the adapter")
            name = meta["config"].get("method")
            if isinstance(name, str) and name in registry():
                check_counts(get(name).config, meta["config"])
            config = config_from_dict(meta["config"])
        else:
            readers = [m for m in registry().values() if meta.get("peft_type") in m.peft_types]
            if not readers or readers[0].read_peft_config is None:
                known = sorted(t for m in registry().values() for t in m.peft_types)
                raise ConfigError(f"{CONFIG_NAME}: peft type {meta.get('peft_type')!r} is not one groundtune loads; "
                                 f"it loads {known}")
            config = readers[0].read_peft_config(meta)
        return parameter_count(model, config)
    except TypeError as err:  # a setting of the wrong JSON type met the config's own checks
        raise ConfigError(f"{CONFIG_NAME}: a setting has the wrong type ({err}); re-save the adapter") from None


def load_adapter(model, folder: str | os.PathLike):
    """Attach the adapter saved in `folder` to `model` and return the model to use.

    An adapter already attached is removed first, so several adapters can be swapped on one loaded base.
    """
    folder = Path(folder)
    meta = read_adapter_config(folder)
    check_weights(folder)
    model = detach(model)
    if "groundtune_method" not in meta:  # a peft folder: the method that reads its peft_type loads it
        peft_type = meta.get("peft_type")
        readers = [m for m in registry().values() if peft_type in m.peft_types]
        if not readers:
            known = sorted(t for m in registry().values() for t in m.peft_types)
            raise ConfigError(f"{folder}: peft type {peft_type!r} is not one groundtune loads; it loads {known}")
        return readers[0].load(model, folder, meta)
    expected, actual = meta.get("base_model_shape", {}), model_shape(model)
    diff = {k: (v, actual.get(k)) for k, v in expected.items() if actual.get(k) != v}
    if diff:
        details = ", ".join(f"{k}: adapter {a}, model {b}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"adapter {folder} was trained on a model of another shape ({details}); load it onto "
            f"{meta.get('base_model_name_or_path') or 'the model it was trained on'}"
        )
    config = config_from_dict(meta["config"])
    if getattr(config, "init", None) == "text":
        # The saved weights replace the initial values, so loading never needs the tokenizer that init='text' reads
        # from a path or hub id the config names: an adapter folder (an upload to the server, say) must not make
        # groundtune open one. The config is recorded as written.
        import dataclasses

        config = dataclasses.replace(config, init="vocab")
    model = attach(model, config)
    saved = load_file(folder / WEIGHTS_NAME)
    params = trainable_state_dict(model)
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        detach(model)
        raise ConfigError(f"adapter {folder} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != saved[name].shape:
                detach(model)
                raise ConfigError(f"adapter {folder}: {name} has shape {tuple(saved[name].shape)}, model expects {tuple(p.shape)}")
            p.copy_(saved[name])
    return model
