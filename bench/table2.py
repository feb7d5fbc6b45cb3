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
same command after a crash and only unfinished cells run again. Rows beyond the paper, on the same questions:
--gemma: the paper's two top rows and K=1 on Gemma 3 270M (the second family); --methods: prompt tuning, DePT,
ACCEPT at a comparable parameter budget, full fine-tuning as the reference, and BitFit (refused on a family
without biases), each at its paper's learning rate or, with --pick-lr, the best of its candidates on a dev part
of train-side questions; --extra: seeds 43 and 44 of L30 K10 and LoRA, K in {1, 2, 5} at L30.

    python bench/table2.py DATA_DIR --out runs/table2      # the real grid (see docs/table2.md for its sizing)
    python bench/table2.py --smoke                         # seconds: shipped fixtures, a tiny random LM

The table (results.md in --out) is the paper's layout with each score's 95% bootstrap interval, trainable
parameters, training time, peak RSS and the paired test against the best row. The last line printed is one
JSON object:

JSON keys: data, train_questions, eval_questions, dropped_long_answers, shared_dialogues, steps, batch_size,
train_tokens, cells, failed, rows, dev_questions, lr_picks, load, wall_s, smoke, skipped
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
# Rows beyond the paper's five (--extra): more seeds of the two top rows, prompt lengths below 10 at all layers.
EXTRA_RUNS = [
    {"method": {"method": "llama_adapter", "layers": 30, "length": 10}, "grid": {"lr": [1.0e-2], "seed": [43]}},
    {"method": {"method": "lora", "r": 1, "alpha": 1}, "grid": {"lr": [3.0e-4], "seed": [43]}},
    {"method": {"method": "llama_adapter", "layers": 30}, "grid": {"length": [1, 2, 5], "lr": [1.0e-2]}},
]
# A third seed of the same two rows (--extra), queued last: the second seed flipped their order.
SEED_RUNS = [
    {"method": {"method": "llama_adapter", "layers": 30, "length": 10}, "grid": {"lr": [1.0e-2], "seed": [44]}},
    {"method": {"method": "lora", "r": 1, "alpha": 1}, "grid": {"lr": [3.0e-4], "seed": [44]}},
]
# The second family (--gemma): Gemma 3 270M (18 layers, so layers 18 is every layer), the Korean-capable model,
# with the paper's two top rows at the paper's learning rates and the best adapter row at 135M (K=1).
GEMMA = "gemma3-270m"
GEMMA_RUNS = [
    {"method": {"method": "llama_adapter", "layers": 18},
     "grid": {"model": [GEMMA], "length": [10, 1], "lr": [1.0e-2]}},
    {"method": {"method": "lora", "r": 1, "alpha": 1}, "grid": {"model": [GEMMA], "lr": [3.0e-4]}},
]
# The other methods (--methods), at a parameter budget comparable to LoRA r=1 (115,200 on SmolLM2-135M, hidden
# 576) and L10 K10 (57,690): prompt tuning with 100 vectors (57,600); DePT with the same budget split as in its
# paper (60 vectors + rank 28 over the first 256 positions: 57,856); ACCEPT with 60 vectors and its paper's
# codebooks (65,760); full fine-tuning (every weight) as the reference. Each entry: the method block, the
# learning rate its paper uses (the default), and the candidates --pick-lr tries instead, keeping the best F1 on
# the dev part (train-side questions from dialogues the training set does not use), never on the held-out
# questions. The added parts of DePT and ACCEPT keep their papers' rates (1e-4, 1e-3). BitFit has one rate: on a
# family without biases (Llama/SmolLM2, Gemma) it must be refused, not run as a no-op.
# Groups run in order (picks, then held-out cells), so the reference and prompt tuning finish first.
METHOD_GROUPS = [
    [({"method": "full"}, 3.0e-5, [1.0e-5, 3.0e-5, 1.0e-4]),  # BERT-style 1e-5 .. 5e-5
     ({"method": "prompt_tuning", "length": 100}, 3.0e-1, [3.0e-2, 1.0e-1, 3.0e-1])],  # Lester et al.: 0.3
    [({"method": "bitfit"}, 1.0e-3, [1.0e-3]),
     ({"method": "dept", "length": 60, "rank": 28, "max_length": 256, "update_lr": 1.0e-4}, 3.0e-1,
      [3.0e-2, 1.0e-1, 3.0e-1]),  # Shi & Lipani: 3e-1 prompt, 1e-4 low-rank pair
     ({"method": "accept", "length": 60, "update_lr": 1.0e-3}, 3.0e-1, [3.0e-2, 1.0e-1, 3.0e-1])],  # Lin et al.
]
SMOKE_GROUPS = [[({"method": "prompt_tuning", "length": 4}, 1.0e-1, [1.0e-2, 1.0e-1]),
                 ({"method": "bitfit"}, 1.0e-3, [1.0e-3])]]


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


