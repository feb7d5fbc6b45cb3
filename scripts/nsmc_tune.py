"""NSMC sentiment by tuning Gemma 3 270M: recipes x training-set sizes, on the 1,000-review derived test set.

    python scripts/nsmc_tune.py DATA --recipes words,head --sizes 500,2000 --threads 2

DATA is the NSMC data folder (it holds derived_from_raw/nsmc_like_train_40k.txt, the training pool; --train names
another file). Two recipes, both LoRA on attention and MLP (q, k, v, o, gate, up, down) of the frozen base:

- words: the seed's prompt `문장의 긍정, 부정을 분류하세요. (문장) 정답:` trained to continue with ` 긍정` / ` 부정`
  (answer-only loss), then classified by label-word log-likelihood (groundtune.tasks.classify), as `groundtune
  classify --adapter` does;
- head: transformers' sequence classifier for the family (Gemma3TextForSequenceClassification: a new linear head
  on the last token's hidden state) over the same prompt without its answer; the head trains with the LoRA.

A dev set (--dev reviews) is carved from the pool before any training set, so settings are chosen on it, never on
the test set; training sets are nested (the first 500 of a seeded shuffle are in the 2,000). Every training and dev
review is checked disjoint from the test file by id and by text (the script stops otherwise). Empty reviews and
reviews whose prompt passes --max-tokens are dropped and counted. Prints one JSON line per run (dev and test
accuracy, a 95% bootstrap interval on test, CPU and wall minutes, the load average) and a table; writes
results.json to --output-dir. --smoke: a tiny random Gemma 3 and a few shipped reviews, in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPES = ("words", "head")


def bootstrap_interval(correct: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the accuracy (resampling test reviews)."""
    import numpy as np

    hits = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), size=(resamples, len(hits)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def check_disjoint(rows, test) -> None:
    """Stop unless no row shares an id or a text with the test set."""
    ids, texts = {r.id for r in test}, {r.text for r in test}
    clash = [r for r in rows if r.id in ids or r.text in texts]
    if clash:
        sys.exit(f"{len(clash)} training/dev reviews share an id or a text with the test set (first: id {clash[0].id}); "
                 "remove them from the training file")


def split_pool(pool, test, dev_size: int, max_size: int, seed: int):
    """(dev, train order): the pool without test ids/texts (counted), shuffled with `seed`; the dev set first."""
    ids, texts = {r.id for r in test}, {r.text for r in test}
    kept = [r for r in pool if r.id not in ids and r.text not in texts]
    dropped = len(pool) - len(kept)
    random.Random(seed).shuffle(kept)
    dev, train = kept[:dev_size], kept[dev_size:dev_size + max_size]
    check_disjoint(dev + train, test)
    return dev, train, dropped


def drop_unfit(rows, task, tokenizer, max_tokens: int, drops: dict):
    """Rows whose prompt fits `max_tokens`; the others counted in `drops` under "too_long"."""
    kept = []
    for r in rows:
        if len(tokenizer(task.prompt(r.text))["input_ids"]) > max_tokens:
            drops["too_long"] = drops.get("too_long", 0) + 1
        else:
            kept.append(r)
    return kept


def run_words(model_name, train_rows, dev, test, task, args, out: Path, seed: int):
    """LoRA trained to write the label word; classified by label-word log-likelihood."""
    from groundtune.config import DataConfig, TrainConfig
    from groundtune.methods import detach
    from groundtune.models import load_model
    from groundtune.tasks.classify import classify, label_samples
    from groundtune.train import train

    model, tokenizer = load_model(model_name, dtype=args.dtype)
    samples = label_samples(tokenizer, task, train_rows)  # refuses labels whose tokens training would change
    cfg = TrainConfig(model=model_name, method={"method": "lora", "r": args.r, "alpha": 2 * args.r,
                                                "target_modules": LORA_TARGETS},
                      data=DataConfig(format="alpaca", max_answer_tokens=8), output_dir=str(out), lr=args.lr_words,
                      epochs=args.epochs, batch_size=args.batch_size, warmup_ratio=0.06, seed=seed,
                      save_every=10**9)
    trained = train(cfg, samples, model=model, tokenizer=tokenizer, progress=args.progress, overwrite=True)
    predict = lambda rows: [p["predicted"] == p["label"] for p in classify(  # noqa: E731
        trained.model, tokenizer, rows, task, shots=0, batch_size=args.eval_batch_size, progress=False).predictions]
    dev_hits, test_hits = predict(dev), predict(test)
    detach(trained.model)
    return dev_hits, test_hits, trained.trainable_params, [r["loss"] for r in trained.losses]


def run_head(model_name, train_rows, dev, test, task, args, seed: int):
    """A new linear head on the last token's hidden state, trained with LoRA on the base."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from groundtune.methods import count_trainable
    from groundtune.models import check_dtype, resolve
    from groundtune.tasks.glue import GlueConfig, GlueExample, GlueTask, encode, predict, prepare, train_classifier

    source = resolve(model_name)
    torch.manual_seed(seed)  # the new head's initialisation
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if model.config.pad_token_id is None:  # the head reads the last non-pad token: it must know the pad id
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    method = {"method": "lora", "r": args.r, "alpha": 2 * args.r, "target_modules": LORA_TARGETS}
    model = prepare(model, method)
    gtask = GlueTask("nsmc", "document", None, "label", 2, ("accuracy",))
    as_examples = lambda rows: [GlueExample(task.prompt(r.text), None, r.label) for r in rows]  # noqa: E731
    cfg = GlueConfig(task="sst2", method=method, lr=args.lr_head, head_lr=args.head_lr, epochs=args.epochs,
                     batch_size=args.batch_size, max_length=args.max_tokens, warmup_ratio=0.06)
    # bf16 autocast per training step (through fit's precision), never around the whole loop: autocast caches the
    # bf16 copies of trainable weights for as long as its context lasts, so one context around training would
    # freeze the model at its first step.
    precision = "bf16" if check_dtype(args.dtype) == torch.bfloat16 else "fp32"  # auto: bf16 only where native
    losses = train_classifier(model, tokenizer, as_examples(train_rows), gtask, cfg, seed, progress=args.progress,
                              precision=precision)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):  # inference only: no updates
        hits = lambda rows: [int(p) == r.label for p, r in zip(  # noqa: E731
            predict(model, tokenizer, encode(tokenizer, as_examples(rows), args.max_tokens), gtask,
                    batch_size=args.eval_batch_size), rows)]
        dev_hits, test_hits = hits(dev), hits(test)
    return dev_hits, test_hits, count_trainable(model), losses


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="?", help="NSMC data folder (derived_from_raw/nsmc_like_train_40k.txt)")
    parser.add_argument("--train", type=Path, default=None, help="training pool (NSMC TSV); default: DATA's 40k file")
    parser.add_argument("--test", type=Path, default=None, help="test file; default: the shipped 1,000 derived reviews")
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--recipes", default="words,head", help=f"comma-separated, of {list(RECIPES)}")
    parser.add_argument("--sizes", default="500,2000", help="training-set sizes (a learning curve)")
    parser.add_argument("--dev", type=int, default=500, help="dev reviews carved from the pool first")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = 2r)")
    parser.add_argument("--lr-words", type=float, default=5e-4)
    parser.add_argument("--lr-head", type=float, default=5e-4)
    parser.add_argument("--head-lr", type=float, default=None, help="the head's own lr (default: --lr-head)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="words: the frozen base's weights; head: bf16 autocast (fp32 weights)")
    parser.add_argument("--max-tokens", type=int, default=256, help="longer prompts are dropped and counted")
    parser.add_argument("--seed", type=int, default=0, help="dev/train split, shuffles and initialisation")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a tiny random Gemma 3 and a few shipped reviews")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/nsmc_tune"))
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not recipes or set(recipes) - set(RECIPES):
        parser.error(f"--recipes: choose from {list(RECIPES)}, got {recipes}")
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.smoke and args.data is None and args.train is None:
        parser.error("give the NSMC data folder (or --train FILE, or --smoke)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from groundtune.data import asset_path
    from groundtune.fileio import atomic_write, guard_output
    from groundtune.tasks.classify import ClassifyTask, load_labelled

    guard_output(args.output_dir, command="nsmc_tune", overwrite=True)  # a measurement always trains afresh
    task = ClassifyTask()
    model_name = args.model
    if args.smoke:
        model_name = str(tiny_gemma(args.output_dir / "tiny-gemma3"))
        args.train = args.train or asset_path("nsmc/ratings_train_derived_2k.txt")
        sizes, args.dev = [8], 4
    test, test_report = load_labelled(args.test or asset_path("nsmc/ratings_test_derived_1k.txt"), task)
    pool, pool_report = load_labelled(args.train or args.data / "derived_from_raw" / "nsmc_like_train_40k.txt", task)
    if args.smoke:
        test = test[:6]
    dev, train_order, in_test = split_pool(pool, test, args.dev, max(sizes), args.seed)
    from transformers import AutoTokenizer

    from groundtune.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(model_name))
    drops = {"in_test": in_test}
    drops_test: dict = {}
    test = drop_unfit(test, task, tokenizer, args.max_tokens, drops_test)
    dev = drop_unfit(dev, task, tokenizer, args.max_tokens, drops)
    train_order = drop_unfit(train_order, task, tokenizer, args.max_tokens, drops)
    print(f"{test_report}\n{pool_report}\npool drops {drops}, test drops {drops_test}; dev {len(dev)}, "
          f"train up to {len(train_order)}, test {len(test)}", flush=True)

    results = []
    for size in sizes:
        rows = train_order[:size]
        for recipe in recipes:
            load0 = os.getloadavg()
            start, cpu = time.perf_counter(), time.process_time()
            if recipe == "words":
                dev_hits, test_hits, params, losses = run_words(
                    model_name, rows, dev, test, task, args, args.output_dir / f"words-{size}", args.seed)
            else:
                dev_hits, test_hits, params, losses = run_head(model_name, rows, dev, test, task, args, args.seed)
            low, high = bootstrap_interval(test_hits)
            row = {"recipe": recipe, "train_examples": len(rows), "epochs": args.epochs, "params": params,
                   "lr": args.lr_words if recipe == "words" else args.lr_head,
                   "head_lr": (args.head_lr or args.lr_head) if recipe == "head" else None, "r": args.r, "dtype": args.dtype,
                   "dev_accuracy": 100 * sum(dev_hits) / max(len(dev_hits), 1),
                   "test_accuracy": 100 * sum(test_hits) / len(test_hits), "test_ci95": [100 * low, 100 * high],
                   "test_n": len(test_hits), "cpu_minutes": round((time.process_time() - cpu) / 60, 1),
                   "wall_minutes": round((time.perf_counter() - start) / 60, 1), "threads": torch.get_num_threads(),
                   "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                   "loss_first10": sum(losses[:10]) / max(len(losses[:10]), 1),
                   "loss_last10": sum(losses[-10:]) / max(len(losses[-10:]), 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
    print(f"\n{'recipe':<6} {'train':>6} {'dev':>6} {'test':>6} {'95% CI':>13} {'CPU min':>8} {'wall min':>8}  load")
    for r in results:
        print(f"{r['recipe']:<6} {r['train_examples']:>6} {r['dev_accuracy']:>6.1f} {r['test_accuracy']:>6.1f} "
              f"{r['test_ci95'][0]:>6.1f}-{r['test_ci95'][1]:<6.1f} {r['cpu_minutes']:>8} {r['wall_minutes']:>8}  "
              f"{r['loadavg_end']}")
    summary = {"model": args.model, "dev": len(dev), "test": len(test), "drops": drops, "test_drops": drops_test,
               "results": results, "smoke": args.smoke}
    atomic_write(args.output_dir / "results.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


def tiny_gemma(folder: Path) -> Path:
    """A tiny random Gemma 3 text model with a small byte-level tokenizer, saved to `folder` (--smoke only)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from groundtune.data import asset_path

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<eos>", "<bos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(asset_path("nsmc/ratings_train.txt").read_text(encoding="utf-8").splitlines(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    torch.manual_seed(0)
    config = AutoConfig.for_model("gemma3_text", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  max_position_embeddings=512, sliding_window=64,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                  bos_token_id=tokenizer.bos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    main()
