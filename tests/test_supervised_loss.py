"""The answer-only loss runs the LM head on supervised positions alone (groundtune.models.supervised_head); it
must give the loss and the gradients of the plain recipe, full-vocabulary logits at every position, for every
method (prompt methods lengthen the sequence the head sees), both paddings and the families with extra steps
between the hidden states and the logits (Gemma 3's scaled embeddings, GPT-2's Conv1D)."""

import pytest
import torch
import torch.nn.functional as F

import groundtune as gt
from groundtune.data.collate import Collator
from groundtune.train import answer_loss_sum
from tiny import randomise, tiny_model, tiny_samples, tiny_tokenizer

METHODS = {
    "lora": lambda: gt.LoraConfig(r=2),
    "llama_adapter": lambda: gt.LlamaAdapterConfig(layers=2, length=3),
    "prompt_tuning": lambda: gt.PromptTuningConfig(length=3),
    "dept": lambda: gt.DeptConfig(length=3, rank=2, max_length=16),
    "accept": lambda: gt.AcceptConfig(length=3, subspaces=4, codewords=3, scap_subspaces=2, scap_codewords=3,
                                      max_length=16),
    "bitfit": lambda: gt.BitFitConfig(),
    "full": lambda: gt.FullConfig(),
}


def _full_logits_loss(model, batch):
    """The plain recipe: logits at every position, shifted by one, cross-entropy over the supervised tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                           batch["labels"][:, 1:].reshape(-1), ignore_index=-100, reduction="sum")


def _loss_and_grads(model, batch, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("method", list(METHODS))
def test_supervised_positions_give_the_full_logits_loss_and_gradients(method, padding):
    torch.manual_seed(0)
    family = "qwen2" if method == "bitfit" else "llama"  # Llama has no biases for BitFit to train
    model = randomise(gt.attach(tiny_model(family), METHODS[method]()), seed=1, scale=0.1)
    model.train()
    batch = Collator(tiny_tokenizer(), padding_side=padding)(tiny_samples(5))
    total, count = answer_loss_sum(model, batch)
    assert int(count) == int((batch["labels"][:, 1:] != -100).sum()) > 0
    ours, ours_grads = _loss_and_grads(model, batch, lambda m, b: answer_loss_sum(m, b)[0])
    full, full_grads = _loss_and_grads(model, batch, _full_logits_loss)
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)
    assert ours_grads.keys() == full_grads.keys() and ours_grads
    for name in ours_grads:
        torch.testing.assert_close(ours_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", ["gemma3_text", "gpt2", "gpt_neox"])
def test_the_same_holds_on_other_families(family):
    model = randomise(gt.attach(tiny_model(family), gt.LoraConfig(r=2)), seed=1, scale=0.1)
    batch = Collator(tiny_tokenizer())(tiny_samples(5))
    ours, ours_grads = _loss_and_grads(model, batch, lambda m, b: answer_loss_sum(m, b)[0])
    full, full_grads = _loss_and_grads(model, batch, _full_logits_loss)
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)
    for name in ours_grads:
        torch.testing.assert_close(ours_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_head_sees_only_the_supervised_rows():
    """What the speed comes from: the head's input holds one row per supervised token, not the batch's tail."""
    model = gt.attach(tiny_model("llama"), gt.LoraConfig(r=2))
    batch = Collator(tiny_tokenizer())(tiny_samples(5))
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    answer_loss_sum(model, batch)
    handle.remove()
    assert seen == [torch.Size([int((batch["labels"][:, 1:] != -100).sum()), 1, 48])]
