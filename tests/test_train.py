import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import groundtune as gt
from groundtune.config import TrainConfig
from groundtune.errors import OutputError
from groundtune.data.collate import Collator
from groundtune.train import answer_loss, train
from tiny import tiny_model, tiny_samples, tiny_tokenizer

TESTS = Path(__file__).parent


def _cfg(tmp_path, **kw):
    base = dict(method={"method": "llama_adapter", "layers": 2, "length": 4}, output_dir=str(tmp_path / "run"),
                lr=5e-2, max_steps=8, batch_size=4, save_every=3, precision="fp32", warmup_ratio=0.2, seed=7)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_answer_only_loss_equals_the_full_logit_loss(family):
    model = gt.attach(tiny_model(family), gt.LoraConfig(r=2))
    tok = tiny_tokenizer()
    batch = Collator(tok)(tiny_samples(6))
    ours = answer_loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits
    full = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=-100)
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-6)


def test_training_lowers_the_loss_and_writes_a_peft_layout_adapter(tmp_path):
    cfg = _cfg(tmp_path, max_steps=16, lr=2e-2, precision="bf16", method={"method": "lora", "r": 4, "alpha": 8})
    result = train(cfg, tiny_samples(24), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False)
    first, last = result.losses[0]["loss"], sum(r["loss"] for r in result.losses[-4:]) / 4
    assert last < first - 0.15
    assert {p.name for p in result.adapter_dir.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    # only the adapter trained; the base is untouched, and runs in its own precision again (no autocast left on)
    reference = tiny_model("llama")
    base = gt.detach(result.model)
    for name, p in base.named_parameters():
        assert torch.equal(p, dict(reference.named_parameters())[name])
    x = torch.randint(2, 90, (2, 7))
    assert torch.equal(base(x).logits, reference(x).logits)


def test_lr_schedule_warms_up_then_decays(tmp_path):
    result = train(_cfg(tmp_path, max_steps=10, warmup_ratio=0.3), tiny_samples(16), model=tiny_model("llama"),
                   tokenizer=tiny_tokenizer(), progress=False)
    lrs = [r["lr"] for r in result.losses]
    peak = lrs.index(max(lrs))
    assert 1 <= peak <= 3 and lrs[-1] < lrs[peak] / 10


def test_existing_checkpoint_needs_resume(tmp_path):
    cfg = _cfg(tmp_path, max_steps=3)
    train(cfg, tiny_samples(8), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False)
    with pytest.raises(OutputError, match="--resume"):
        train(cfg, tiny_samples(8), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False)


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from groundtune.config import from_dict
    from groundtune.train import train
    from tiny import tiny_model, tiny_samples, tiny_tokenizer
    cfg = from_dict({cfg!r})
    train(cfg, tiny_samples(20), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False, stop_after=7)
    os.kill(os.getpid(), signal.SIGKILL)  # dies like a killed job: no cleanup, step 7 after the last checkpoint is lost
""")


@pytest.mark.parametrize("grad_accum", [2])  # accumulation across a kill is the harder case
def test_sigkilled_run_resumes_to_the_same_adapter(tmp_path, grad_accum):
    import dataclasses

    cfg = _cfg(tmp_path / "killed", grad_accum=grad_accum, max_steps=10)
    script = _KILLED_RUN.format(tests=str(TESTS), cfg=dataclasses.asdict(cfg))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = json.loads((tmp_path / "killed" / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6 and not (tmp_path / "killed" / "run" / "adapter").exists()

    resumed = train(cfg, tiny_samples(20), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False,
                    resume=True)
    straight = train(_cfg(tmp_path / "straight", grad_accum=grad_accum, max_steps=10), tiny_samples(20),
                     model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False)
    a, b = load_file(resumed.adapter_dir / "adapter_model.safetensors"), load_file(straight.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in straight.losses]


def test_checkpoint_holds_only_trainable_parameters(tmp_path):
    cfg = _cfg(tmp_path, max_steps=3)
    train(cfg, tiny_samples(8), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False)
    saved = load_file(tmp_path / "run" / "checkpoint" / "trainable.safetensors")
    assert saved and all(".adaption_prompt." in k for k in saved)
    assert len(saved) == 4  # 2 layers x (prompt, gate)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temporary leftovers


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-native-bf16"])
def test_auto_precision_is_bf16_only_where_the_hardware_has_it_and_a_resume_keeps_what_it_started_in(
        tmp_path, monkeypatch, native):
    """precision: auto (the default) trains in bf16 only where bf16 is native; a CPU without it (AVX2 only)
    emulates bf16 far slower than fp32, so there auto is fp32. A resumed run continues in the precision its
    checkpoint was written in, whatever this machine would pick."""
    import json

    from groundtune import models
    from groundtune.train import CHECKPOINT

    assert TrainConfig().precision == "auto"
    monkeypatch.setattr(models, "bf16_supported", lambda device="cpu": native)
    expected = "bf16" if native else "fp32"
    assert models.training_precision("auto") == (expected, models.training_precision("auto")[1])
    cfg = _cfg(tmp_path, precision="auto", max_steps=4, save_every=2)
    train(cfg, tiny_samples(16), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False, stop_after=2)
    state = json.loads((tmp_path / "run" / CHECKPOINT / "state.json").read_text())
    assert state["precision"] == expected
    monkeypatch.setattr(models, "bf16_supported", lambda device="cpu": not native)  # "another machine"
    train(cfg, tiny_samples(16), model=tiny_model("llama"), tokenizer=tiny_tokenizer(), progress=False, resume=True)
    state = json.loads((tmp_path / "run" / CHECKPOINT / "state.json").read_text())
    assert state["precision"] == expected and state["step"] == 4


def test_bf16_asked_for_on_a_cpu_without_native_bf16_is_kept_with_a_warning(monkeypatch):
    from groundtune import models

    monkeypatch.setattr(models, "bf16_supported", lambda device="cpu": False)
    with pytest.warns(UserWarning, match="no native bfloat16.*precision: auto"):
        assert models.training_precision("bf16")[0] == "bf16"
    assert models.training_precision("fp32") == ("fp32", "as asked")
    assert models.serving_dtype("auto")[0] == torch.float32
    assert models.check_dtype("auto") == torch.float32
    with pytest.warns(UserWarning, match="no native bfloat16.*--dtype auto"):  # weights asked for in bf16 too
        assert models.check_dtype("bfloat16") == torch.bfloat16
