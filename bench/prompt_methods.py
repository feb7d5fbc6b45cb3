"""The prompt family against full fine-tuning, LoRA and BitFit on all-MiniLM-L6-v2: MRPC and STS-B on CPU.

    python bench/prompt_methods.py --data-dir DATA   # DATA/MRPC/train.tsv, DATA/STS-B/train.tsv (GLUE layout)
    python bench/prompt_methods.py --smoke           # seconds: a tiny random BERT, 48 synthetic rows per task

Every method trains the same seeded subset of train and is scored on the same seeded dev split of train (GLUE's
dev sets stay untouched). Prompt tuning, DePT and ACCEPT get a matched budget of trainable parameters (the
task head, which every method trains, is counted apart); ACCEPT's is no larger than either's. Prints a table of
method × trainable parameters × score × CPU training time, then one JSON line with every score and count.

The anchor (T5-base, the ACCEPT paper): MRPC PT 68.1, DePT 90.7, ACCEPT 93.1, LoRA 90.1; STS-B PT 89.5,
DePT 90.8, ACCEPT 91.0. A 22M-parameter sentence encoder trained for a few CPU minutes is a much smaller
setting: compare the methods with each other, not with those numbers.

--smoke writes GLUE-layout MRPC / STS-B files of synthetic sentence pairs and a tiny random BERT (hidden 48,
MiniLM's architecture) to a temporary folder and runs every method on them, 1 epoch: a check, not a figure.
LoRA on encoders takes its target modules from peft; without peft it is left out and `skipped` says why.

JSON keys: model, train_size, dev_size, epochs, threads, wall_s, results, goal, smoke, skipped
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK_FOLDERS = {"mrpc": "MRPC", "stsb": "STS-B"}

# hidden h = 384. Matched budget, 21,504 parameters each (the task head, trained by every method, apart):
# prompt tuning 56·h; DePT 40·h + 128·12 + 12·h; ACCEPT SCPP 40·12·16 + 16·h (13,824) + SCAP 128·2·12 + 12·h (7,680).
# The table's "method params" column is counted from the model, not taken from here.
METHODS: dict[str, tuple[dict, dict]] = {
    # name: (method block, run settings)
    "full": ({"method": "full"}, {"lr": 1e-4}),
    "lora": ({"method": "lora", "r": 8, "alpha": 16}, {"lr": 1e-3}),
    "bitfit": ({"method": "bitfit"}, {"lr": 3e-3}),
    "prompt_tuning": ({"method": "prompt_tuning", "length": 56, "init": "vocab"}, {"lr": 3e-2}),
    "dept": ({"method": "dept", "length": 40, "rank": 12, "max_length": 128, "update_lr": 3e-3}, {"lr": 3e-2}),
    "accept": ({"method": "accept", "length": 40, "subspaces": 12, "codewords": 16, "scap": True,
                "scap_subspaces": 2, "scap_codewords": 12, "max_length": 128, "update_lr": 3e-3}, {"lr": 3e-2}),
}
PROMPT_METHODS = ("prompt_tuning", "dept", "accept")


def parse_sets(items: list[str]) -> dict[str, dict]:
    """--set accept.lr=1e-2 --set accept.method.codewords=8 -> {"accept": {"lr": 0.01, "method.codewords": 8}}."""
    out: dict[str, dict] = {}
    for item in items:
        name, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not eq or name not in METHODS:
            sys.exit(f"--set {item!r}: write METHOD.KEY=VALUE with METHOD one of {', '.join(METHODS)}")
        out.setdefault(name, {})[key] = yaml.safe_load(value)
    return out


SMOKE_HIDDEN = 48  # divisible by ACCEPT's 12 and 2 subspaces, as MiniLM's 384 is


def smoke_inputs(root: Path, rows: int = 48, seed: int = 0) -> Path:
    """GLUE-layout MRPC and STS-B train files of synthetic pairs, and a tiny random BERT folder; returns the model.

    Paraphrase pairs share most words, so the labels carry some signal."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(200)]
    pairs = []
    for _ in range(rows):
        a = rng.sample(words, rng.randint(5, 12))
        overlap = rng.random()
        b = [w if rng.random() < overlap else rng.choice(words) for w in a]
        pairs.append((" ".join(a), " ".join(b), overlap))
    (root / "MRPC").mkdir()
    (root / "MRPC" / "train.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{int(o > 0.5)}\t{i}\t{i + rows}\t{a}\t{b}\n" for i, (a, b, o) in enumerate(pairs)))
    (root / "STS-B").mkdir()
    (root / "STS-B" / "train.tsv").write_text(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n" + "".join(
            f"{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\t{a}\t{b}\t{5 * o:.3f}\n"
            for i, (a, b, o) in enumerate(pairs)))

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    import torch

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=SMOKE_HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)
    model_dir = root / "tiny-bert"
    BertModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, help="folder with MRPC/train.tsv and STS-B/train.tsv (required)")
    ap.add_argument("--tasks", nargs="+", default=list(TASK_FOLDERS), choices=list(TASK_FOLDERS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--train-size", type=int, default=1000, help="seeded subset of train (after the dev split)")
    ap.add_argument("--dev-size", type=int, default=500, help="records held out of train as the dev set")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--head-lr", type=float, default=3e-3, help="learning rate of the task head, every method")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="METHOD.KEY=VALUE, e.g. accept.lr=1e-2")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_prompt_methods"))
    ap.add_argument("--smoke", action="store_true", help="seconds-long run: tiny random BERT, synthetic GLUE files")
    args = ap.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            model = smoke_inputs(root)
            args.data_dir, args.out = root, root / "out"
            args.train_size, args.dev_size, args.epochs, args.batch_size, args.max_length = 16, 16, 1.0, 16, 32
            bench(args, model=str(model), model_name="tiny random BERT (smoke)", hidden=SMOKE_HIDDEN)
        return
    if args.data_dir is None:
        ap.error("--data-dir is required (or --smoke)")
    bench(args)


