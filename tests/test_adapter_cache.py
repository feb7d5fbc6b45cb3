"""LLaMA-Adapter's k_P / gate·v_P reuse is state: every path that changes the parameters must be seen.

Each test first lets the adapter cache something (a generate() call under no_grad), then changes the
parameters in one way, and compares against a freshly attached model that holds the same values and has never
run. The reference never shares state with the model under test.
"""

import pytest
import torch

import groundtune as gt
from groundtune.methods import trainable_state_dict
from tiny import VOCAB, randomise, tiny_model

CONFIG = gt.LlamaAdapterConfig(layers=2, length=4)
GEN = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)


def _adapted(family="llama", seed=0):
    return gt.attach(tiny_model(family, seed=seed), CONFIG)


def _inputs(seed=1, batch=2, length=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=g)


def _fresh_copy(model, family="llama"):
    """A new model with the same weights (base and adapter) and dtype, which has never cached anything."""
    fresh = _adapted(family).to(next(model.parameters()).dtype)
    fresh.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    return fresh


def _generate(model, x):
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), **GEN)
    return out.sequences, torch.stack(out.scores)


def _assert_matches_fresh(model, x, family="llama"):
    fresh = _fresh_copy(model, family)
    seq, scores = _generate(model, x)
    ref_seq, ref_scores = _generate(fresh, x)
    assert torch.equal(seq, ref_seq)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, fresh(x).logits, rtol=1e-5, atol=1e-5)


def test_no_grad_eval_then_train_step_then_eval():
    model, x = _adapted(), _inputs()
    randomise(model, scale=1.0)
    _generate(model, x)  # an evaluation: the adapter caches within it
    model.train()
    loss = model(input_ids=x, labels=x).loss
    loss.backward()  # raised "element 0 of tensors does not require grad" when the no-grad copy was served
    grads = {n: p.grad for n, p in trainable_state_dict(model).items()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    before = _generate(model, x)[1]
    torch.optim.SGD(trainable_state_dict(model).values(), lr=1.0).step()
    model.eval()
    after = _generate(model, x)[1]
    assert not torch.allclose(before, after)  # the step is visible to the next evaluation
    _assert_matches_fresh(model, x)


def test_periodic_evaluation_inside_training_keeps_the_adapter_learning():
    model, x = _adapted(), _inputs(batch=4)
    randomise(model, scale=1.0)  # non-zero gates, so that the prompts get gradient from the first step
    # A second trainable part: had the adapter been fed cached (detached) tensors, the loss would still have a
    # graph and backward would pass while the adapter silently stopped learning.
    model.lm_head.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    adapter_names = [n for n in trainable_state_dict(model) if ".adaption_prompt." in n]
    losses = []
    for step in range(4):
        model.train()
        previous = {n: p.detach().clone() for n, p in model.named_parameters() if n in adapter_names}
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        for name, p in model.named_parameters():
            if name in adapter_names:
                assert p.grad is not None and p.grad.abs().sum() > 0, (step, name)
                assert not torch.equal(p.detach(), previous[name]), (step, name)
        model.eval()
        _generate(model, x)  # the periodic evaluation
    assert losses[-1] < losses[0]
    _assert_matches_fresh(model, x)


def test_data_edit_is_seen():
    model, x = _adapted(), _inputs()
    with torch.no_grad():
        zero_gate_logits = model(x).logits
    _generate(model, x)
    for p in trainable_state_dict(model).values():
        p.data.normal_()  # bumps no version counter
    with torch.no_grad():
        assert not torch.allclose(model(x).logits, zero_gate_logits)
    _assert_matches_fresh(model, x)


@pytest.mark.parametrize("assign", [False, True])
def test_load_state_dict_is_seen(assign):
    model, x = _adapted(), _inputs()
    randomise(model, seed=3, scale=1.0)
    _generate(model, x)
    other = _adapted()
    randomise(other, seed=4, scale=1.0)
    new = {k: v.detach().clone() for k, v in trainable_state_dict(other).items()}
    model.load_state_dict(new, strict=False, assign=assign)
    if assign:  # replaced Parameter objects: their version counters restart at zero
        assert all(trainable_state_dict(model)[k] is not None for k in new)
    _assert_matches_fresh(model, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, other(x).logits, rtol=1e-5, atol=1e-5)


def test_dtype_switch_is_seen():
    model, x = _adapted(), _inputs()
    randomise(model, scale=1.0)
    _generate(model, x)
    model.to(torch.bfloat16)
    _assert_matches_fresh(model, x)
    model.to(torch.float32)
    _assert_matches_fresh(model, x)


def test_adapter_swap_is_seen(tmp_path):
    first, x = _adapted(), _inputs()
    randomise(first, seed=3, scale=1.0)
    gt.save_adapter(first, tmp_path / "a")
    second = _adapted()
    randomise(second, seed=4, scale=1.0)
    gt.save_adapter(second, tmp_path / "b")
    model = gt.load_adapter(tiny_model("llama"), tmp_path / "a")
    seq_a = _generate(model, x)[1]
    model = gt.load_adapter(model, tmp_path / "b")
    seq_b = _generate(model, x)[1]
    assert not torch.allclose(seq_a, seq_b)
    torch.testing.assert_close(seq_b, _generate(second, x)[1], rtol=1e-5, atol=1e-5)


def test_reused_only_within_one_decoding_run():
    model, x = _adapted(), _inputs(batch=1)
    randomise(model, scale=1.0)
    adapter = next(m.adaption_prompt for m in model.modules() if hasattr(m, "adaption_prompt"))
    rows = []
    handle = adapter.spec.module.k_proj.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    _generate(model, x)
    _generate(model, x)
    with torch.no_grad():
        model(x)
    handle.remove()
    # once per generate() call, once for the plain forward: never carried from one run to the next
    assert rows.count(CONFIG.length) == 3
    assert adapter.scope.kv_cache is None  # nothing is held between calls
