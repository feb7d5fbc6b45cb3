import sys

import pytest
import torch
import torch.nn.functional as F

import groundtune as gt
from groundtune.methods import count_trainable, trainable_state_dict
from tiny import FAMILIES, VOCAB, randomise, tiny_model


def _adapted(family, layers=2, length=4, gate="per_head", attn="sdpa", seed=0):
    model = tiny_model(family, seed=seed, attn_implementation=attn)
    return gt.attach(model, gt.LlamaAdapterConfig(layers=layers, length=length, gate=gate))


def _inputs(seed=1, batch=2, length=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=g)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_zero_gates_give_the_base_logits_exactly(family, attn):
    x = _inputs()
    base = tiny_model(family, attn_implementation=attn)(x).logits
    adapted = _adapted(family, attn=attn)
    assert torch.equal(adapted(x).logits, base)


# ---- a plain reference: the base model plus forward hooks that add the adapter term written out by hand ----

def _reference_term(module, hidden, kwargs, prompt, gate):
    """gate ⊙ softmax(q · k_Pᵀ · scaling) · v_P for one layer, computed directly from the layer's weights."""
    B, T, _ = hidden.shape
    if hasattr(module, "q_proj"):
        d = module.head_dim
        q = module.q_proj(hidden).view(B, T, -1, d).transpose(1, 2)
        kp = module.k_proj(prompt).view(len(prompt), -1, d).transpose(0, 1)
        vp = module.v_proj(prompt).view(len(prompt), -1, d).transpose(0, 1)
        if hasattr(module, "k_norm"):  # qwen3, gemma3: per-head RMSNorm of queries and keys, before RoPE
            q, kp = module.q_norm(q), module.k_norm(kp)
    elif hasattr(module, "query_key_value"):
        d = module.head_size
        q = module.query_key_value(hidden).view(B, T, -1, 3 * d)[..., :d].transpose(1, 2)
        qkv_p = module.query_key_value(prompt).view(len(prompt), -1, 3 * d)
        kp, vp = qkv_p[..., d:2 * d].transpose(0, 1), qkv_p[..., 2 * d:].transpose(0, 1)
    else:
        d, width = module.head_dim, module.embed_dim
        q = module.c_attn(hidden)[..., :width].view(B, T, -1, d).transpose(1, 2)
        kp = module.c_attn(prompt)[..., width:2 * width].view(len(prompt), -1, d).transpose(0, 1)
        vp = module.c_attn(prompt)[..., 2 * width:].view(len(prompt), -1, d).transpose(0, 1)
    if kwargs.get("position_embeddings") is not None:
        cos, sin = kwargs["position_embeddings"]
        q, _ = sys.modules[type(module).__module__].apply_rotary_pos_emb(q, q, cos, sin)
    heads = q.shape[1]
    kp = kp.repeat_interleave(heads // kp.shape[0], 0)
    vp = vp.repeat_interleave(heads // vp.shape[0], 0)
    scores = torch.einsum("bhtd,hkd->bhtk", q, kp) * module.scaling
    term = torch.einsum("bhtk,hkd->bhtd", scores.softmax(-1), vp) * gate.view(1, -1, 1, 1)
    return term.transpose(1, 2).reshape(B, T, heads * d)


def _output_weight(module):
    for name in ("o_proj", "dense"):
        if hasattr(module, name):
            return getattr(module, name).weight.T
    return module.c_proj.weight  # GPT-2's Conv1D keeps [in, out]


@pytest.mark.parametrize("gate", ["per_head", "scalar"])
@pytest.mark.parametrize("family", FAMILIES)
def test_random_gates_match_a_plain_reference(family, gate):
    x = _inputs()
    adapted = _adapted(family, gate=gate, seed=0)
    randomise(adapted, scale=1.0)
    ours = adapted(x).logits

    reference = tiny_model(family, seed=0)
    adapters = {m.layer_idx: m.adaption_prompt for m in adapted.modules() if hasattr(m, "adaption_prompt")}
    handles = []
    for module in reference.modules():
        if getattr(module, "layer_idx", None) in adapters and hasattr(module, "config") and not hasattr(module, "mlp"):
            a = adapters[module.layer_idx]

            def hook(mod, args, kwargs, output, a=a):
                hidden = kwargs.get("hidden_states", args[0] if args else None)
                term = _reference_term(mod, hidden, kwargs, a.prompt, a.gate.expand(mod.config.num_attention_heads
                                       if hasattr(mod.config, "num_attention_heads") else mod.config.n_head))
                return (output[0] + term @ _output_weight(mod),) + tuple(output[1:])

            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    assert len(handles) == 2
    expected = reference(x).logits
    rel = (ours - expected).norm() / expected.norm()
    assert rel <= 1e-5
    for h in handles:
        h.remove()
    assert (ours - reference(x).logits).abs().max() > 1e-3  # the adapter really changed the output


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_cache_equals_without(family):
    adapted = _adapted(family)
    randomise(adapted, scale=1.0)
    x = _inputs(batch=2, length=6)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(x))
    with torch.no_grad():
        cached = adapted.generate(x, use_cache=True, **kw)
        plain = adapted.generate(x, use_cache=False, **kw)
    assert torch.equal(cached, plain)


def test_adapter_keys_values_computed_once_while_generating():
    adapted = _adapted("llama", layers=1)
    randomise(adapted, scale=1.0)
    adapter = next(m.adaption_prompt for m in adapted.modules() if hasattr(m, "adaption_prompt"))
    calls = []
    handle = adapter.spec.module.k_proj.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = _inputs(batch=1, length=5)
    with torch.no_grad():
        adapted.generate(x, max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(x))
    handle.remove()
    prompt_calls = [n for n in calls if n == adapter.prompt.shape[0]]
    assert len(prompt_calls) == 1  # the K prompt rows went through k_proj once, not once per token


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_adapter_and_nothing_else(family):
    adapted = _adapted(family)
    x = _inputs()
    adapted.train()
    loss = F.cross_entropy(adapted(x).logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
    loss.backward()
    trainable = trainable_state_dict(adapted)
    assert trainable and all(".adaption_prompt." in n for n in trainable)
    for name, p in adapted.named_parameters():
        if name in trainable:
            assert p.grad is not None
        else:
            assert p.grad is None, name
    gates = [p for n, p in trainable.items() if n.endswith("gate")]
    assert all(g.grad.abs().sum() > 0 for g in gates)  # zero gates still receive gradient


def test_trainable_parameter_count_is_L_K_hidden_plus_L_heads():
    adapted = _adapted("llama", layers=3, length=5)
    assert count_trainable(adapted) == 3 * 5 * 48 + 3 * 6
    scalar = _adapted("gpt2", layers=2, length=4, gate="scalar")
    assert count_trainable(scalar) == 2 * 4 * 48 + 2


def test_too_many_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="has 3 layers"):
        _adapted("llama", layers=4)


def test_tanh_gate_and_detach_restore_the_base():
    model = tiny_model("qwen2")
    x = _inputs()
    base = model(x).logits
    adapted = gt.attach(model, gt.LlamaAdapterConfig(layers=3, length=2, tanh_gate=True))
    randomise(adapted, scale=1.0)
    assert not torch.allclose(adapted(x).logits, base)
    restored = gt.detach(adapted)
    assert torch.equal(restored(x).logits, base)
    assert restored.config._attn_implementation == "sdpa"
