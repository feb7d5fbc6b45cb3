"""Training throughput: groundtune's step vs Hugging Face Trainer + peft, same model, data, method, precision.

Both train LoRA (r=1, alpha=1, q/k/v/o) on SmolLM2-135M-Instruct over the shipped doc2dial grounded samples with
bf16 autocast, batch 4, AdamW, clipping 1.0. groundtune runs its own loop (groundtune.train.fit over the
trainer's AnswerTask); Hugging Face runs as its users run it: Trainer with bf16=True, DataCollatorForSeq2Seq,
its default random sampler ("hf") and its length-grouped sampler ("hf_grouped"). Each side runs in its own
subprocess so its peak RSS is its own; the sides run interleaved, round after round (ours, hf, hf_grouped, ours,
...), so load on a shared machine hits all alike, and the figures are medians over rounds with their spread
((max - min) / median of the per-round ratios).

Tokens are counted the same way for every side: the real (unpadded) tokens of every timed training forward,
read from the attention mask by a hook on the model. Beside the ratios it prints the roofline: this machine's
measured bf16 and fp32 matmul peaks, the achieved GFLOP/s from counted useful FLOPs (bench/_roofline.py says
what is counted), its share of the bf16 peak, and the padding share of the timed batches; and the load average.
The last line is one JSON object.

    python bench/train_throughput.py [--steps 12 --warmup 2 --rounds 2 --batch 4 --precision bf16]
    python bench/train_throughput.py --peers hf           # one HF side only
    python bench/train_throughput.py --smoke              # seconds: a tiny random Llama and a BPE tokenizer

Levers of groundtune's side, for measuring each on its own: --no-frozen-bf16 (autocast recasts the fp32
frozen weights in every forward, the old way), --group-by-length, --compile, --threads N.

--smoke runs the subprocesses on a tiny random Llama with a byte-level BPE tokenizer trained on the shipped
doc2dial files (prompts cut at 256 tokens), 2 timed steps after 1 warm-up, batch 2, one round. groundtune's
LoRA is peft's: without peft the figures are null and `skipped` says why.

JSON keys: method, precision, batch, steps, rounds, levers, tokens_per_s, tokens_per_s_ratio_vs_hf,
tokens_per_s_ratio_vs_hf_grouped, ratio_spread, ratios_per_round, gflops, share_of_bf16_peak, share_of_peak, padding_share,
matmul_peak_gflops, peak_rss_mb, peak_rss_ratio_vs_hf, threads, load_average, smoke, skipped
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _roofline import load_average, matmul_peaks, model_shape, padding_share, step_flops


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
    every worker process builds the same one)."""
    from groundtune.data import asset_path

    from _smoke import tiny_llama, tiny_tokenizer

    texts = [line for name in ("doc2dial_doc.json", "doc2dial_dial_train.json")
             for line in (asset_path("doc2dial") / name).read_text(encoding="utf-8").splitlines()]
    tok = tiny_tokenizer(texts, vocab_size=512)
    return tiny_llama(vocab_size=len(tok)), tok


class TokenCounter:
    """Real tokens, padding and useful FLOPs of every training forward of `model` after the first `skip`; the
    clock starts at the first counted one. Supervised tokens come from the forward's labels (Trainer passes them)
    or, where the loss is computed outside the model (groundtune), from `labels_seen`, filled by the collator."""

    def __init__(self, model, skip: int, shape: dict):
        self.skip, self.shape, self.calls = skip, shape, 0
        self.tokens, self.cells, self.flops, self.start = 0, 0, 0.0, None
        self.labels_seen = []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        import torch

        if not torch.is_grad_enabled():
            return
        labels = kwargs.get("labels")
        if labels is None and self.labels_seen:
            labels = self.labels_seen.pop(0)
        if self.calls == self.skip:
            self.start = time.perf_counter()
        if self.calls >= self.skip:
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones_like(kwargs["input_ids"])
            lengths = mask.sum(1).tolist()
            supervised = int((labels[:, 1:] != -100).sum()) if labels is not None else 0
            self.tokens += sum(lengths)
            self.cells += mask.numel()
            self.flops += step_flops(self.shape, lengths, supervised)
        self.calls += 1


