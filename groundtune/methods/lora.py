"""LoRA through peft: a thin layer that picks each family's attention projections and keeps peft's format.

Folders saved from here load in plain peft (`PeftModel.from_pretrained`), and `merge_and_unload` folds the
update into the weights so inference has no overhead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from groundtune import arch
from groundtune.methods import Method, clear_attached, mark_attached, register
from groundtune.methods._in_place import head_parameters
from groundtune.ranges import COUNT, POSITIVE, SHARE, ranged
from groundtune.errors import ConfigError


@dataclass
class LoraConfig:
    """r, alpha: rank and scale (the seed paper's r=1, alpha=1); target_modules: peft's option, by default
    the query, key, value and output projections of the model's attention, whatever the family (the families
    in groundtune.arch.FAMILIES; other models need target_modules)."""

    method = "lora"
    r: int = ranged(1, COUNT)
    alpha: int = ranged(1, POSITIVE)
    dropout: float = ranged(0.0, SHARE)
    target_modules: list[str] | str | None = field(default=None)


def attention_targets(model) -> str:
    """A regex over module names matching the attention projections, e.g. `.*\\.self_attn\\.(q_proj|...)`.

    Raises ValueError for a family outside groundtune.arch.FAMILIES: give LoraConfig(target_modules=...) there."""
    try:
        spec = arch.attention_layers(model, "LoRA's default target_modules")[0]
    except ValueError as err:
        raise ConfigError(f"{err}. Name the modules to adapt: LoraConfig(target_modules=[...])") from None
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


def attach_mixed(model, adapters: list):
    """Several LoRA adapters on one model, each under its name, for peft's mixed-batch inference: a forward given
    `adapter_names` (one per row, "__base__" for none) runs each row through its own adapter."""
    import peft

    peft_model = None
    for name, config, tensors in adapters:
        if peft_model is None:
            peft_model = peft.get_peft_model(model, peft_config(model, config), adapter_name=name)
        else:
            peft_model.add_adapter(name, peft_config(model, config))
        params = dict(peft_model.named_parameters())
        with torch.no_grad():
            for key, tensor in tensors.items():  # a plain attach names its one adapter peft's "default"
                params[key.replace(".default.", f".{name}.")].copy_(tensor)
    for p in peft_model.parameters():
        p.requires_grad_(False)
    return peft_model.eval()


def select_rows(model, names: list) -> dict:
    return {"adapter_names": [name if name is not None else "__base__" for name in names]}


def merge_and_unload(model):
    """Fold LoRA into the base weights: the returned plain model runs at base speed."""
    merged = model.merge_and_unload()
    clear_attached(merged)
    return merged


def save(model, folder: Path) -> None:
    model.save_pretrained(folder)  # peft's own layout: loads in plain PeftModel.from_pretrained


def load(model, folder: Path, meta: dict):
    """A peft LoRA folder onto `model` (after its shapes are checked against the model's)."""
    from peft import PeftModel

    from groundtune.methods.io import WEIGHTS_NAME

    problems = _lora_shape_problems(model, folder / WEIGHTS_NAME)
    if problems:  # checked before peft injects anything, so a refused adapter leaves the base untouched
        raise ConfigError(
            f"adapter {folder} does not fit this model (trained on {meta.get('base_model_name_or_path')}): "
            + "; ".join(problems[:5])
        )
    peft_model = PeftModel.from_pretrained(model, folder, is_trainable=True)  # same state as after attach()
    mark_attached(peft_model, read_peft_config(meta))
    return peft_model


def read_peft_config(meta: dict) -> LoraConfig:
    """The LoraConfig of a peft folder's adapter_config.json."""
    try:
        return LoraConfig(r=meta["r"], alpha=meta["lora_alpha"], dropout=meta.get("lora_dropout", 0.0),
                          target_modules=meta.get("target_modules"))
    except KeyError as err:
        raise ConfigError(f"a peft LoRA adapter_config.json needs {err.args[0]!r}") from None


def parameter_count(model, config: LoraConfig) -> int:
    """r·(in + out) for each module peft would adapt, plus a sequence classifier's head (peft's modules_to_save).

    The modules are matched as peft documents target_modules: a string is a regular expression over the whole
    module name, a list names modules by their last name parts."""
    targets = config.target_modules or attention_targets(model)
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as err:
            raise ConfigError(f"LoRA target_modules {targets!r} is not a valid regular expression ({err})") from None
        matches = lambda name: pattern.fullmatch(name) is not None  # noqa: E731
    elif isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        matches = lambda name: any(name == t or name.endswith("." + t) for t in targets)  # noqa: E731
    else:
        raise ConfigError(f"LoRA target_modules must be a string or a list of strings, not {targets!r}")
    total = 0
    for name, module in model.named_modules():
        if not name or not matches(name):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            # refused here: peft would fail on it halfway through, with the modules before it already wrapped
            raise ConfigError(f"LoRA target_modules matches {name} ({type(module).__name__}), which has no 2-D weight "
                             "for LoRA to adapt; name linear layers")
        total += config.r * (weight.shape[0] + weight.shape[1])
    head = head_parameters(model) if _task_type(model) == "SEQ_CLS" else 0
    return total + head


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
            if arch.weight_is_transposed(model, module):  # GPT-2's Conv1D stores [in, out]
                out_f, in_f = in_f, out_f
            if ".lora_A." in key and shape[1] != in_f:
                problems.append(f"{name}: adapter input size {shape[1]}, model {in_f}")
            if ".lora_B." in key and shape[0] != out_f:
                problems.append(f"{name}: adapter output size {shape[0]}, model {out_f}")
    return problems


register(Method(LoraConfig, attach, detach, save=save, load=load, peft_types=("LORA",), parameter_count=parameter_count,
                read_peft_config=read_peft_config,
                describe=lambda config: {"layer": "all", "length": f"r={config.r}, α={config.alpha}"},
                prefix_safe=True, mixable=True, mergeable=True, attach_mixed=attach_mixed, detach_mixed=detach,
                select_rows=select_rows))
