"""The embedded SmolLM2-135M-Instruct on shipped doc2dial turns: a few real training steps, save, reload, generate."""

import pytest
import torch

import groundtune as gt
from groundtune.tasks.demo import demo_config
from groundtune.generate import generate
from groundtune.tasks.grounded import load_samples
from groundtune.train import train

pytestmark = pytest.mark.slow


def test_real_model_trains_saves_reloads_and_generates(tmp_path):
    cfg = demo_config(str(tmp_path / "run"), steps=3)
    cfg.method = {"method": "llama_adapter", "layers": 4, "length": 10}
    cfg.data.max_document_tokens = 96
    model, tok = gt.load_model()
    train_samples, eval_samples = load_samples(cfg.data, tok, verbose=False)
    assert len(train_samples) > 100 and len(eval_samples) > 10
    x = tok(eval_samples[0].prompt, return_tensors="pt").input_ids[:, -64:]
    with torch.no_grad():
        base_logits = model(x).logits

    result = train(cfg, train_samples[:12], model=model, tokenizer=tok, progress=False)
    assert len(result.losses) == 3 and all(r["loss"] == r["loss"] for r in result.losses)  # finite
    with torch.no_grad():
        trained_logits = result.model(x).logits
    assert not torch.equal(trained_logits, base_logits)  # the gates moved off zero

    base = gt.detach(result.model)
    with torch.no_grad():
        assert torch.equal(base(x).logits, base_logits)  # the base model was never touched
    reloaded = gt.load_adapter(base, result.adapter_dir)
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, trained_logits)
    cfg.generation.max_new_tokens = 8
    outputs = generate(reloaded, tok, [s.prompt for s in eval_samples[:2]], cfg.generation, progress=False)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
