"""Training throughput: groundtune's step vs Hugging Face Trainer + peft, same model, data, method, precision.

Both train LoRA (r=1, alpha=1, q/k/v/o) on SmolLM2-135M-Instruct over the shipped doc2dial grounded samples with
bf16 autocast, batch 4, AdamW, clipping 1.0. The difference is the loop: groundtune left-pads and computes the
LM head only on answer positions; Trainer computes logits for every position. Each side runs in its own
subprocess so its peak RSS is its own. Tokens are counted the same way for both: the real (unpadded) tokens of
every timed training forward, read from the attention mask by a hook on the base model. The last line is one
JSON object.

    python bench/train_throughput.py [--steps 8 --warmup 2 --batch 4 --precision bf16]
    python bench/train_throughput.py --smoke   # seconds: a tiny random Llama and a BPE tokenizer made here

--smoke runs both subprocesses on a tiny random Llama with a byte-level BPE tokenizer trained on the shipped
doc2dial files (prompts cut at 256 tokens), 2 timed steps after 1 warm-up, batch 2. Both sides need peft
(groundtune's LoRA is peft's); without it the figures are null and `skipped` says why.

JSON keys: method, precision, batch, steps, tokens_per_s, tokens_per_s_ratio_vs_hf, peak_rss_mb,
peak_rss_ratio_vs_hf, smoke, skipped
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    # VmHWM is this process's own high-water mark (ru_maxrss after fork+exec can include the parent's).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(tokenizer):
    from groundtune.tasks.demo import demo_config
    from groundtune.tasks.grounded import load_samples

    train, _ = load_samples(demo_config().data, tokenizer, verbose=False)
    return train


def _smoke_model():
    """A tiny random Llama and a byte-level BPE tokenizer trained on the shipped doc2dial files (deterministic, so
    both worker processes build the same one)."""
    from groundtune.data import asset_path

    from _smoke import tiny_llama, tiny_tokenizer

    texts = [line for name in ("doc2dial_doc.json", "doc2dial_dial_train.json")
             for line in (asset_path("doc2dial") / name).read_text(encoding="utf-8").splitlines()]
    tok = tiny_tokenizer(texts, vocab_size=512)
    return tiny_llama(vocab_size=len(tok)), tok


class TokenCounter:
    """Real tokens (attention-mask sum) of every training forward of `model` after the first `skip` of them."""

    def __init__(self, model, skip: int):
        self.skip, self.calls, self.tokens = skip, 0, 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        import torch

        if not torch.is_grad_enabled():
            return
        if self.calls >= self.skip:
            mask = kwargs.get("attention_mask")
            self.tokens += int(mask.sum()) if mask is not None else kwargs["input_ids"].numel()
        self.calls += 1


def worker(kind: str, steps: int, warmup: int, batch: int, precision: str, smoke: bool = False) -> dict:
    import torch

    import groundtune as gt
    from groundtune.data.collate import encode

    torch.manual_seed(0)
    model, tok = _smoke_model() if smoke else gt.load_model()
    max_prompt = 256 if smoke else 1024
    samples = _samples(tok)
    encoded = [encode(tok, s, max_prompt, 64) for s in samples]
    need = (steps + warmup) * batch
    encoded = (encoded * (need // len(encoded) + 1))[:need]
    bf16 = precision == "bf16"
    work = Path(tempfile.mkdtemp(prefix=f"groundtune-bench-{kind}-"))

    try:
        if kind == "ours":
            from groundtune.config import DataConfig, TrainConfig
            from groundtune.methods import detach
            from groundtune.train import train

            cfg = TrainConfig(method={"method": "lora", "r": 1, "alpha": 1}, output_dir=str(work / "warmup"),
                              data=DataConfig(max_prompt_tokens=max_prompt, max_answer_tokens=64),
                              lr=3e-4, max_steps=warmup, batch_size=batch, precision=precision, save_every=10**9)
            # The real trainer twice, `warmup` steps then `warmup + steps`: the difference is the timed part.
            start = time.perf_counter()
            train(cfg, samples, model=model, tokenizer=tok, progress=False)
            t_warm = time.perf_counter() - start
            model = detach(model)
            counter = TokenCounter(model, skip=warmup)
            cfg.output_dir = str(work / "full")
            cfg.max_steps = warmup + steps
            start = time.perf_counter()
            train(cfg, samples, model=model, tokenizer=tok, progress=False)
            elapsed = (time.perf_counter() - start) - t_warm
        else:
            counter, elapsed = hf_run(model, tok, encoded, work, steps, warmup, batch, bf16)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counter.handle.remove()
    if counter.calls != warmup + steps:
        raise RuntimeError(f"{kind}: {counter.calls} training forwards, expected {warmup + steps}")
    return {"kind": kind, "seconds": elapsed, "tokens": counter.tokens, "peak_rss_mb": _peak_rss_mb()}


def hf_run(model, tok, encoded, work, steps, warmup, batch, bf16):
    """Trainer + peft LoRA over `encoded` in order; returns (token counter, seconds of the timed steps)."""
    import peft
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    counter = TokenCounter(model, skip=warmup)
    model = peft.get_peft_model(model, peft.LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    args = TrainingArguments(output_dir=str(work / "hf"), per_device_train_batch_size=batch,
                             max_steps=warmup + steps, learning_rate=3e-4, lr_scheduler_type="cosine",
                             warmup_steps=0.1, max_grad_norm=1.0, bf16=bf16, use_cpu=True, report_to=[],
                             save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
                             disable_tqdm=True, seed=0, train_sampling_strategy="sequential")
    data = [dict(e) for e in encoded]
    marks = {}

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup:
                marks["start"] = time.perf_counter()

    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()],
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    trainer.train()
    elapsed = time.perf_counter() - marks["start"]
    return counter, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--smoke", action="store_true", help="seconds-long run on a tiny random Llama (same code path)")
    ap.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.batch = 2, 1, 2
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.batch, args.precision, args.smoke)))
        return
    summary = {"method": "lora r=1 alpha=1 q/k/v/o", "precision": args.precision, "batch": args.batch,
               "steps": args.steps, "tokens_per_s": None, "tokens_per_s_ratio_vs_hf": None, "peak_rss_mb": None,
               "peak_rss_ratio_vs_hf": None, "smoke": args.smoke, "skipped": {}}
    if importlib.util.find_spec("peft") is None:
        summary["skipped"] = {"ours": "peft is not installed (groundtune's LoRA is peft's)",
                              "hf": "peft is not installed"}
        print(json.dumps(summary))
        return
    results = {}
    for kind in ("ours", "hf"):
        cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--precision", args.precision] + (["--smoke"] if args.smoke else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"the {kind} worker failed:\n{proc.stderr[-3000:]}")
        results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[kind]
        print(f"{kind:>4}: {r['tokens']} tokens in {r['seconds']:.2f}s: {r['tokens'] / r['seconds']:.0f} tokens/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    tps = {k: r["tokens"] / r["seconds"] for k, r in results.items()}
    summary.update({
        "tokens_per_s": tps, "tokens_per_s_ratio_vs_hf": tps["ours"] / tps["hf"],
        "peak_rss_mb": {k: r["peak_rss_mb"] for k, r in results.items()},
        "peak_rss_ratio_vs_hf": results["ours"]["peak_rss_mb"] / results["hf"]["peak_rss_mb"],
    })
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
