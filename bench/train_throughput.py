"""Training throughput: groundtune's step vs Hugging Face Trainer + peft, same model, data, method, precision.

Both train LoRA (r=1, alpha=1, q/k/v/o) on SmolLM2-135M-Instruct over the shipped doc2dial grounded samples with
bf16 autocast, batch 4, AdamW, clipping 1.0. The difference is the loop: groundtune left-pads and computes the
LM head only on answer positions; Trainer computes logits for every position. Each side runs in its own
subprocess so its peak RSS is its own. The last line is one JSON object.

    python bench/train_throughput.py [--steps 8 --warmup 2 --batch 4 --precision bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _peak_rss_mb() -> float:
    # VmHWM is this process's own high-water mark (ru_maxrss after fork+exec can include the parent's).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(tokenizer):
    from groundtune.demo import demo_config
    from groundtune.pipeline import load_samples

    train, _ = load_samples(demo_config().data, tokenizer, verbose=False)
    return train


def worker(kind: str, steps: int, warmup: int, batch: int, precision: str) -> dict:
    import torch

    import groundtune as gt
    from groundtune.data.collate import encode

    torch.manual_seed(0)
    model, tok = gt.load_model()
    samples = _samples(tok)
    encoded = [encode(tok, s, 1024, 64) for s in samples]
    need = (steps + warmup) * batch
    encoded = (encoded * (need // len(encoded) + 1))[:need]
    tokens = sum(len(e["input_ids"]) for e in encoded[warmup * batch:])
    bf16 = precision == "bf16"

    if kind == "ours":
        from groundtune.config import TrainConfig
        from groundtune.methods import detach
        from groundtune.train import train

        cfg = TrainConfig(method={"method": "lora", "r": 1, "alpha": 1}, output_dir=f"/tmp/gt-bench-{os.getpid()}",
                          lr=3e-4, max_steps=warmup, batch_size=batch, precision=precision, save_every=10**9)
        # The real trainer twice, `warmup` steps then `warmup + steps`: the difference is the timed part.
        start = time.perf_counter()
        train(cfg, samples, model=model, tokenizer=tok, progress=False)
        t_warm = time.perf_counter() - start
        model = detach(model)
        cfg.output_dir += "-full"
        cfg.max_steps = warmup + steps
        start = time.perf_counter()
        train(cfg, samples, model=model, tokenizer=tok, progress=False)
        elapsed = (time.perf_counter() - start) - t_warm
    else:
        import peft
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        model = peft.get_peft_model(model, peft.LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        args = TrainingArguments(output_dir=f"/tmp/hf-bench-{os.getpid()}", per_device_train_batch_size=batch,
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
    # Both count every real token of every timed batch: Trainer reads `encoded` in order (sequential sampler), ours
    # walks a seeded permutation of the samples.
    if kind == "ours":
        tokens = _ours_tokens(samples, tok, steps, warmup, batch)
    return {"kind": kind, "seconds": elapsed, "tokens": tokens, "peak_rss_mb": _peak_rss_mb()}


def _ours_tokens(samples, tok, steps, warmup, batch) -> int:
    """Real tokens in the batches our trainer timed (it walks a seeded permutation of the samples)."""
    from groundtune.data.collate import encode
    from groundtune.train import _epoch_order

    encoded = [encode(tok, s, 1024, 64) for s in samples]
    seen, epoch, total = 0, 0, 0
    batches_per_epoch = -(-len(encoded) // batch)
    while seen < warmup + steps:
        order = _epoch_order(len(encoded), 42, epoch)
        for b in range(batches_per_epoch):
            if seen >= warmup + steps:
                break
            if seen >= warmup:
                total += sum(len(encoded[j]["input_ids"]) for j in order[b * batch:(b + 1) * batch])
            seen += 1
        epoch += 1
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.batch, args.precision)))
        return
    results = {}
    for kind in ("ours", "hf"):
        cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--precision", args.precision]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[kind] = json.loads(out)
        r = results[kind]
        print(f"{kind:>4}: {r['tokens'] / r['seconds']:.0f} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    tps = {k: r["tokens"] / r["seconds"] for k, r in results.items()}
    print(json.dumps({
        "method": "lora r=1 alpha=1 q/k/v/o", "precision": args.precision, "batch": args.batch, "steps": args.steps,
        "tokens_per_s": tps, "tokens_per_s_ratio_vs_hf": tps["ours"] / tps["hf"],
        "peak_rss_mb": {k: r["peak_rss_mb"] for k, r in results.items()},
        "peak_rss_ratio_vs_hf": results["ours"]["peak_rss_mb"] / results["hf"]["peak_rss_mb"],
    }))


if __name__ == "__main__":
    main()
