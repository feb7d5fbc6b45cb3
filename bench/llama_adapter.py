"""LLaMA-Adapter: groundtune vs peft's AdaptionPrompt, side by side in one process, on SmolLM2-135M.

Train step (batch x seq tokens, fp32 and bf16 autocast) and greedy decoding speed, plus decoding overhead over
the bare base model. Runs are interleaved (ours, peft, base, ours, ...) so machine noise hits all alike; each
figure is the median (decode ratios: the median of per-repeat ratios). In bf16, groundtune's side casts the
frozen linear weights once, as its trainer does (groundtune.models.frozen_weights_in); peft's runs plain
autocast, as its users do. Beside the train-step figures: this machine's measured bf16 and fp32 matmul peaks,
the achieved GFLOP/s from counted useful FLOPs (bench/_roofline.py; the loss here is on every position, so the
head counts at every token), the share of the peak, the padding share (0: full random rows) and the load
average. The last line is one JSON object.

    python bench/llama_adapter.py [--layers 30 --length 10 --batch 4 --seq 256 --steps 10 --new-tokens 32]
    python bench/llama_adapter.py --smoke   # seconds: a tiny random Llama, 2 layers, L=2, batch 2 x 16

Without peft, its figures are null and `skipped` says why.

JSON keys: layers, length, batch, seq, trainable_params, threads, train_step_s_fp32,
train_step_ratio_vs_peft_fp32, train_step_s_bf16, train_step_ratio_vs_peft_bf16, decode_tokens_per_s,
train_step_ratio_vs_peft, decode_speed_ratio_vs_peft, decode_overhead_vs_base, peft_decode_overhead_vs_base,
decode_overhead_vs_base_of_medians, decode_tokens_per_s_runs, matmul_peak_gflops, train_gflops,
share_of_bf16_peak, share_of_peak, padding_share, load_average, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import groundtune as gt
from _roofline import load_average, matmul_peaks, model_shape, step_flops
from _smoke import peer, tiny_llama
from groundtune.models import frozen_weights_in


def load(kind: str, layers: int, length: int, smoke: bool = False):
    model, tok = (tiny_llama(), None) if smoke else gt.load_model()
    if kind == "ours":
        model = gt.attach(model, gt.LlamaAdapterConfig(layers=layers, length=length, gate="scalar"))
    elif kind == "peft":
        import peft

        model = peft.get_peft_model(model, peft.AdaptionPromptConfig(adapter_len=length, adapter_layers=layers,
                                                                      task_type="CAUSAL_LM"))
    return model, tok


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def train_step_time(model, batch, bf16: bool, cast_once: bool = False) -> float:
    import contextlib

    opt = torch.optim.AdamW(trainable(model), lr=1e-3)
    model.train()
    cast = frozen_weights_in(model, torch.bfloat16) if bf16 and cast_once else contextlib.nullcontext()
    start = time.perf_counter()
    with cast, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


@torch.no_grad()
def decode_tokens_per_s(model, prompt, new_tokens: int) -> float:
    model.eval()
    start = time.perf_counter()
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    elapsed = time.perf_counter() - start
    return (out.shape[1] - prompt.shape[1]) * out.shape[0] / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--length", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="timed train steps per method and precision")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--decode-repeats", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="seconds-long run on a tiny random Llama (same code path)")
    args = ap.parse_args()
    if args.smoke:
        args.layers, args.length, args.batch, args.seq = 2, 2, 2, 16
        args.steps, args.new_tokens, args.decode_repeats = 1, 4, 3
    torch.manual_seed(0)

    skipped: dict[str, str] = {}
    kinds = ("ours", "peft", "base") if peer("peft", skipped) else ("ours", "base")
    models = {k: load(k, args.layers, args.length, args.smoke)[0] for k in kinds}
    n_params = {k: sum(p.numel() for p in trainable(m)) for k, m in models.items() if k != "base"}
    vocab = models["base"].config.vocab_size
    batch = torch.randint(0, vocab, (args.batch, args.seq))
    has_peft = "peft" in models

    result = {"layers": args.layers, "length": args.length, "batch": args.batch, "seq": args.seq,
              "trainable_params": n_params, "threads": torch.get_num_threads()}
    peaks = matmul_peaks(seconds=0.2 if args.smoke else 1.0)
    flops = step_flops(model_shape(models["base"]), [args.seq] * args.batch, args.batch * (args.seq - 1))
    result.update({"matmul_peak_gflops": peaks, "train_gflops": {}, "share_of_bf16_peak": {}, "share_of_peak": {},
                   "padding_share": 0.0})
    print(f"matmul peak: bf16 {peaks['bf16']:.0f} GFLOP/s, fp32 {peaks['fp32']:.0f} GFLOP/s ({load_average()})",
          flush=True)
    from groundtune.models import NO_NATIVE_BF16, bf16_supported

    precisions = [("fp32", False), ("bf16", True)]
    if not bf16_supported() and not args.smoke:  # the smoke keeps the bf16 code path running on its tiny model
        precisions = precisions[:1]
        skipped["bf16"] = NO_NATIVE_BF16
        result.update({"train_step_s_bf16": None, "train_step_ratio_vs_peft_bf16": None})
        print(f"train step bf16: skipped, {NO_NATIVE_BF16}", flush=True)
    for precision, bf16 in precisions:
        times = {k: [] for k in kinds if k != "base"}
        for k in times:  # warm-up
            train_step_time(models[k], batch, bf16, cast_once=k == "ours")
        for _ in range(args.steps):
            for k in times:
                times[k].append(train_step_time(models[k], batch, bf16, cast_once=k == "ours"))
        med = {k: statistics.median(v) for k, v in times.items()}
        gflops = {k: flops / v / 1e9 for k, v in med.items()}
        result["train_gflops"][precision] = gflops
        result["share_of_bf16_peak"][precision] = {k: v / peaks["bf16"] for k, v in gflops.items()}
        result["share_of_peak"][precision] = {k: v / peaks[precision] for k, v in gflops.items()}  # its own peak
        result[f"train_step_s_{precision}"] = med
        result[f"train_step_ratio_vs_peft_{precision}"] = med["ours"] / med["peft"] if has_peft else None
        print(f"train step {precision}: " + "  ".join(f"{k} {v:.3f}s" for k, v in med.items())
              + (f"  ratio {med['ours'] / med['peft']:.3f}" if has_peft else "")
              + "  GFLOP/s " + " ".join(f"{k} {v:.0f} ({v / peaks[precision]:.0%} of the {precision} peak)"
                                        for k, v in gflops.items())
              + f", padding 0% ({load_average()})", flush=True)

    prompt = torch.randint(0, vocab, (args.batch, 64))
    speeds = {k: [] for k in kinds}
    for k in speeds:
        decode_tokens_per_s(models[k], prompt, 4)  # warm-up
    order = list(speeds)
    for i in range(args.decode_repeats):
        shift = i % len(order)
        for k in order[shift:] + order[:shift]:  # rotate who goes first: drift hits every model alike
            speeds[k].append(decode_tokens_per_s(models[k], prompt, args.new_tokens))
    tps = {k: statistics.median(v) for k, v in speeds.items()}
    result["decode_tokens_per_s"] = tps
    print("decode tokens/s: " + "  ".join(f"{k} {v:.1f}" for k, v in tps.items()), flush=True)

    def paired(a: str, b: str) -> float | None:
        """Median over repeats of a's speed / b's speed in the same repeat: machine drift cancels out."""
        if a not in speeds or b not in speeds:
            return None
        return statistics.median(x / y for x, y in zip(speeds[a], speeds[b]))

    measured = [r for r in (result["train_step_ratio_vs_peft_fp32"], result["train_step_ratio_vs_peft_bf16"])
                if r is not None]
    result["train_step_ratio_vs_peft"] = max(measured) if measured else None  # the worse of the two precisions
    result["decode_speed_ratio_vs_peft"] = paired("ours", "peft")
    result["decode_overhead_vs_base"] = 1 / paired("ours", "base") - 1
    result["peft_decode_overhead_vs_base"] = 1 / paired("peft", "base") - 1 if has_peft else None
    result["decode_overhead_vs_base_of_medians"] = tps["base"] / tps["ours"] - 1  # the unpaired view, noisier
    result["decode_tokens_per_s_runs"] = speeds
    result["load_average"] = os.getloadavg()
    result["smoke"] = args.smoke
    result["skipped"] = skipped
    print(json.dumps(result))


if __name__ == "__main__":
    main()