def grid_config(args, model: str | None, train_file: Path, eval_file: Path, runs: list[dict],
                compare: list | None = None) -> dict:
    """A sweep over `runs` with its base set to this data and budget (every cell the same questions and steps)."""
    base = {"model": model,
            "data": {"format": "jsonl", "train": str(train_file), "eval": str(eval_file),
                     "max_document_tokens": args.doc_tokens + 16, "max_answer_tokens": args.answer_tokens,
                     "max_prompt_tokens": args.doc_tokens + 192, "history_turns": args.history,
                     "eval_overlap": "error"},
            "generation": {"max_new_tokens": args.answer_tokens, "batch_size": args.gen_batch},
            "epochs": 1, "batch_size": args.batch_size, "precision": "fp32" if args.smoke else "auto",
            "save_every": max(1, args.steps // 4), "seed": 42}
    return {"base": base, "runs": runs, "compare": compare or []}


def write_sweep(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep, sort_keys=False), encoding="utf-8")
    return path


def run_cell(sweep_file: Path, out: Path, name: str, env: dict, log: Path) -> int:
    """One cell in its own process (its peak RSS is its own), through the sweep's resume."""
    code = ("import sys; from groundtune.tasks.sweep import run_sweep; "
            "run_sweep(sys.argv[1], sys.argv[2], progress=False, resume=True, only=[sys.argv[3]])")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n==== {name} {time.strftime('%H:%M:%S')}\n")
        f.flush()
        return subprocess.run([sys.executable, "-c", code, str(sweep_file), str(out), name], cwd=ROOT, env=env,
                              stdout=f, stderr=subprocess.STDOUT).returncode


def run_cells(sweep_file: Path, out: Path, names: list[str], env: dict, log: Path | None) -> None:
    """The unfinished cells among `names`, in that order, each in its own process (log None: in this process,
    for --smoke, where peak RSS does not matter and process start-up would be most of the time); a failed one
    does not stop the others (the sweep reports it)."""
    from groundtune.tasks.sweep import plan, run_sweep

    states = {name: state for name, _, state in plan(sweep_file, out)[1]}
    for name in names:
        if states[name] == "done":
            continue
        print(f"[table2] {time.strftime('%H:%M:%S')} cell {name} ({states[name]}), load "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        if log is None:
            run_sweep(sweep_file, out, progress=False, resume=True, only=[name])
            continue
        code = run_cell(sweep_file, out, name, env, log)
        if code:
            print(f"[table2] cell {name} exited {code} (see {log})", flush=True)


def dev_f1(out: Path, name: str) -> float | None:
    """A finished dev cell's F1, or None (failed or refused)."""
    try:
        return json.loads((out / name / "results.json").read_text(encoding="utf-8"))["scores"]["F1"]
    except (OSError, ValueError, KeyError):
        return None


def pick_rates(group, make_sweep, dev_file: Path, dev_out: Path, env: dict, log: Path | None,
               pick: bool) -> tuple[list[dict], dict]:
    """Each method's learning rate: its paper's, or with `pick` the best dev F1 among its candidates (a single
    candidate is taken as is). Returns the held-out runs at those rates and {method: {lr: dev F1}}."""
    picked = {block["method"]: paper_lr for block, paper_lr, _ in group}
    tuned = [{"method": block, "grid": {"lr": rates}} for block, _, rates in group if pick and len(rates) > 1]
    scores = {}
    if tuned:
        from groundtune.tasks.sweep import expand

        dev_sweep = write_sweep(dev_out.parent / f"{dev_out.name}.yaml", make_sweep(dev_file, tuned))
        cells = expand(yaml.safe_load(dev_sweep.read_text(encoding="utf-8")), str(dev_sweep))
        run_cells(dev_sweep, dev_out, [name for name, _ in cells], env, log)
        for name, cfg in cells:
            scores.setdefault(cfg.method["method"], {})[cfg.lr] = dev_f1(dev_out, name)
        for method, by_lr in scores.items():
            finished = {lr: f1 for lr, f1 in by_lr.items() if f1 is not None}
            if finished:
                picked[method] = max(finished, key=finished.get)
            print(f"[table2] {method}: dev F1 by lr {by_lr}; picked {picked[method]:g}", flush=True)
    runs = [{"method": block, "grid": {"lr": [picked[block["method"]]]}} for block, _, _ in group]
    return runs, scores

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
    parser.add_argument("--extra", action="store_true", help="also the rows beyond the paper (seeds 43 and 44 of "
                        "L30 K10 and LoRA, K in 1, 2, 5)")
    parser.add_argument("--gemma", action="store_true", help=f"also the top rows on {GEMMA} (the second family)")
    parser.add_argument("--methods", action="store_true", help="also prompt tuning, DePT, ACCEPT, full fine-tuning "
                        "and BitFit, each at the learning rate its dev part picks")
    parser.add_argument("--pick-lr", action="store_true", help="pick each --methods row's learning rate on the dev "
                        "part among its candidates (default: its paper's)")
    parser.add_argument("--dev-questions", type=int, default=64, help="train-side questions (not trained on, from "
                        "other dialogues) that --pick-lr scores")
    parser.add_argument("--cells", nargs="+", metavar="NAME", help="run and tabulate only these cells of the "
                        "grid the other options name (e.g. the rows a lost run did not finish); names as in "
                        "results.md's cell column")
    parser.add_argument("--smoke", action="store_true", help="fixtures, a tiny random LM: L30 K10, a dev pick of "
                        "prompt tuning's lr, BitFit's refusal")
    args = parser.parse_args()
    started = time.perf_counter()

    from groundtune.tasks.sweep import plan, run_sweep

    if args.smoke:
        import tempfile

        from _smoke import tiny_llama, tiny_tokenizer

        args.data_dir, args.steps, args.batch_size, args.eval_questions = None, 2, 2, 6
        args.doc_tokens, args.answer_tokens, args.gen_batch, args.extra = 48, 24, 6, False
        args.gemma, args.methods, args.pick_lr, args.dev_questions = False, True, True, 6
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
    train_records = sorted(train_records, key=order)
    # The dev part: the next train-side questions, from dialogues the training questions do not come from.
    trained_dialogues = {r["dial_id"] for r in train_records[:need]}
    dev_records = [r for r in train_records[need:] if r["dial_id"] not in trained_dialogues][: args.dev_questions]
    train_records = train_records[:need]
    eval_records = sorted(eval_records, key=order)[: args.eval_questions]
    if len(train_records) < need:
        raise SystemExit(f"only {len(train_records)} training questions for {args.steps} steps x {args.batch_size}")
    data_dir = args.out.parent / f"{args.out.name}-data"  # beside the sweep's folder, which the sweep owns
    data_dir.mkdir(parents=True, exist_ok=True)
    train_file, eval_file, dev_file = data_dir / "train.jsonl", data_dir / "eval.jsonl", data_dir / "dev.jsonl"
    _write_jsonl(train_file, train_records)
    _write_jsonl(eval_file, eval_records)
    _write_jsonl(dev_file, dev_records)
    paper = yaml.safe_load(GRID.read_text(encoding="utf-8"))
    runs, compare = list(paper["runs"]), list(paper.get("compare", []))
    if args.gemma:
        runs += GEMMA_RUNS
        compare.append([f"llama_adapter-model{GEMMA}-length10-lr0.01", f"lora-model{GEMMA}-lr0.0003"])
    if args.extra:
        runs += EXTRA_RUNS + SEED_RUNS
    make_sweep = lambda eval_path, cell_runs, pairs=None: grid_config(  # noqa: E731
        args, model, train_file, eval_path, cell_runs, pairs)
    sweep_file = args.out.parent / f"{args.out.name}.yaml"
    sweep = make_sweep(eval_file, runs, compare)
    write_sweep(sweep_file, sweep)

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
    log = None if args.smoke else data_dir / "cells.log"
    from groundtune.tasks.sweep import expand

    offered: list[str] = []  # every cell these options name, for --cells' error

    def names(of_runs):
        found = [name for name, _ in expand({"base": sweep["base"], "runs": of_runs}, str(sweep_file))]
        offered.extend(n for n in found if n not in offered)
        return [n for n in found if not args.cells or n in args.cells]

    # In order of what the question needs, so that a budget cut short still answers the most: the three rows
    # the paper's conclusion turns on, the rest of its grid, the second family, the other methods (each group's
    # dev picks, then its held-out cells), the rows beyond the paper, and the third seeds last.
    first = ["llama_adapter-layers30-length10-lr0.01", "lora-lr0.0003", "llama_adapter-layers10-length10-lr0.01"]
    queue = [n for n in first if not args.cells or n in args.cells]
    queue += [n for n in names(paper["runs"]) if n not in first]
    if args.smoke:  # the row the paper's conclusion turns on, then the methods' pick, through the same code path
        queue = first[:1]
    queue += names(GEMMA_RUNS) if args.gemma else []
    run_cells(sweep_file, args.out, queue, env, log)
    picks = {}
    for group in (SMOKE_GROUPS if args.smoke else METHOD_GROUPS) if args.methods else []:
        dev_out = args.out.parent / f"{args.out.name}-dev"
        method_runs, scores = pick_rates(group, make_sweep, dev_file, dev_out, env, log, args.pick_lr)
        picks.update(scores)
        runs += method_runs
        sweep = make_sweep(eval_file, runs, compare)
        write_sweep(sweep_file, sweep)
        queue += names(method_runs)
        run_cells(sweep_file, args.out, names(method_runs), env, log)
    if args.extra:
        queue += names(EXTRA_RUNS + SEED_RUNS)
        run_cells(sweep_file, args.out, names(EXTRA_RUNS + SEED_RUNS), env, log)
    only = queue if args.smoke or args.cells else None
    if args.cells and set(args.cells) - set(queue):
        raise SystemExit(f"--cells: not in this grid: {sorted(set(args.cells) - set(queue))}; the grid's cells: "
                         f"{', '.join(offered)} (add --extra, --gemma or --methods for theirs)")
    cells = [c for c in plan(sweep_file, args.out)[1] if only is None or c[0] in only]
    rows = run_sweep(sweep_file, args.out, progress=False, resume=True, only=only)  # all done: tables and tests
    table = (args.out / "results.md").read_text(encoding="utf-8")
    print(table, flush=True)
    summary = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    result = {"data": what, "train_questions": len(train_records), "eval_questions": len(eval_records),
              "dropped_long_answers": long_train + long_eval, "shared_dialogues": shared, "steps": args.steps,
              "batch_size": args.batch_size, "train_tokens": train_tokens, "cells": len(cells),
              "failed": summary["failed"], "rows": [{k: v for k, v in r.items()} for r in summary["rows"]],
              "dev_questions": len(dev_records), "lr_picks": picks, "load": [round(x, 1) for x in os.getloadavg()],
              "wall_s": round(time.perf_counter() - started, 1), "smoke": args.smoke, "skipped": {}}
    assert len(rows) == len(cells)
    # "Unsupported means refused": a cell that trained nothing must have failed, never scored the frozen base.
    silent = [r["cell"] for r in summary["rows"] if not r.get("failed") and not r.get("trainable params")]
    assert not silent, f"cells that trained no parameter: {silent}"
    if args.smoke:  # the tiny Llama has no biases: BitFit is refused with the reason, the other cells train
        assert list(summary["failed"]) == ["bitfit-lr0.001"], summary["failed"]
        assert "no bias terms" in summary["failed"]["bitfit-lr0.001"], summary["failed"]
    missing = set(JSON_KEYS) - set(result)
    assert not missing, missing
    print(json.dumps({k: result[k] for k in JSON_KEYS}, ensure_ascii=False))
    if args.smoke:  # a failed smoke keeps its folder (the cells' log is in it); a passing one leaves nothing behind
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
