"""`groundtune export ADAPTER --for vllm|merged`: an adapter in the form another engine loads.

- `vllm`: a LoRA folder vLLM loads as it is (`vllm serve BASE --enable-lora --lora-modules NAME=FOLDER`, with
  `--max-lora-rank` at least the adapter's r). vLLM's loader (vllm/lora/peft_helper.py, PEFTHelper) needs `r`,
  `lora_alpha` and `target_modules` in adapter_config.json, and refuses `modules_to_save`, DoRA (`use_dora`) and a
  trained bias; the weights are peft's `base_model.model.<module>.lora_A.weight` / `lora_B.weight` tensors in
  adapter_model.safetensors. Each is checked here, so a folder that vLLM would refuse is refused now, naming why.
  The prompt format (groundtune_prompt.json) goes along for the groundtune front (`serve --backend`).
- `merged`: the adapter folded into the base weights, written as plain safetensors shards with the tokenizer,
  loadable by `transformers.AutoModelForCausalLM.from_pretrained` and so by every engine. For the methods whose
  registry entry is `mergeable` (LoRA, BitFit, full fine-tuning); a chat-vector output is already a plain model
  folder and is re-written as one. Methods that add virtual tokens or attention of their own (prompt tuning,
  DePT, ACCEPT, LLaMA-Adapter) cannot be folded into the weights and are refused with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from groundtune.errors import GroundtuneError

TARGETS = ("vllm", "merged")
PROMPT_FILE = "groundtune_prompt.json"


class ExportError(GroundtuneError):
    """The adapter cannot be exported as asked (the message says why and what to do instead)."""


def export(adapter: str | os.PathLike, out: str | os.PathLike, *, to: str, model: str | None = None,
           max_shard_size: str = "5GB", overwrite: bool = False) -> Path:
    """Write `adapter` (an adapter folder, or a chat-vector model folder for `merged`) to `out` for `to`.
    model: the base it was trained on (default: the base its adapter_config.json names)."""
    from groundtune.fileio import guard_output

    adapter = Path(adapter)
    if to not in TARGETS:
        raise ExportError(f"--for {to!r}: choose one of {', '.join(TARGETS)}")
    if not adapter.is_dir():
        raise ExportError(f"{adapter} is not a folder: give an adapter folder from training")
    guard_output(out, command="export", inputs=[adapter, model], overwrite=overwrite, error=ExportError)
    if to == "vllm":
        return _export_vllm(adapter, Path(out))
    return _export_merged(adapter, Path(out), model, max_shard_size)


def _method(adapter: Path):
    from groundtune.methods import get
    from groundtune.methods.io import adapter_method

    try:
        return get(adapter_method(adapter))
    except (ValueError, OSError) as err:
        raise ExportError(str(err)) from None


def _local_only_reason(method) -> str:
    return (f"{adapter_kind(method)} adapters cannot be merged into the weights (the method adds what the base "
            "model has no place for: virtual tokens or attention of its own), so no other engine can run them; "
            "serve them with groundtune serve (with --backend, add --local-engine)")


def adapter_kind(method) -> str:
    return method.name.replace("_", "-")


# ------------------------------------------------------------------------------------------------- vllm


def check_vllm_lora(adapter: Path) -> dict:
    """adapter_config.json of a LoRA folder that vLLM loads; ExportError listing every reason it would not."""
    from safetensors import safe_open

    from groundtune.methods.io import CONFIG_NAME, WEIGHTS_NAME, read_adapter_config

    method = _method(adapter)
    if "LORA" not in method.peft_types:
        reason = (_local_only_reason(method) if not method.mergeable else
                  f"vLLM loads LoRA adapters only; a {adapter_kind(method)} adapter travels as a merged model: "
                  "groundtune export ADAPTER --for merged")
        raise ExportError(f"{adapter}: {reason}")
    meta = read_adapter_config(adapter)
    problems = [f"{CONFIG_NAME} has no {key!r}" for key in ("r", "lora_alpha", "target_modules") if key not in meta]
    if meta.get("modules_to_save"):
        problems.append(f"modules_to_save is {meta['modules_to_save']} (vLLM takes none: train without them)")
    if meta.get("use_dora"):
        problems.append("use_dora is true (vLLM does not load DoRA)")
    if meta.get("bias", "none") != "none":
        problems.append(f"bias is {meta['bias']!r} (vLLM loads LoRA without trained biases)")
    with safe_open(adapter / WEIGHTS_NAME, "pt") as f:
        keys = list(f.keys())
    odd = [k for k in keys if not (k.startswith("base_model.model.") and k.endswith((".lora_A.weight", ".lora_B.weight")))]
    if odd:
        problems.append(f"{len(odd)} tensor(s) are not peft LoRA weights (base_model.model.*.lora_A/B.weight), "
                        f"e.g. {odd[0]}")
    if problems:
        raise ExportError(f"{adapter} would not load in vLLM: " + "; ".join(problems))
    return meta


def _export_vllm(adapter: Path, out: Path) -> Path:
    from groundtune.fileio import atomic_folder
    from groundtune.methods.io import CONFIG_NAME, WEIGHTS_NAME

    meta = check_vllm_lora(adapter)
    with atomic_folder(out) as tmp:
        shutil.copyfile(adapter / WEIGHTS_NAME, tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        if (adapter / PROMPT_FILE).is_file():
            shutil.copyfile(adapter / PROMPT_FILE, tmp / PROMPT_FILE)
    return out


# ------------------------------------------------------------------------------------------------- merged


def merged_model(adapter: Path, model: str | None = None):
    """(plain transformers model with the adapter folded in, tokenizer)."""
    import torch

    from groundtune.methods import detach
    from groundtune.methods.io import load_adapter, read_adapter_config
    from groundtune.models import load_model

    if not (adapter / "adapter_config.json").is_file() and (adapter / "config.json").is_file():
        return load_model(adapter)  # a model folder already (a chat-vector merge): re-written as plain shards
    method = _method(adapter)
    if not method.mergeable:
        raise ExportError(f"{adapter}: {_local_only_reason(method)}")
    base_name = model or read_adapter_config(adapter).get("base_model_name_or_path")
    if not base_name:
        raise ExportError(f"{adapter}/adapter_config.json names no base model: give --model (the model it was "
                          "trained on)")
    base, tokenizer = load_model(base_name)
    adapted = load_adapter(base, adapter)
    if hasattr(adapted, "merge_and_unload"):  # a peft model (LoRA): peft folds B·A·scale into each weight
        from groundtune.methods.lora import merge_and_unload

        return merge_and_unload(adapted), tokenizer
    # In-place methods (BitFit, full fine-tuning) train base parameters themselves: their values are the merged
    # model; detaching would put the base's back, so they are copied out first and loaded into the plain model.
    trained = {name: tensor.detach().clone() for name, tensor in adapted.state_dict().items()}
    plain = detach(adapted)
    with torch.no_grad():
        plain.load_state_dict(trained)
    return plain, tokenizer


def _export_merged(adapter: Path, out: Path, model: str | None, max_shard_size: str) -> Path:
    from groundtune.fileio import atomic_folder

    merged, tokenizer = merged_model(adapter, model)
    with atomic_folder(out) as tmp:
        merged.save_pretrained(tmp, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
        if (adapter / PROMPT_FILE).is_file():
            shutil.copyfile(adapter / PROMPT_FILE, tmp / PROMPT_FILE)
    return out
