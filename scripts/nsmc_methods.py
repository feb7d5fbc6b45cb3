"""NSMC sentiment by tuning, method against method: each method trained on NSMC training reviews, scored by
label likelihood.

(The recipe and learning-curve measurement against the encoder anchors is scripts/nsmc_tune.py.)

    python scripts/nsmc_methods.py --methods lora,llama_adapter,prompt_tuning,accept --steps 60 --n 500

The frozen base (default Gemma 3 270M, bf16) reads `문장의 긍정, 부정을 분류하세요. (문장) 정답:` and is trained
to continue with ` 긍정` / ` 부정` (answer-only loss on the label word and EOS) on the shipped 2,000 derived NSMC
training reviews (disjoint from the test file by id and text). Each method then classifies the first `--n`
shipped NSMC-derived test reviews zero-shot by label log-likelihood (groundtune.tasks.classify), as the in-context
measurement does. Prints method × trainable parameters × accuracy × training minutes and ends with one JSON line;
writes results.json and each adapter to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

METHODS = {
    "lora": {"method": "lora", "r": 8, "alpha": 16},
    "llama_adapter": {"method": "llama_adapter", "layers": 18, "length": 10},
    "prompt_tuning": {"method": "prompt_tuning", "length": 20},
    "accept": {"method": "accept", "length": 20, "max_length": 128},
}
LR = {"lora": 1e-3, "llama_adapter": 1e-2, "prompt_tuning": 3e-2, "accept": 3e-2}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m", help="model folder / .gguf / hub id / gemma3-270m")
    parser.add_argument("--methods", default="lora,llama_adapter,prompt_tuning,accept")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per method")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n", type=int, default=500, help="test reviews scored (the first n)")
    parser.add_argument("--train", type=Path, default=None, help="labelled training reviews (NSMC TSV); default: "
                        "the shipped 2,000 derived reviews")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/nsmc_methods"))
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from groundtune.tasks.classify import ClassifyTask, classify, load_labelled
    from groundtune.config import DataConfig, TrainConfig
    from groundtune.data import asset_path
    from groundtune.data.sample import Sample
    from groundtune.fileio import atomic_write
    from groundtune.methods import detach
    from groundtune.models import load_model
    from groundtune.train import train

    task = ClassifyTask()
    rows, _ = load_labelled(asset_path("nsmc/ratings_test_derived_1k.txt"), task)
    rows = rows[: args.n]
    train_rows, report = load_labelled(args.train or asset_path("nsmc/ratings_train_derived_2k.txt"), task)
    print(report)
    words = task.continuations()
    samples = [Sample(f"nsmc:{i}", task.prompt(r.text), words[r.label]) for i, r in enumerate(train_rows)]
    model, tokenizer = load_model(args.model, dtype="auto")
    results = []
    for name in names:
        out = args.output_dir / name
        if out.exists():
            shutil.rmtree(out)  # a measurement always trains afresh
        cfg = TrainConfig(model=args.model, method=METHODS[name], data=DataConfig(format="alpaca", max_answer_tokens=8),
                          output_dir=str(out), lr=LR[name], max_steps=args.steps, batch_size=args.batch_size,
                          warmup_ratio=0.1, precision="fp32", save_every=10**9)
        start, cpu = time.perf_counter(), time.process_time()
        trained = train(cfg, samples, model=model, tokenizer=tokenizer, progress=False)
        minutes, cpu_minutes = (time.perf_counter() - start) / 60, (time.process_time() - cpu) / 60
        start = time.perf_counter()
        result = classify(trained.model, tokenizer, rows, task, shots=0, batch_size=16)
        losses = [r["loss"] for r in trained.losses]
        row = {"method": name, "settings": METHODS[name], "lr": LR[name], "params": trained.trainable_params,
               "accuracy": result.accuracy, "macro_f1": result.macro_f1, "predicted": result.predicted_counts,
               "train_minutes": round(minutes, 2), "train_cpu_minutes": round(cpu_minutes, 2), "classify_minutes": round((time.perf_counter() - start) / 60, 2),
               "loss_first5": sum(losses[:5]) / len(losses[:5]), "loss_last5": sum(losses[-5:]) / len(losses[-5:])}
        print(json.dumps(row, ensure_ascii=False), flush=True)
        results.append(row)
        model = detach(trained.model)
    print(f"\n{'method':<15} {'params':>10} {'accuracy':>9} {'train min':>10} {'CPU min':>8}   ({len(rows)} test "
          f"reviews, {args.steps} steps x {args.batch_size})")
    for r in results:
        print(f"{r['method']:<15} {r['params']:>10,} {100 * r['accuracy']:>9.2f} {r['train_minutes']:>10.2f} "
              f"{r['train_cpu_minutes']:>8.2f}")
    summary = {"model": args.model, "n": len(rows), "steps": args.steps, "batch_size": args.batch_size,
               "train_reviews": len(samples), "results": results}
    atomic_write(args.output_dir / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(summary, ensure_ascii=False))
    return summary


if __name__ == "__main__":
    main()
