"""The LLaMA-Adapter vs LoRA study's Table 2, held out: the shipped grid on doc2dial reading-comprehension questions.

The questions (DATA_DIR: a doc2dial documents JSON and a reading-comprehension question .jsonl) are split by
dialogue with the RAG bench's split (bench/rag.py: a hash of the dialogue id), so no dialogue is on both sides.
Each question becomes a grounded sample: a window of the gold document (--doc-tokens tokens, placed at a seeded
offset so the answer is not always in the same place), the last --history turns, the question; the answer is
the grounding span (the release has no agent replies), so the task is finding and copying the span. Answers
over --answer-tokens tokens are left out on both sides (counted).

Every cell of the grid (examples/paper_grid.yaml: LLaMA-Adapter L10/30 x K10/30 at lr 1e-2, LoRA r=1 alpha=1
q/k/v/o at 3e-4) trains on the same --steps x --batch-size training questions, one epoch, so every cell has the
same budget of training tokens (printed), then answers the same --eval-questions held-out questions. Each cell
runs in its own process (its peak RSS is its own) through the sweep, which reuses finished cells: rerun the
same command after a crash and only unfinished cells run again. --extra adds the rows beyond the paper: a
second seed for L30 K10 and LoRA, K in {1, 2, 5} at L30.

    python bench/table2.py DATA_DIR --out runs/table2      # the real grid (see docs/table2.md for its sizing)
    python bench/table2.py --smoke                         # seconds: shipped fixtures, a tiny random LM

The table (results.md in --out) is the paper's layout with each score's 95% bootstrap interval, trainable
parameters, training time, peak RSS and the paired test against the best row. The last line printed is one
JSON object:

JSON keys: data, train_questions, eval_questions, dropped_long_answers, shared_dialogues, steps, batch_size,
train_tokens, cells, failed, rows, wall_s, smoke, skipped
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import json_keys  # noqa: E402
from rag import _half as dialogue_half, _split_query, load_data  # noqa: E402  -- the RAG bench's split, reused

JSON_KEYS = json_keys(__doc__)
GRID = ROOT / "examples" / "paper_grid.yaml"
# Rows beyond the paper's five: a second seed of the two top rows, and prompt lengths below 10 at all layers.
EXTRA_RUNS = [
    {"method": {"method": "llama_adapter", "layers": 30, "length": 10}, "grid": {"lr": [1.0e-2], "seed": [43]}},
    {"method": {"method": "lora", "r": 1, "alpha": 1}, "grid": {"lr": [3.0e-4], "seed": [43]}},
    {"method": {"method": "llama_adapter", "layers": 30}, "grid": {"length": [1, 2, 5], "lr": [1.0e-2]}},
]


def _offset(qid: str, room: int) -> int:
    """A seeded place in [0, room]: where the window starts relative to the earliest start that keeps the span."""
    return int(hashlib.md5(("window" + qid).encode()).hexdigest(), 16) % (room + 1)


def window(text: str, start: int, end: int, tokenizer, max_tokens: int, qid: str) -> str | None:
    """`max_tokens` tokens of `text` holding the characters [start, end) at a seeded position; None if the span
    alone is longer than the window."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) <= max_tokens:
        return text
    first = next((i for i, (a, b) in enumerate(offsets) if b > start), 0)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end), len(ids) - 1)
    if last - first + 1 > max_tokens:
        return None
    lo_min, lo_max = max(0, last + 1 - max_tokens), min(first, len(ids) - max_tokens)
    lo = lo_min + _offset(qid, lo_max - lo_min)
    return tokenizer.decode(ids[lo:lo + max_tokens])


def samples(queries, documents, tokenizer, args) -> tuple[list[dict], int]:
    """JSONL records ({id, dial_id, doc_id, document, history, question, answer}) and how many long answers
    were left out."""
    out, long_answers = [], 0
    for q in queries:
        if not q.response:
            continue
        if len(tokenizer(q.response, add_special_tokens=False)["input_ids"]) > args.answer_tokens:
            long_answers += 1
            continue
        doc = documents[q.doc_id]
        found = [doc.span(s) for s in q.span_ids if doc.span(s) is not None]
        if not found:
            continue
        start, end = min(s.start_sp for s in found), max(s.end_sp for s in found)
        text = window(doc.text, start, end, tokenizer, args.doc_tokens, q.qid)
        if text is None:
            long_answers += 1
            continue
        question, history = _split_query(q.query)
        out.append({"id": q.qid, "dial_id": q.qid.rsplit("_", 1)[0], "doc_id": q.doc_id, "document": text,
                    "history": history[-args.history:] if args.history else [], "question": question,
                    "answer": q.response})
    return out, long_answers


