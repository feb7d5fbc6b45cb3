"""`groundtune export`: merged models give the adapted model's logits from plain transformers; the vLLM folder
holds what vLLM's LoRA loader reads; kinds that cannot merge are refused with the reason."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import groundtune as gt
from groundtune.merge.export import ExportError, export
from groundtune.methods import trainable_state_dict
from tiny import tiny_model, tiny_tokenizer

METHODS = {"lora": gt.LoraConfig(r=2, alpha=4), "bitfit": gt.BitFitConfig(), "full": gt.FullConfig(),
           "prompt_tuning": gt.PromptTuningConfig(length=3), "llama_adapter": gt.LlamaAdapterConfig(layers=1, length=2)}
IDS = torch.tensor([[5, 9, 14, 22, 31, 40]])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    tiny_model("qwen2").save_pretrained(root / "base")  # Qwen2: biases, so BitFit has something to train
    tiny_tokenizer().save_pretrained(root / "base")
    out = {"base": root / "base"}
    for i, (name, config) in enumerate(METHODS.items()):
        model = gt.attach(AutoModelForCausalLM.from_pretrained(root / "base"), config)
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in trainable_state_dict(model).values():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        out[name] = gt.save_adapter(model, root / name, prompt_format={"kind": "grounded", "k": 2})
    return out


@pytest.mark.parametrize("name", ["lora", "bitfit", "full"])
def test_a_merged_export_gives_the_adapted_logits_from_plain_transformers(folders, tmp_path, name):
    adapted = gt.load_adapter(AutoModelForCausalLM.from_pretrained(folders["base"]), folders[name]).eval()
    with torch.no_grad():
        want = adapted(input_ids=IDS).logits
        plain_base = AutoModelForCausalLM.from_pretrained(folders["base"]).eval()(input_ids=IDS).logits
    out = export(folders[name], tmp_path / "merged", to="merged", model=str(folders["base"]))
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        got = merged(input_ids=IDS).logits
    assert (want - plain_base).abs().max() > 1e-3  # the adapter changes the answer
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert any(p.suffix == ".safetensors" for p in out.iterdir()) and (out / "tokenizer.json").is_file()
    assert json.loads((out / "groundtune_prompt.json").read_text())["k"] == 2


@pytest.mark.parametrize("name", ["prompt_tuning", "llama_adapter"])
def test_kinds_that_cannot_merge_are_refused_with_the_reason(folders, tmp_path, name):
    for to in ("merged", "vllm"):
        with pytest.raises(ExportError, match="cannot be merged into the weights.*groundtune serve"):
            export(folders[name], tmp_path / to, to=to, model=str(folders["base"]))
        assert not (tmp_path / to).exists()


def test_the_vllm_folder_holds_what_vllms_lora_loader_reads(folders, tmp_path):
    out = export(folders["lora"], tmp_path / "vllm", to="vllm")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4 and config["target_modules"]
    assert not config.get("modules_to_save") and not config.get("use_dora") and config.get("bias", "none") == "none"
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("base_model.model.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
                        for k in keys)
    with pytest.raises(ExportError, match="vLLM loads LoRA adapters only.*--for merged"):
        export(folders["bitfit"], tmp_path / "b", to="vllm")
    with pytest.raises(ExportError, match="already exists"):  # the output guard: no silent overwrite
        export(folders["lora"], out, to="vllm")