def worker(kind: str, args) -> dict:
    import torch

    import groundtune as gt
    from groundtune.data.collate import encode

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = _smoke_model() if args.smoke else gt.load_model()
    shape = model_shape(model)
    max_prompt = 256 if args.smoke else 1024
    samples = _samples(tok)
    need = (args.steps + args.warmup) * args.batch
    samples = (samples * (need // len(samples) + 1))[:need]  # one epoch of exactly the steps run, for every side
    work = Path(tempfile.mkdtemp(prefix=f"groundtune-bench-{kind}-"))
    try:
        if kind == "ours":
            counter = ours_run(model, tok, samples, max_prompt, shape, args)
        else:
            encoded = [encode(tok, s, max_prompt, 64) for s in samples]
            counter = hf_run(model, tok, encoded, work, shape, args, grouped=kind == "hf_grouped")
        elapsed = time.perf_counter() - counter.start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counter.handle.remove()
    if counter.calls != args.warmup + args.steps:
        raise RuntimeError(f"{kind}: {counter.calls} training forwards, expected {args.warmup + args.steps}")
    return {"kind": kind, "seconds": elapsed, "tokens": counter.tokens, "flops": counter.flops,
            "padding_share": 1 - counter.tokens / counter.cells, "peak_rss_mb": _peak_rss_mb(),
            "threads": torch.get_num_threads()}


def ours_run(model, tok, samples, max_prompt, shape, args):
    """groundtune's loop as `groundtune train` runs it: fit() over the trainer's own AnswerTask."""
    import torch

    from groundtune.methods import attach
    from groundtune.methods.lora import LoraConfig
    from groundtune.train import AnswerTask, Schedule, fit

    model = attach(model, LoraConfig(r=1, alpha=1))
    counter = TokenCounter(model, args.warmup, shape)

    class Counted(AnswerTask):
        def collate(self, rows):
            batch = super().collate(rows)
            counter.labels_seen.append(batch["labels"])
            return batch

    task = Counted(tok, samples, max_prompt, 64, seed=0, group_by_length=args.group_by_length)
    schedule = Schedule(lr=3e-4, batch_size=args.batch, max_steps=args.warmup + args.steps, precision=args.precision,
                        save_every=10**9, frozen_bf16=not args.no_frozen_bf16)
    if args.compile:
        model = torch.compile(model, dynamic=True)
    fit(model, task, schedule, progress=False)
    return counter


def hf_run(model, tok, encoded, work, shape, args, grouped: bool):
    """Trainer + peft LoRA as its users run it; returns the token counter."""
    import peft
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = peft.get_peft_model(model, peft.LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    counter = TokenCounter(model, args.warmup, shape)
    training = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
        learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=0.1, max_grad_norm=1.0,
        bf16=args.precision == "bf16", use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
        dataloader_num_workers=0, disable_tqdm=True, seed=0,
        train_sampling_strategy="group_by_length" if grouped else "random")
    trainer = Trainer(model=model, args=training, train_dataset=[dict(e) for e in encoded], processing_class=tok,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    trainer.train()
    return counter


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per side and round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (ours, hf, hf_grouped) x rounds")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                    help="auto (groundtune's default): bf16 where the CPU runs it natively, else fp32; both sides")
    ap.add_argument("--peers", default="hf,hf_grouped", help="comma-separated: hf, hf_grouped")
    ap.add_argument("--no-frozen-bf16", action="store_true", help="lever off: autocast recasts fp32 frozen weights")
    ap.add_argument("--group-by-length", action="store_true", help="lever on: length-grouped batches (ours)")
    ap.add_argument("--compile", action="store_true", help="lever on: torch.compile(dynamic=True) (ours)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for every side (0: torch's default)")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run on a tiny random Llama (same code path)")
    ap.add_argument("--worker", choices=["ours", "hf", "hf_grouped"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.batch, args.rounds = 2, 1, 2, 1
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    if args.precision == "auto":  # resolved once here, so every worker and side trains in the same precision
        from groundtune.models import training_precision

        args.precision, why = training_precision("auto")
        print(f"precision auto: {args.precision} ({why})", flush=True)
    levers = {"frozen_bf16": not args.no_frozen_bf16, "group_by_length": args.group_by_length,
              "compile": args.compile, "threads": args.threads or None}
    peers = [p for p in args.peers.split(",") if p]
    summary = {"method": "lora r=1 alpha=1 q/k/v/o", "precision": args.precision, "batch": args.batch,
               "steps": args.steps, "rounds": args.rounds, "levers": levers, "tokens_per_s": None,
               "tokens_per_s_ratio_vs_hf": None, "tokens_per_s_ratio_vs_hf_grouped": None, "ratio_spread": None,
               "ratios_per_round": None, "gflops": None, "share_of_bf16_peak": None, "share_of_peak": None,
               "padding_share": None,
               "matmul_peak_gflops": None, "peak_rss_mb": None, "peak_rss_ratio_vs_hf": None,
               "threads": args.threads or None, "load_average": os.getloadavg(), "smoke": args.smoke, "skipped": {}}
    if importlib.util.find_spec("peft") is None:
        summary["skipped"] = {"ours": "peft is not installed (groundtune's LoRA is peft's)", "hf": "not installed"}
        print(json.dumps(summary))
        return
    peaks = matmul_peaks(seconds=0.2 if args.smoke else 1.0)
    print(f"matmul peak: bf16 {peaks['bf16']:.0f} GFLOP/s, fp32 {peaks['fp32']:.0f} GFLOP/s ({load_average()})",
          flush=True)
    forward = [f"--{k.replace('_', '-')}" for k in ("no_frozen_bf16", "group_by_length", "compile", "smoke")
               if getattr(args, k)]
    runs = {kind: [] for kind in ["ours", *peers]}
    for round_ in range(args.rounds):
        for kind in runs:
            cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--batch", str(args.batch), "--precision", args.precision,
                   "--threads", str(args.threads), *forward]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the {kind} worker failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[kind].append(r)
            print(f"round {round_ + 1} {kind:>10}: {r['tokens']} tokens in {r['seconds']:.2f}s: "
                  f"{r['tokens'] / r['seconds']:.0f} tokens/s, {r['flops'] / r['seconds'] / 1e9:.0f} GFLOP/s "
                  f"({r['flops'] / r['seconds'] / 1e9 / peaks[args.precision]:.0%} of the {args.precision} peak), padding "
                  f"{r['padding_share']:.1%}, peak RSS {r['peak_rss_mb']:.0f} MB, {r['threads']} threads "
                  f"({load_average()})", flush=True)
    tps = {k: [r["tokens"] / r["seconds"] for r in rs] for k, rs in runs.items()}
    ratios = {p: [o / h for o, h in zip(tps["ours"], tps[p])] for p in peers}
    gflops = {k: statistics.median(r["flops"] / r["seconds"] / 1e9 for r in rs) for k, rs in runs.items()}
    summary.update({
        "tokens_per_s": {k: statistics.median(v) for k, v in tps.items()},
        "tokens_per_s_ratio_vs_hf": statistics.median(ratios["hf"]) if "hf" in ratios else None,
        "tokens_per_s_ratio_vs_hf_grouped": statistics.median(ratios["hf_grouped"]) if "hf_grouped" in ratios else None,
        "ratio_spread": {p: _spread(v) for p, v in ratios.items()}, "ratios_per_round": ratios,
        "gflops": gflops, "share_of_bf16_peak": {k: v / peaks["bf16"] for k, v in gflops.items()},
        "share_of_peak": {k: v / peaks[args.precision] for k, v in gflops.items()},  # of the precision trained in
        "padding_share": {k: statistics.median(r["padding_share"] for r in rs) for k, rs in runs.items()},
        "matmul_peak_gflops": peaks,
        "peak_rss_mb": {k: max(r["peak_rss_mb"] for r in rs) for k, rs in runs.items()},
        "peak_rss_ratio_vs_hf": (max(r["peak_rss_mb"] for r in runs["ours"]) / max(r["peak_rss_mb"] for r in runs["hf"])
                                 if "hf" in runs else None),
        "threads": runs["ours"][0]["threads"], "load_average": os.getloadavg(),
    })
    for p, v in ratios.items():
        print(f"ours / {p}: {statistics.median(v):.2f}x tokens/s (per round {', '.join(f'{x:.2f}' for x in v)}; "
              f"spread {_spread(v):.0%}) ({load_average()})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
