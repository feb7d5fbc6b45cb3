"""Chat Vector on real weights: does θ_cp + w (θ_chat − θ_base) carry the chat side's skill into the CP model?

    python scripts/chat_vector_check.py --steps 30 --threads 1 --workdir runs/chat_vector

Gemma 3 270M base is θ_base. Two LoRA adapters (r=8, alpha=16, attention projections) are trained on the frozen
base for `--steps` steps of 4 and merged into full float32 checkpoints with peft's merge_and_unload:
"chat" = base + LoRA on the first 88 shipped KoAlpaca records (instruction following, the chat side) and
"CP" = base + LoRA on the shipped 2,000 derived NSMC training reviews (the other task: ` 긍정` / ` 부정` after
`문장의 긍정, 부정을 분류하세요. (문장) 정답:`). The three are saved as safetensors; `groundtune merge chat-vector`
(`--target cp --chat chat --base base --ratio w`) writes the merged model at each w in `--ratios`. Every model is
scored by its held-out answer-token loss on both tasks: the last 12 shipped KoAlpaca records (never trained on)
and the first `--nsmc-n` NSMC-derived test reviews (disjoint from the training file), plus NSMC accuracy by label
likelihood on those reviews. The claim checked: at w=1 the merged model's KoAlpaca loss beats the CP model's
(w=0 is the CP model itself). Prints a table and one JSON line; writes results.json to --workdir.
`--chat-adapter` / `--cp-adapter` reuse LoRA folders trained elsewhere instead of training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HELD_OUT = 12  # the demo's held-out KoAlpaca records
LORA = {"method": "lora", "r": 8, "alpha": 16}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--steps", type=int, default=30, help="LoRA steps (batch 4) for each side")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ratios", default="0,0.5,1")
    parser.add_argument("--nsmc-n", type=int, default=200, help="NSMC test reviews scored")
    parser.add_argument("--chat-adapter", type=Path, default=None)
    parser.add_argument("--cp-adapter", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("runs/chat_vector"))
    parser.add_argument("--keep", action="store_true", help="keep the saved checkpoints (about 1 GB each)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from groundtune.tasks.classify import ClassifyTask, classify, load_labelled
    from groundtune.config import DataConfig, TrainConfig
    from groundtune.data import asset_path, instruction_samples
    from groundtune.data.sample import Sample
    from groundtune.tasks.demo import held_out_loss
    from groundtune.fileio import atomic_write
    from groundtune.methods import detach
    from groundtune.methods.io import load_adapter
    from groundtune.models import load_model
    from groundtune.train import train

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(args.model, dtype="bfloat16")  # training and the base's scores; merges in float32
    ko, _ = instruction_samples(str(asset_path("koalpaca/ko_alpaca_data_first100.json")), "koalpaca",
                                tokenizer=tokenizer)
    ko_train, ko_eval = ko[:-HELD_OUT], ko[-HELD_OUT:]
    task = ClassifyTask()
    words = task.continuations()
    test_rows, _ = load_labelled(asset_path("nsmc/ratings_test_derived_1k.txt"), task)
    test_rows = test_rows[: args.nsmc_n]
    train_rows, _ = load_labelled(asset_path("nsmc/ratings_train_derived_2k.txt"), task)
    nsmc_train = [Sample(f"nsmc:{i}", task.prompt(r.text), words[r.label]) for i, r in enumerate(train_rows)]
    nsmc_eval = [Sample(f"nsmc-test:{i}", task.prompt(r.text), words[r.label]) for i, r in enumerate(test_rows)]

    def scores(net) -> dict:
        start = time.perf_counter()
        row = {"koalpaca_loss": held_out_loss(net, tokenizer, ko_eval, 64),
               "nsmc_loss": held_out_loss(net, tokenizer, nsmc_eval, 8, batch_size=16),
               "nsmc_accuracy": classify(net, tokenizer, test_rows, task, shots=0, batch_size=16,
                                         progress=False).accuracy}
        row["seconds"] = round(time.perf_counter() - start, 1)
        return row

    def lora(name, samples, given):
        nonlocal model
        if given is not None:
            return given, None
        out = work / f"lora_{name}"
        if out.exists():
            shutil.rmtree(out)
        cfg = TrainConfig(model=args.model, method=LORA, data=DataConfig(format="alpaca", max_answer_tokens=64),
                          output_dir=str(out), lr=args.lr, max_steps=args.steps, batch_size=4, warmup_ratio=0.1,
                          precision="fp32", save_every=10**9)
        start = time.perf_counter()
        result = train(cfg, samples, model=model, tokenizer=tokenizer, progress=False)
        model = detach(result.model)
        losses = [r["loss"] for r in result.losses]
        print(f"{name}: LoRA {args.steps} steps in {time.perf_counter() - start:.0f} s, training loss "
              f"{sum(losses[:5]) / len(losses[:5]):.3f} (first 5) -> {sum(losses[-5:]) / len(losses[-5:]):.3f} "
              "(last 5)", flush=True)
        return result.adapter_dir, losses

    def save_merged(adapter, folder):
        net = load_adapter(model, adapter)
        merged = net.merge_and_unload()
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        return merged

    chat_adapter, chat_losses = lora("chat", ko_train, args.chat_adapter)
    cp_adapter, cp_losses = lora("cp", nsmc_train, args.cp_adapter)
    folders = {name: work / name for name in ("base", "chat", "cp")}
    for folder in folders.values():
        if folder.exists():
            shutil.rmtree(folder)
    results = {"base": scores(model)}
    print("base", results["base"], flush=True)
    del model
    model, _ = load_model(args.model, dtype="float32")  # merges in float32, where a small LoRA update survives
    model.save_pretrained(folders["base"], safe_serialization=True)
    tokenizer.save_pretrained(folders["base"])
    del model
    # merge_and_unload changes the base weights in place: each merged model starts from a fresh load
    for name, adapter in (("chat", chat_adapter), ("cp", cp_adapter)):
        model, _ = load_model(str(folders["base"]), dtype="float32")
        merged = save_merged(adapter, folders[name])
        results[name] = scores(merged)
        print(name, results[name], flush=True)
        del merged, model
    for w in [float(r) for r in args.ratios.split(",")]:
        out = work / f"merged_w{w:g}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "groundtune", "merge", "chat-vector", "--target", str(folders["cp"]),
                        "--chat", str(folders["chat"]), "--base", str(folders["base"]), "--ratio", str(w),
                        "--out", str(out), "--overwrite"], check=True)
        merge_s = round(time.perf_counter() - start, 1)
        net, _ = load_model(str(out), dtype="float32")
        results[f"w={w:g}"] = {**scores(net), "merge_seconds": merge_s}
        print(f"w={w:g}", results[f"w={w:g}"], flush=True)
        del net
        if not args.keep:
            shutil.rmtree(out)
    if not args.keep:
        for folder in folders.values():
            shutil.rmtree(folder)

    print(f"\n{'model':<10} {'KoAlpaca loss':>14} {'NSMC loss':>10} {'NSMC acc':>9}   "
          f"({HELD_OUT} held-out KoAlpaca records, {len(test_rows)} NSMC test reviews)")
    for name, r in results.items():
        print(f"{name:<10} {r['koalpaca_loss']:>14.3f} {r['nsmc_loss']:>10.3f} {100 * r['nsmc_accuracy']:>9.2f}")
    one = results.get("w=1")
    claim = None if one is None else one["koalpaca_loss"] < results["cp"]["koalpaca_loss"]
    print(f"claim (w=1 KoAlpaca loss < CP's): {claim}")
    summary = {"model": args.model, "steps": args.steps, "lr": args.lr, "lora": LORA, "results": results,
               "claim_holds": claim, "chat_train_loss": chat_losses, "cp_train_loss": cp_losses}
    atomic_write(work / "results.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(summary, ensure_ascii=False))
    return summary


if __name__ == "__main__":
    main()
