"""Number-for-number parity with peft on tiny random llama and mistral configs: LLaMA-Adapter against peft's
AdaptionPrompt, prompt tuning against peft's PromptTuning, and LoRA folders moving both ways between groundtune
and plain peft."""

import pytest
import torch

import groundtune as gt
from groundtune.methods import trainable_state_dict
from tiny import VOCAB, randomise, tiny_model

peft = pytest.importorskip("peft")

PARITY_FAMILIES = ["llama", "mistral"]  # the decoder families peft's AdaptionPrompt knows besides gpt2
X = torch.randint(1, VOCAB, (2, 11), generator=torch.Generator().manual_seed(7))


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


# ---- (a) LLaMA-Adapter vs peft's AdaptionPrompt ----

def _peft_adaption_prompt(family, layers, length, attn, gates):
    model = peft.get_peft_model(tiny_model(family, attn_implementation=attn),
                                peft.AdaptionPromptConfig(adapter_len=length, adapter_layers=layers, task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(11)
    params = {}  # layer index -> (prompt [K, hidden], gate [1])
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "adaption_prompt") and hasattr(module, "adaption_gate"):
                layer = module.model.layer_idx
                module.adaption_prompt.copy_(torch.randn(module.adaption_prompt.shape, generator=g))
                module.adaption_gate.fill_(gates[len(params)])
                params[layer] = (module.adaption_prompt[0].clone(), module.adaption_gate.clone())
    assert len(params) == layers
    return model, params


def _groundtune_with(family, layers, length, attn, params, tanh_gate=False):
    model = gt.attach(tiny_model(family, attn_implementation=attn),
                      gt.LlamaAdapterConfig(layers=layers, length=length, gate="scalar", tanh_gate=tanh_gate))
    adapters = {m.layer_idx: m.adaption_prompt for m in model.modules() if hasattr(m, "adaption_prompt")}
    assert sorted(adapters) == sorted(params)  # both adapt the same top layers
    with torch.no_grad():
        for layer, (prompt, gate) in params.items():
            adapters[layer].prompt.copy_(prompt)
            adapters[layer].gate.copy_(torch.atanh(gate) if tanh_gate else gate)
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", PARITY_FAMILIES)
def test_llama_adapter_matches_peft_adaption_prompt(family, attn):
    theirs, params = _peft_adaption_prompt(family, layers=2, length=4, attn=attn, gates=[0.7, -0.4])
    ours = _groundtune_with(family, 2, 4, attn, params)
    with torch.no_grad():
        expected, got = theirs(X).logits, ours(X).logits
        base = tiny_model(family, attn_implementation=attn)(X).logits
    assert (expected - base).abs().max() > 1e-3  # the adapters really change the output
    assert _rel(got, expected) <= 1e-5


@pytest.mark.parametrize("family", PARITY_FAMILIES)
def test_a_tanh_gate_matches_peft_given_the_tanh_of_it(family):
    # peft applies its gate as it is; groundtune's tanh_gate=True applies tanh(gate): same numbers at atanh(peft's)
    theirs, params = _peft_adaption_prompt(family, layers=3, length=2, attn="sdpa", gates=[0.3, -0.6, 0.5])
    ours = _groundtune_with(family, 3, 2, "sdpa", params, tanh_gate=True)
    with torch.no_grad():
        assert _rel(ours(X).logits, theirs(X).logits) <= 1e-5


@pytest.mark.parametrize("family", PARITY_FAMILIES)
def test_llama_adapter_matches_peft_with_a_padding_mask(family):
    mask = torch.ones_like(X)
    mask[0, :3] = 0  # left padding: neither implementation masks the adaption prompt itself
    theirs, params = _peft_adaption_prompt(family, layers=2, length=4, attn="sdpa", gates=[0.9, 0.2])
    ours = _groundtune_with(family, 2, 4, "sdpa", params)
    with torch.no_grad():
        expected, got = theirs(input_ids=X, attention_mask=mask).logits, ours(input_ids=X, attention_mask=mask).logits
    assert _rel(got[0, 3:], expected[0, 3:]) <= 1e-5 and _rel(got[1], expected[1]) <= 1e-5


# ---- (b) prompt tuning vs peft's PromptTuning ----

@pytest.mark.parametrize("family", PARITY_FAMILIES)
def test_prompt_tuning_matches_peft(family):
    m = 5
    theirs = peft.get_peft_model(tiny_model(family), peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m))
    ours = gt.attach(tiny_model(family), gt.PromptTuningConfig(length=m, init="random"))
    table = torch.randn(m, 48, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(table)
        (weight,) = trainable_state_dict(ours).values()
        weight.copy_(table)
    labels = X.clone()
    labels[:, :2] = -100
    with torch.no_grad():
        expected = theirs(input_ids=X, attention_mask=torch.ones_like(X), labels=labels)
        got = ours(input_ids=X, attention_mask=torch.ones_like(X), labels=labels)
    assert expected.logits.shape[1] == m + X.shape[1] and got.logits.shape[1] == X.shape[1]
    assert _rel(got.logits, expected.logits[:, m:]) <= 1e-5  # peft returns the prompt's positions too
    assert abs(got.loss.item() - expected.loss.item()) <= 1e-5 * expected.loss.item()


# ---- (c) LoRA folders both ways ----


@pytest.mark.parametrize("family", PARITY_FAMILIES)
def test_a_groundtune_lora_folder_loads_in_plain_peft(tmp_path, family):
    ours = gt.attach(tiny_model(family), gt.LoraConfig(r=2, alpha=4))
    randomise(ours, 1, scale=0.3)
    gt.save_adapter(ours, tmp_path / "lora")
    theirs = peft.PeftModel.from_pretrained(tiny_model(family), tmp_path / "lora")
    with torch.no_grad():
        expected = ours(X).logits
        assert (expected - tiny_model(family)(X).logits).abs().max() > 1e-3
        assert torch.equal(theirs(X).logits, expected)


@pytest.mark.parametrize("family", PARITY_FAMILIES)
def test_a_plain_peft_lora_folder_loads_in_groundtune_and_goes_back(tmp_path, family):
    theirs = peft.get_peft_model(tiny_model(family), peft.LoraConfig(
        r=3, lora_alpha=6, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    randomise(theirs, 2, scale=0.3)
    theirs.save_pretrained(tmp_path / "peft")
    ours = gt.load_adapter(tiny_model(family), tmp_path / "peft")
    with torch.no_grad():
        expected = theirs(X).logits
        assert (expected - tiny_model(family)(X).logits).abs().max() > 1e-3
        assert torch.equal(ours(X).logits, expected)
    gt.save_adapter(ours, tmp_path / "again")  # and back out to plain peft
    again = peft.PeftModel.from_pretrained(tiny_model(family), tmp_path / "again")
    with torch.no_grad():
        assert torch.equal(again(X).logits, expected)
