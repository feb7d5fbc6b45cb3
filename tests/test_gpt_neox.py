"""The Polyglot-Ko path: a GPT-NeoX model with Polyglot's tokenizer conventions (eos <|endoftext|>, no pad, no BOS),
padding, EOS-terminated answers, and LLaMA-Adapter / LoRA training and generation on it."""

import pytest
import torch

import groundtune
from groundtune.config import DataConfig, GenerationConfig, TrainConfig
from groundtune.data import asset_path, instruction_samples
from groundtune.data.collate import IGNORE_INDEX, Collator, encode
from groundtune.generate import generate
from groundtune.methods import config_to_dict
from groundtune.models import load_model
from groundtune.train import answer_loss, train
from tiny_korean import EOS, polyglot_tokenizer, tiny_for

KOALPACA = asset_path("koalpaca/ko_alpaca_data_first100.json")


@pytest.fixture(scope="module")
def samples():
    tokenizer = polyglot_tokenizer()
    samples, report = instruction_samples(KOALPACA, "koalpaca")
    assert report.kept == 100
    # short records keep the tiny model's sequences (byte-level Hangul is long) and the test fast
    return sorted(samples, key=lambda s: len(tokenizer(s.prompt + s.answer)["input_ids"]))[:8]


def test_polyglot_conventions_survive_loading(tmp_path):
    tokenizer = polyglot_tokenizer()
    assert tokenizer.eos_token == EOS and tokenizer.pad_token is None and tokenizer.bos_token is None
    ids = tokenizer("안녕하세요")["input_ids"]
    assert tokenizer.eos_token_id not in ids  # nothing added at either end
    tiny_for("gpt_neox", tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded = load_model(tmp_path)
    assert model.config.model_type == "gpt_neox"
    assert loaded.pad_token == EOS and loaded.pad_token_id == loaded.eos_token_id  # pad = eos, as Polyglot expects
    assert loaded("안녕하세요")["input_ids"] == ids


def test_answers_end_with_eos_which_stays_supervised_although_pad_is_eos(samples):
    tokenizer = polyglot_tokenizer()
    eos = tokenizer.eos_token_id
    row = encode(tokenizer, samples[0])
    prompt_len = len(tokenizer(samples[0].prompt)["input_ids"])
    assert row["input_ids"][0] != eos and row["input_ids"][-1] == eos
    assert row["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len and row["labels"][-1] == eos
    batch = Collator(tokenizer)(samples[:3])
    for i in range(3):
        real = batch["attention_mask"][i].bool()
        assert (batch["input_ids"][i][~real] == eos).all()  # left padding with eos ...
        assert (batch["labels"][i][~real] == IGNORE_INDEX).all()  # ... that is never a target
        assert batch["labels"][i][-1] == eos and real[-1]  # while the answer's own eos is
        assert batch["position_ids"][i][real].tolist() == list(range(int(real.sum())))


@pytest.mark.parametrize("method,lr", [(groundtune.LlamaAdapterConfig(layers=2, length=4), 1e-1),
                                       (groundtune.LoraConfig(r=4), 2e-2)])
def test_methods_train_and_generate_on_gpt_neox(tmp_path, samples, method, lr):
    tokenizer = polyglot_tokenizer()
    base = tiny_for("gpt_neox", tokenizer)
    batch = Collator(tokenizer)(samples)
    with torch.no_grad():
        before = answer_loss(groundtune.attach(tiny_for("gpt_neox", tokenizer), method), batch).item()
        assert before == pytest.approx(answer_loss(base, batch).item(), abs=1e-5)  # zero-initialised: base output

    cfg = TrainConfig(model=None, method=config_to_dict(method), data=DataConfig(format="alpaca", max_prompt_tokens=256,
                                                                 max_answer_tokens=64),
                      output_dir=str(tmp_path / "run"), lr=lr, max_steps=10, batch_size=4, warmup_ratio=0.1,
                      precision="fp32", save_every=100, seed=0)
    result = train(cfg, samples, model=base, tokenizer=tokenizer, progress=False)
    with torch.no_grad():
        after = answer_loss(result.model, batch).item()
    assert after < before - 0.2, (before, after)

    prompts = [s.prompt for s in samples[:3]]
    gen = GenerationConfig(max_new_tokens=6, batch_size=3)
    outputs = generate(result.model, tokenizer, prompts, gen, progress=False)
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)
    # the saved folder reproduces the trained model on a fresh base
    reloaded = groundtune.load_adapter(tiny_for("gpt_neox", tokenizer), result.adapter_dir)
    assert generate(reloaded, tokenizer, prompts, gen, progress=False) == outputs


def test_left_padded_generation_matches_one_prompt_at_a_time(samples):
    tokenizer = polyglot_tokenizer()
    model = groundtune.attach(tiny_for("gpt_neox", tokenizer), groundtune.LlamaAdapterConfig(layers=3, length=4))
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gate") and isinstance(module.gate, torch.nn.Parameter):
                module.gate.normal_(0, 0.5)  # a working adapter, not the zero-initialised no-op
    by_length = {len(tokenizer(s.prompt)["input_ids"]): s.prompt for s in samples}
    prompts = [by_length[n] for n in sorted(by_length)[:3]]
    assert len(prompts) == 3  # three lengths: real padding
    gen = GenerationConfig(max_new_tokens=8, batch_size=3)
    batched = generate(model, tokenizer, prompts, gen, progress=False)
    alone = [generate(model, tokenizer, [p], gen, progress=False)[0] for p in prompts]
    assert batched == alone and any(batched)
