import json

import pytest
import torch

import groundtune as gt
from groundtune.methods import count_trainable, trainable_state_dict
from groundtune.methods.lora import merge_and_unload
from tiny import FAMILIES, VOCAB, randomise, tiny_model

X = torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_defaults_cover_q_k_v_o_of_every_family(family):
    model = gt.attach(tiny_model(family), gt.LoraConfig())
    names = [n for n in trainable_state_dict(model)]
    assert names and all(".lora_" in n for n in names)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    expected = {"gpt2": {"c_attn", "c_proj"}, "gpt_neox": {"query_key_value", "dense"}}.get(
        family, {"q_proj", "k_proj", "v_proj", "o_proj"})
    assert wrapped == expected
    # r=1: each adapted projection adds in + out parameters; every layer is adapted
    layers = 3
    assert len(names) == 2 * len(expected) * layers
    assert not any("mlp" in n for n in names)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_lora_merge_gives_the_same_logits_with_a_plain_model(family):
    model = gt.attach(tiny_model(family), gt.LoraConfig(r=2, alpha=4))
    randomise(model)
    adapted = model(X).logits
    merged = merge_and_unload(model)
    assert type(merged).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(X).logits, adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [gt.LoraConfig(), gt.LlamaAdapterConfig(layers=2, length=3, gate="scalar")],
                         ids=["lora", "llama_adapter"])
def test_save_and_load_give_identical_logits(tmp_path, config):
    model = gt.attach(tiny_model("llama"), config)
    randomise(model)
    expected = model(X).logits
    gt.save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir() if p.suffix in (".json", ".safetensors")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    fresh = gt.load_adapter(tiny_model("llama"), tmp_path / "adapter")
    assert torch.equal(fresh(X).logits, expected)
    assert count_trainable(fresh) == count_trainable(model)


def test_llama_adapter_folder_records_method_base_and_settings(tmp_path):
    model = gt.attach(tiny_model("mistral"), gt.LlamaAdapterConfig(layers=3, length=7, gate="per_head"))
    model.name_or_path = "tiny-mistral"
    gt.save_adapter(model, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert meta["groundtune_method"] == "llama_adapter"
    assert meta["base_model_name_or_path"] == "tiny-mistral"
    assert meta["config"] == {"method": "llama_adapter", "layers": 3, "length": 7, "gate": "per_head", "tanh_gate": False}
    assert meta["base_model_shape"]["hidden_size"] == 48


def test_lora_folder_loads_in_plain_peft(tmp_path):
    from peft import PeftModel

    model = gt.attach(tiny_model("qwen2"), gt.LoraConfig(r=2, alpha=2))
    randomise(model)
    expected = model(X).logits
    gt.save_adapter(model, tmp_path / "lora")
    plain = PeftModel.from_pretrained(tiny_model("qwen2"), tmp_path / "lora")
    assert torch.equal(plain(X).logits, expected)


@pytest.mark.parametrize("config", [gt.LoraConfig(), gt.LlamaAdapterConfig(layers=2, length=3)], ids=["lora", "llama_adapter"])
def test_loading_onto_another_shape_is_a_clear_error(tmp_path, config):
    model = gt.attach(tiny_model("llama"), config)
    gt.save_adapter(model, tmp_path / "a")
    other = tiny_model("gemma")  # same hidden size, other head layout
    base_logits = other(X).logits
    with pytest.raises(ValueError, match="does not fit this model|another shape"):
        gt.load_adapter(other, tmp_path / "a")
    assert torch.equal(other(X).logits, base_logits)  # a refused adapter leaves the base untouched


def test_several_adapters_swap_on_one_loaded_base(tmp_path):
    outputs = {}
    for name, config, seed in [("a", gt.LlamaAdapterConfig(layers=2, length=3), 1), ("b", gt.LoraConfig(r=2), 2),
                               ("c", gt.LlamaAdapterConfig(layers=3, length=2), 3)]:
        model = gt.attach(tiny_model("llama"), config)
        randomise(model, seed)
        outputs[name] = model(X).logits
        gt.save_adapter(model, tmp_path / name)
    base = tiny_model("llama")
    base_logits = base(X).logits
    model = base
    for name in ["a", "b", "c", "a", "b"]:
        model = gt.load_adapter(model, tmp_path / name)
        assert torch.equal(model(X).logits, outputs[name]), name
    assert torch.equal(gt.detach(model)(X).logits, base_logits)


def test_saving_replaces_an_adapter_atomically(tmp_path):
    model = gt.attach(tiny_model("gpt2"), gt.LlamaAdapterConfig(layers=1, length=2))
    gt.save_adapter(model, tmp_path / "a")
    randomise(model)
    gt.save_adapter(model, tmp_path / "a")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary folders left behind
    assert torch.equal(gt.load_adapter(tiny_model("gpt2"), tmp_path / "a")(X).logits, model(X).logits)


def test_missing_adapter_folder_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        gt.load_adapter(tiny_model("llama"), tmp_path / "nothing")
