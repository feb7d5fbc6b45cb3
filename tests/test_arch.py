"""groundtune.arch's family table: every row is true of transformers' modeling code, LLaMA-Adapter really runs on
every row, and families outside the table are refused by name."""

import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import AttentionInterface
from transformers.pytorch_utils import Conv1D

import groundtune as gt
from groundtune import arch
from groundtune.methods import trainable_state_dict
from groundtune.methods.lora import attention_targets, peft_config
from tiny import EAGER_ONLY, FAMILIES, TINY, VOCAB, tiny_model

X = torch.randint(1, VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
LONG = torch.randint(1, VOCAB, (2, 40), generator=torch.Generator().manual_seed(6))  # past gemma's 16-token window

# Decoders whose attention is computed inline (no AttentionInterface lookup): LLaMA-Adapter must refuse them.
INLINE = {
    "bloom": dict(hidden_size=48, n_layer=2, n_head=4, vocab_size=VOCAB),
    "falcon": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB),
    "xglm": dict(d_model=48, num_layers=2, attention_heads=4, ffn_dim=64, vocab_size=VOCAB, max_position_embeddings=128),
}


def _inline_model(family):
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **INLINE[family])
    config.pad_token_id = 0
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def test_the_gemma_windows_are_active_on_the_long_input():
    for family in ("gemma2", "gemma3_text"):
        model = tiny_model(family)
        assert {model.config.layer_types[i] for i in range(3)} == {"sliding_attention", "full_attention"}
        with torch.no_grad():
            windowed = model(LONG).logits
            model.config.sliding_window = 1000
            assert not torch.allclose(model(LONG).logits, windowed)


def test_the_table_and_the_tiny_configs_cover_the_same_families():
    assert set(arch.FAMILIES) == set(TINY) == set(FAMILIES)
    for name, row in arch.FAMILIES.items():
        assert row.model_type == name and tiny_model(name).config.model_type == name


@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_describes_the_family_s_attention_modules(family):
    model = tiny_model(family)
    row = arch.FAMILIES[family]
    specs = arch.attention_layers(model)
    assert [s.layer_idx for s in specs] == list(range(model.config.num_hidden_layers))
    for spec in specs:
        m = spec.module
        assert all(isinstance(getattr(m, p), torch.nn.Module) for p in row.projections)
        assert isinstance(getattr(m, row.projections[0]), Conv1D) == row.conv1d
        assert hasattr(m, "k_norm") == row.k_norm
    # LoRA's defaults are the row's projections, transposed exactly where the row says Conv1D
    assert attention_targets(model).endswith("(" + "|".join(row.projections) + ")")
    assert peft_config(model, gt.LoraConfig()).fan_in_fan_out == row.conv1d


# ---- dispatch: a probe kernel registered with AttentionInterface counts the calls each family makes ----

_CALLS = []


def _probe(module, query, key, value, attention_mask, **kwargs):
    _CALLS.append(module.layer_idx)
    return sys.modules[type(module).__module__].eager_attention_forward(module, query, key, value, attention_mask,
                                                                         **kwargs)


AttentionInterface.register("groundtune_test_probe", _probe)
AttentionMaskInterface.register("groundtune_test_probe", ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _dispatch_calls(model) -> list[int]:
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "groundtune_test_probe"
    _CALLS.clear()
    with torch.no_grad():
        model(X)
    return sorted(_CALLS)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_that_say_attention_interface_really_dispatch_through_it(family):
    model = tiny_model(family, attn_implementation="eager")
    assert arch.FAMILIES[family].attention_interface
    assert _dispatch_calls(model) == list(range(model.config.num_hidden_layers))


@pytest.mark.parametrize("family", sorted(INLINE))
def test_inline_families_never_call_the_attention_interface(family):
    assert _dispatch_calls(_inline_model(family)) == []


# ---- LLaMA-Adapter on every row ----

@pytest.mark.parametrize("family", FAMILIES)
def test_llama_adapter_runs_on_every_row(family):
    base = tiny_model(family)
    with torch.no_grad():
        expected = base(LONG).logits
    adapted = gt.attach(tiny_model(family), gt.LlamaAdapterConfig(layers=3, length=4))
    assert adapted.config._attn_implementation == "groundtune_adapter_" + ("eager" if family in EAGER_ONLY else "sdpa")
    with torch.no_grad():
        assert torch.equal(adapted(LONG).logits, expected)  # zero gates: the base model exactly
        for name, p in trainable_state_dict(adapted).items():
            if name.endswith("gate"):
                p.fill_(0.5)
            else:
                p.normal_()  # the prompts
        changed = adapted(LONG).logits
    assert (changed - expected).abs().max() > 1e-3  # the adapter term really reaches the output
    with torch.no_grad():
        for name, p in trainable_state_dict(adapted).items():
            if name.endswith("gate"):
                p.zero_()
        assert torch.equal(adapted(LONG).logits, expected)  # gates back at zero: the base again, whatever the prompts


@pytest.mark.parametrize("family", sorted(INLINE))
def test_llama_adapter_refuses_inline_families_by_name(family):
    model = _inline_model(family)
    with pytest.raises(ValueError, match=rf"LLaMA-Adapter does not support model family '{family}'") as err:
        gt.attach(model, gt.LlamaAdapterConfig(layers=2, length=3))
    assert all(name in str(err.value) for name in arch.FAMILIES)  # lists what is supported
    assert not any(hasattr(m, "adaption_prompt") for m in model.modules())
    assert model.config._attn_implementation == "eager"


def test_lora_defaults_refuse_a_family_outside_the_table_but_explicit_targets_work():
    model = _inline_model("bloom")
    with pytest.raises(ValueError, match=r"'bloom'.*target_modules"):
        gt.attach(model, gt.LoraConfig())
    gt.detach(model)
    adapted = gt.attach(_inline_model("bloom"), gt.LoraConfig(target_modules=["query_key_value", "dense"]))
    names = list(trainable_state_dict(adapted))
    assert names and all(".lora_" in n for n in names)


def test_a_row_checks_its_own_shape():
    with pytest.raises(ValueError, match="layout"):
        arch.Family("x", "interleaved", ("a", "b"))
    with pytest.raises(ValueError, match="projections"):
        arch.Family("x", arch.SEPARATE, ("qkv", "o"))
    row = arch.FAMILIES["llama"]
    with pytest.raises(AttributeError):  # frozen
        row.k_norm = True
    assert row.key_value == ("k_proj", "v_proj") and arch.FAMILIES["gpt2"].key_value == ("c_attn",)
