"""NSMC one-shot accuracy before and after a short LLaMA-Adapter instruction tuning on KoAlpaca records.

The seed study's question at toy scale: does Korean instruction tuning help in-context sentiment classification?

    python scripts/nsmc_measure.py --koalpaca ko_alpaca_data.json --n 500 --steps 24 --threads 1

1. one-shot NSMC accuracy / macro-F1 of the base model on the first `--n` shipped NSMC-derived test reviews
   (examples drawn from the shipped genuine NSMC train rows, seeded);
2. LLaMA-Adapter (L layers, K prompt tokens) trained on KoAlpaca records in the seed's Korean template;
3. the same classification with the adapter attached.

Prints both tables and ends with one JSON line; writes results.json, the adapter, losses and loss.png to
--output-dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--koalpaca", type=Path, default=None,
                        help="KoAlpaca JSON/JSONL (instruction, input, output); default: the 100 shipped records")
    parser.add_argument("--model", default=None, help="model folder / .gguf / hub id; default: embedded SmolLM2")
    parser.add_argument("--dtype", default="auto",
                        help="weights of the frozen base: auto (bfloat16 where the CPU runs it natively, halving the "
                        "CPU time; float32 elsewhere), bfloat16 or float32 (for exactness)")
    parser.add_argument("--n", type=int, default=500, help="test reviews classified (the first n)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="k-shot example selection")
    parser.add_argument("--layers", type=int, default=30, help="LLaMA-Adapter L (top layers adapted)")
    parser.add_argument("--length", type=int, default=10, help="LLaMA-Adapter K (prompt tokens per layer)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps (batch --batch-size)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-answer-tokens", type=int, default=64)
    parser.add_argument("--classify-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a busy machine)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/nsmc_measure"))
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from groundtune.tasks.classify import ClassifyTask, classify, load_labelled
    from groundtune.config import DataConfig, TrainConfig
    from groundtune.data import asset_path, instruction_samples
    from groundtune.fileio import atomic_write
    from groundtune.models import load_model
    from groundtune.train import train

    task = ClassifyTask()
    rows, report = load_labelled(asset_path("nsmc/ratings_test_derived_1k.txt"), task)
    pool, _ = load_labelled(asset_path("nsmc/ratings_train.txt"), task)
    rows = rows[: args.n]
    koalpaca = args.koalpaca or asset_path("koalpaca/ko_alpaca_data_first100.json")
    samples, drops = instruction_samples(koalpaca, "koalpaca")
    print(drops)

    model, tokenizer = load_model(args.model, dtype=args.dtype)
    timings = {}

    def measure(net, name):
        start = time.perf_counter()
        result = classify(net, tokenizer, rows, task, shots=args.shots, pool=pool, seed=args.seed,
                          batch_size=args.classify_batch_size)
        timings[f"classify_{name}_s"] = round(time.perf_counter() - start, 1)
        print(f"[{name}] " + result.table())
        return result

    before = measure(model, "before")
    cfg = TrainConfig(model=args.model, method={"method": "llama_adapter", "layers": args.layers, "length": args.length},
                      data=DataConfig(format="alpaca", train=str(koalpaca), template="koalpaca",
                                      max_answer_tokens=args.max_answer_tokens),
                      output_dir=str(args.output_dir), lr=args.lr, max_steps=args.steps, batch_size=args.batch_size,
                      warmup_ratio=0.1, save_every=10**9)
    if (args.output_dir / "checkpoint").exists():
        shutil.rmtree(args.output_dir / "checkpoint")  # a measurement always trains afresh
    start = time.perf_counter()
    trained = train(cfg, samples, model=model, tokenizer=tokenizer)
    timings["train_s"] = round(time.perf_counter() - start, 1)
    after = measure(trained.model, "after")

    losses = [r["loss"] for r in trained.losses]
    summary = {
        "model": args.model or "SmolLM2-135M-Instruct (embedded)", "dtype": args.dtype, "threads": args.threads,
        "nsmc": {"file": "nsmc/ratings_test_derived_1k.txt", "n": len(rows), "shots": args.shots, "seed": args.seed},
        "tuning": {"data": str(koalpaca), "records": len(samples), "steps": args.steps, "batch_size": args.batch_size,
                   "samples_seen": args.steps * args.batch_size, "layers": args.layers, "length": args.length,
                   "lr": args.lr, "trainable_params": trained.trainable_params,
                   "loss_first5": sum(losses[:5]) / len(losses[:5]), "loss_last5": sum(losses[-5:]) / len(losses[-5:])},
        "before": {"accuracy": before.accuracy, "macro_f1": before.macro_f1, "predicted": before.predicted_counts},
        "after": {"accuracy": after.accuracy, "macro_f1": after.macro_f1, "predicted": after.predicted_counts},
        "timings": timings,
    }
    atomic_write(args.output_dir / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(summary, ensure_ascii=False))
    return summary


if __name__ == "__main__":
    main()