def _write_jsonl(path: Path, records: list[dict]) -> None:
    from groundtune.fileio import atomic_write

    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def grid_config(args, model: str | None, train_file: Path, eval_file: Path) -> dict:
    """The shipped grid with its base set to this data and budget (and the extra rows with --extra)."""
    grid = yaml.safe_load(GRID.read_text(encoding="utf-8"))
    runs = grid["runs"] + (EXTRA_RUNS if args.extra else [])
    base = {"model": model,
            "data": {"format": "jsonl", "train": str(train_file), "eval": str(eval_file),
                     "max_document_tokens": args.doc_tokens + 16, "max_answer_tokens": args.answer_tokens,
                     "max_prompt_tokens": args.doc_tokens + 192, "history_turns": args.history,
                     "eval_overlap": "error"},
            "generation": {"max_new_tokens": args.answer_tokens, "batch_size": args.gen_batch},
            "epochs": 1, "batch_size": args.batch_size, "precision": "fp32" if args.smoke else "bf16",
            "save_every": max(1, args.steps // 4), "seed": 42}
    return {"output_dir": str(args.out), "base": base, "runs": runs, "compare": grid.get("compare", [])}


def run_cell(sweep_file: Path, out: Path, name: str, env: dict, log: Path) -> int:
    """One cell in its own process (its peak RSS is its own), through the sweep's resume."""
    code = ("import sys; from groundtune.tasks.sweep import run_sweep; "
            "run_sweep(sys.argv[1], sys.argv[2], progress=False, resume=True, only=[sys.argv[3]])")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n==== {name} {time.strftime('%H:%M:%S')}\n")
        f.flush()
        return subprocess.run([sys.executable, "-c", code, str(sweep_file), str(out), name], cwd=ROOT, env=env,
                              stdout=f, stderr=subprocess.STDOUT).returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, nargs="?", help="doc2dial reading-comprehension folder")
    parser.add_argument("--out", type=Path, default=Path("runs/table2"), help="the sweep's folder")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per cell (one epoch over exactly "
                        "steps x batch-size training questions)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-questions", type=int, default=300, help="held-out questions every cell answers")
    parser.add_argument("--doc-tokens", type=int, default=128, help="document window, in tokens")
    parser.add_argument("--history", type=int, default=1, help="earlier dialogue turns in the prompt")
    parser.add_argument("--answer-tokens", type=int, default=32, help="longest answer kept; also max_new_tokens")
    parser.add_argument("--gen-batch", type=int, default=16)
    parser.add_argument("--extra", action="store_true", help="also the rows beyond the paper (seeds, K in 1, 2, 5)")
    parser.add_argument("--smoke", action="store_true", help="a minute: fixtures, a tiny random LM, 2 cells")
    args = parser.parse_args()
    started = time.perf_counter()

    from groundtune.tasks.sweep import plan, run_sweep

    if args.smoke:
        import tempfile

        from _smoke import tiny_llama, tiny_tokenizer

        args.data_dir, args.steps, args.batch_size, args.eval_questions = None, 2, 2, 6
        args.doc_tokens, args.answer_tokens, args.gen_batch, args.extra = 48, 24, 6, False
        tmp = Path(tempfile.mkdtemp(prefix="table2-smoke-"))
        args.out = tmp / "sweep"
    elif args.data_dir is None:
        parser.error("give DATA_DIR (a doc2dial reading-comprehension folder), or --smoke")
    documents, _, queries, what = load_data(args.data_dir)
    train_q = [q for q in queries if dialogue_half(q.qid) == 0]
    eval_q = [q for q in queries if dialogue_half(q.qid) == 1]
    shared = len({q.qid.rsplit("_", 1)[0] for q in train_q} & {q.qid.rsplit("_", 1)[0] for q in eval_q})

    if args.smoke:
        tokenizer = tiny_tokenizer([d.text for d in documents.values()] + [q.query for q in queries])
        model_dir = tmp / "tiny-lm"
        tiny_llama(vocab_size=len(tokenizer), num_hidden_layers=30).save_pretrained(model_dir)  # L=30: all layers
        tokenizer.save_pretrained(model_dir)
        model = str(model_dir)
    else:
        from groundtune.models import load_model

        _, tokenizer = load_model()
        model = None
    train_records, long_train = samples(train_q, documents, tokenizer, args)
    eval_records, long_eval = samples(eval_q, documents, tokenizer, args)
    # A seeded subset of each side, so the budget does not favour the first documents of the file.
    order = lambda r: hashlib.md5(("pick" + r["id"]).encode()).hexdigest()  # noqa: E731
    need = args.steps * args.batch_size
    train_records = sorted(train_records, key=order)[:need]
    eval_records = sorted(eval_records, key=order)[: args.eval_questions]
    if len(train_records) < need:
        raise SystemExit(f"only {len(train_records)} training questions for {args.steps} steps x {args.batch_size}")
    data_dir = args.out.parent / f"{args.out.name}-data"  # beside the sweep's folder, which the sweep owns
    data_dir.mkdir(parents=True, exist_ok=True)
    train_file, eval_file = data_dir / "train.jsonl", data_dir / "eval.jsonl"
    _write_jsonl(train_file, train_records)
    _write_jsonl(eval_file, eval_records)
    sweep = grid_config(args, model, train_file, eval_file)
    sweep_file = args.out.parent / f"{args.out.name}.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False), encoding="utf-8")

    # The same tokens in every cell: one epoch over the same questions, cut as training cuts them.
    from groundtune.config import from_dict
    from groundtune.tasks.grounded import load_samples

    data_cfg = from_dict({**sweep["base"], "output_dir": str(args.out)}, str(sweep_file)).data
    train_samples, _ = load_samples(data_cfg, tokenizer, verbose=False)
    train_tokens = sum(min(len(tokenizer(s.prompt)["input_ids"]), data_cfg.max_prompt_tokens)
                       + len(tokenizer(s.answer, add_special_tokens=False)["input_ids"]) + 1 for s in train_samples)
    print(f"[table2] {what}; split by dialogue: train {len(train_q)} / eval {len(eval_q)} questions, "
          f"{shared} dialogues on both sides; training on {len(train_records)} ({args.steps} steps x "
          f"{args.batch_size}, {train_tokens:,} tokens per cell), scoring {len(eval_records)}; left out "
          f"{long_train + long_eval} over {args.answer_tokens} answer tokens", flush=True)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    _, cells = plan(sweep_file, args.out)
    # --smoke: the two rows the paper's conclusion turns on, through the same code path, in a minute
    only = ["llama_adapter-layers30-length10-lr0.01", "lora-lr0.0003"] if args.smoke else None
    cells = [c for c in cells if only is None or c[0] in only]
    log = data_dir / "cells.log"
    # The three rows the paper's conclusion turns on first, so that a budget cut short still answers it.
    first = ["llama_adapter-layers30-length10-lr0.01", "lora-lr0.0003", "llama_adapter-layers10-length10-lr0.01"]
    for name, _, state in sorted(cells, key=lambda c: first.index(c[0]) if c[0] in first else len(first)):
        if state == "done":
            continue
        print(f"[table2] {time.strftime('%H:%M:%S')} cell {name} ({state})", flush=True)
        code = run_cell(sweep_file, args.out, name, env, log)
        if code:
            print(f"[table2] cell {name} exited {code} (see {log})", flush=True)
    rows = run_sweep(sweep_file, args.out, progress=False, resume=True, only=only)  # all done: tables and tests
    table = (args.out / "results.md").read_text(encoding="utf-8")
    print(table, flush=True)
    summary = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    result = {"data": what, "train_questions": len(train_records), "eval_questions": len(eval_records),
              "dropped_long_answers": long_train + long_eval, "shared_dialogues": shared, "steps": args.steps,
              "batch_size": args.batch_size, "train_tokens": train_tokens, "cells": len(cells),
              "failed": summary["failed"], "rows": [{k: v for k, v in r.items()} for r in summary["rows"]],
              "wall_s": round(time.perf_counter() - started, 1), "smoke": args.smoke, "skipped": {}}
    assert len(rows) == len(cells)
    missing = set(JSON_KEYS) - set(result)
    assert not missing, missing
    print(json.dumps({k: result[k] for k in JSON_KEYS}, ensure_ascii=False))
    if args.smoke:  # a failed smoke keeps its folder (the cells' log is in it); a passing one leaves nothing behind
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