def bench(args, model: str | None = None, model_name: str = "all-MiniLM-L6-v2", hidden: int = 384) -> None:

    import torch

    from groundtune.tasks.glue import load_glue_config, read_tsv, run_one, split_dev, write_results

    if args.threads:
        torch.set_num_threads(args.threads)
    sets = parse_sets(args.sets)
    skipped: dict[str, str] = {}
    methods = list(args.methods)
    if "lora" in methods and importlib.util.find_spec("peft") is None:
        skipped["lora"] = "peft is not installed (groundtune takes encoder LoRA target modules from it)"
        methods.remove("lora")
    rows = []
    t_start = time.perf_counter()
    for task in args.tasks:
        path = args.data_dir / TASK_FOLDERS[task] / "train.tsv"
        data = read_tsv(path, task)
        print(data.report(path), flush=True)
        train, dev = split_dev(data.examples, args.dev_size / len(data.examples), args.seed)
        train = train[: args.train_size]  # split_dev shuffled already: a seeded subset
        print(f"{task}: train {len(train)}, dev {len(dev)} (seeded split of train, seed {args.seed})", flush=True)
        for name in methods:
            method, settings = METHODS[name]
            overrides = {"method": dict(method), **settings}
            for key, value in sets.get(name, {}).items():
                if key.startswith("method."):
                    overrides["method"][key.removeprefix("method.")] = value
                else:
                    overrides[key] = value
            cfg = load_glue_config(None, {"task": task, "model": model, "epochs": args.epochs, "batch_size": args.batch_size,
                                          "max_length": args.max_length, "head_lr": args.head_lr,
                                          "output_dir": str(args.out), "save_adapters": False, **overrides})
            row = run_one(cfg, train, dev, args.seed, progress=False)
            row["method"] = name
            row["method_params"] = row["trainable_params"] - head_params(task, hidden)
            row["lr"] = cfg.lr
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    write_results(rows, args.out)
    print()
    print(table(rows, args.tasks))
    summary = {"model": model_name, "train_size": args.train_size, "dev_size": args.dev_size,
               "epochs": args.epochs, "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - t_start, 1),
               "results": {r["task"] + "/" + r["method"]: {k: round(r[k], 2) for k in score_keys(r)} | {
                   "params": r["trainable_params"], "method_params": r["method_params"], "train_s": round(r["train_s"], 1)}
                   for r in rows}}
    summary["goal"] = goal(rows, args.tasks)
    summary.update({"smoke": args.smoke, "skipped": skipped})
    print(json.dumps(summary))


def head_params(task: str, hidden: int = 384) -> int:
    """The task head every method trains: a hidden × labels layer with its bias."""
    labels = 1 if task == "stsb" else 2
    return hidden * labels + labels


def score_keys(row: dict) -> list[str]:
    return [k for k in ("accuracy", "f1", "pearson", "spearman") if k in row]


def main_score(row: dict) -> float:
    """MRPC: mean of accuracy and F1 (GLUE's average); STS-B: mean of Pearson and Spearman."""
    keys = score_keys(row)
    return sum(row[k] for k in keys) / len(keys)


def table(rows: list[dict], tasks: list[str]) -> str:
    by = {(r["task"], r["method"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = ["method", "method params"]
    for task in tasks:
        head += [f"{task} {k}" for k in (("acc", "F1") if task != "stsb" else ("Pearson", "Spearman"))] + [f"{task} train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        first = next(by[(t, m)] for t in tasks if (t, m) in by)
        cells = [m, f"{first['method_params']:,}"]
        for task in tasks:
            r = by.get((task, m))
            if r is None:
                cells += ["—"] * 3
                continue
            cells += [f"{r[k]:.1f}" for k in score_keys(r)] + [f"{r['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal(rows: list[dict], tasks: list[str]) -> dict:
    """ACCEPT above prompt tuning and at least DePT, with no more parameters than either, per task."""
    by = {(r["task"], r["method"]): r for r in rows}
    out = {}
    for task in tasks:
        a, p, d = by.get((task, "accept")), by.get((task, "prompt_tuning")), by.get((task, "dept"))
        if not (a and p and d):
            continue
        out[task] = {"accept_above_prompt_tuning": main_score(a) > main_score(p),
                     "accept_at_least_dept": main_score(a) >= main_score(d),
                     "accept_no_more_params": a["method_params"] <= min(p["method_params"], d["method_params"])}
    return out


if __name__ == "__main__":
    main()
