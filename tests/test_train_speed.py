"""The training-speed levers change no result: frozen weights cast to bf16 once (models.frozen_weights_in) train
exactly as bf16 autocast does, a bf16 run resumes bit for bit, and length-grouped batches (data/order.py) hold
every example once, with less padding, in an order fixed by (seed, epoch)."""

import pytest
import torch

import groundtune as gt
from groundtune.config import TrainConfig
from groundtune.data.order import batches
from groundtune.models import bf16_supported, frozen_weights_in
from groundtune.train import AnswerTask, Schedule, fit, train
from tiny import tiny_model, tiny_samples, tiny_tokenizer

METHODS = {"lora": gt.LoraConfig(r=2), "llama_adapter": gt.LlamaAdapterConfig(layers=2, length=3),
           "prompt_tuning": gt.PromptTuningConfig(length=3)}


def _fit(method, frozen_bf16: bool):
    torch.manual_seed(0)
    model = gt.attach(tiny_model("llama"), METHODS[method])
    task = AnswerTask(tiny_tokenizer(), tiny_samples(12), None, None, seed=3)
    schedule = Schedule(lr=2e-2, batch_size=4, max_steps=5, precision="bf16", frozen_bf16=frozen_bf16)
    result = fit(model, task, schedule, progress=False)
    trained = {n: p.detach().clone() for n, p in result.model.named_parameters() if p.requires_grad}
    return [r["loss"] for r in result.losses], trained, result.model


@pytest.mark.parametrize("method", list(METHODS))
def test_casting_frozen_weights_once_trains_exactly_as_autocast(method):
    losses, trained, model = _fit(method, frozen_bf16=True)
    ref_losses, ref_trained, _ = _fit(method, frozen_bf16=False)
    assert losses == ref_losses
    assert trained.keys() == ref_trained.keys()
    for name in trained:
        assert torch.equal(trained[name], ref_trained[name]), name
    # the base is fp32 again afterwards, its weights the very tensors it had
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_frozen_weights_in_swaps_only_frozen_linear_weights_and_puts_the_originals_back():
    model = gt.attach(tiny_model("llama"), gt.LoraConfig(r=2))
    before = {n: p for n, p in model.named_parameters()}
    with frozen_weights_in(model, torch.bfloat16) as swapped:
        assert swapped == 3 * 7  # q, k, v, o, gate, up, down in each of 3 layers; not the tied LM head
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        assert all(dtypes[n] == torch.float32 for n, p in before.items() if p.requires_grad)
        assert dtypes["base_model.model.model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
        assert model.get_output_embeddings().weight.dtype == torch.float32
    assert all(p is before[n] for n, p in model.named_parameters())


def test_a_bf16_run_resumes_bit_for_bit(tmp_path):
    def cfg(name):
        return TrainConfig(method={"method": "lora", "r": 2}, output_dir=str(tmp_path / name), lr=2e-2, max_steps=6,
                           batch_size=4, save_every=3, precision="bf16", seed=5)

    whole = train(cfg("whole"), tiny_samples(16), model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                  progress=False)
    train(cfg("cut"), tiny_samples(16), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False,
          stop_after=3)
    resumed = train(cfg("cut"), tiny_samples(16), model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                    progress=False, resume=True)
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in whole.losses]
    from safetensors.torch import load_file

    a, b = load_file(whole.adapter_dir / "adapter_model.safetensors"), load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_length_grouped_batches_hold_every_example_once_with_less_padding():
    lengths = [int(x) for x in torch.randint(10, 400, (230,), generator=torch.Generator().manual_seed(0))]

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    plain, grouped = batches(lengths, 4, seed=1, epoch=0), batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert sorted(i for b in grouped for i in b) == list(range(230))
    assert padding(grouped) < padding(plain) / 5
    assert grouped == batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert grouped != batches(lengths, 4, seed=1, epoch=1, group_by_length=True)
    # not sorted from the longest batch to the shortest: the batches are shuffled after grouping
    longest = [max(lengths[i] for i in b) for b in grouped]
    assert longest != sorted(longest, reverse=True)


def test_bf16_support_is_a_yes_or_no():
    assert isinstance(bf16_supported(), bool)
    assert bf16_supported("meta") is False


def test_group_by_length_is_a_setting_a_resume_checks_and_older_checkpoints_lack():
    from dataclasses import asdict

    from groundtune.train import resume_differences

    cfg = TrainConfig(output_dir="x")
    saved = asdict(cfg)
    del saved["group_by_length"]  # written before the setting existed: those runs were not grouped
    assert resume_differences(saved, cfg) == []
    grouped = TrainConfig(output_dir="x", group_by_length=True)
    assert resume_differences(saved, grouped) == ["group_by_length: None -> True"]
    assert resume_differences(asdict(cfg), grouped) == ["group_by_length: False -> True"]
