"""Grids of runs (method × layers × length × learning rate) and their results in the paper's Table 2 layout.

A sweep YAML has a `base` run config and a list of `runs`, each a method block and a grid:

    base: {data: {...}, epochs: 1, batch_size: 4}
    runs:
      - method: {method: llama_adapter}
        grid: {layers: [10, 30], length: [10, 30], lr: [1.0e-2]}
      - method: {method: lora, r: 1, alpha: 1}
        grid: {lr: [3.0e-4]}

Grid keys that are run settings (lr, epochs, seed, ...) go to the run; the others are method options. Each run
writes its own folder. Every score carries its 95% bootstrap interval; each row says whether it differs from the
best row (by F1, a paired bootstrap test over the same eval examples, as sacrebleu's --paired-bs), and an optional
`compare` list names further pairs of cells to test on every metric:

    compare:
      - [llama_adapter-layers30-length10-lr0.01, lora-lr0.0003]
 A rerun keys every cell on its full resolved config: a finished cell whose config is unchanged
is reused, one whose config changed is trained again; `resume=True` continues cells a killed sweep left
unfinished (from their checkpoints).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import sys
from pathlib import Path

from groundtune.config import TrainConfig, from_dict, read_yaml
from groundtune.errors import ConfigError, OutputError
from groundtune.fileio import atomic_write, guard_output, save_figure
from groundtune.metrics import METRICS
from groundtune.metrics.report import Report

SETTING_COLUMNS = ["method", "layer", "length", "learning rate", "seed"]
RUN_COLUMNS = ["trainable params", "train s", "peak RSS MB", "p vs best", "differs from best"]
COLUMNS = SETTING_COLUMNS + list(METRICS) + RUN_COLUMNS  # every metric of the registry, in its order
# results.csv: each score followed by its interval's bounds
CSV_COLUMNS = SETTING_COLUMNS + [c for m in METRICS for c in (m, f"{m} lo", f"{m} hi")] + RUN_COLUMNS
BEST_BY = "F1"  # the metric that picks the best row, and the one "differs from best" is tested on
ALPHA = 0.05
_RUN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
SWEEP_KEYS = ("base", "runs", "output_dir", "compare")
ENTRY_KEYS = ("method", "grid")
MARKER = "sweep.json"  # marks a folder as a sweep's own output


def expand(sweep: dict, where: str = "sweep") -> list[tuple[str, TrainConfig]]:
    """(run name, config) for every point of every grid."""
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {list(SWEEP_KEYS)}")
    base = sweep.get("base") or {}
    runs = sweep.get("runs")
    if not runs or not isinstance(runs, list):
        raise ConfigError(f"{where}: no 'runs' list; each entry needs a 'method' block and an optional 'grid'")
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: base must be a mapping of run settings")
    out = []
    for i, entry in enumerate(runs):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: runs[{i}] must be a mapping with 'method' and 'grid'")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"{where}: runs[{i}]: unknown key(s) {unknown}; known keys: {list(ENTRY_KEYS)}")
        method, grid = entry.get("method") or {}, entry.get("grid") or {}
        if not isinstance(method, dict) or "method" not in method:
            raise ConfigError(f"{where}: runs[{i}].method needs a 'method' key (llama_adapter, lora, ...)")
        if not isinstance(grid, dict):
            raise ConfigError(f"{where}: runs[{i}].grid must be a mapping of setting -> list of values")
        method = dict(method)
        keys = list(grid)
        for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
            point = dict(zip(keys, values))
            run = {**base, **{k: v for k, v in point.items() if k in _RUN_KEYS}}
            run["method"] = {**method, **{k: v for k, v in point.items() if k not in _RUN_KEYS}}
            name = "-".join([method["method"], *(f"{k}{v}" for k, v in point.items())])
            cfg = from_dict(run, f"{where}: runs[{i}] {point}")
            out.append((name, cfg))
    return out


def row(cfg: TrainConfig, scores: dict, result: dict | None = None) -> dict:
    """One table row: the method's own description of its settings (its registry entry), the scores with their
    intervals (the "<metric> CI" keys), then what the run cost (from the cell's results.json)."""
    from groundtune.methods import config_from_dict, describe

    result = result or {}
    cells = describe(config_from_dict(cfg.method))
    intervals = result.get("intervals") or {}
    return {"method": cfg.method["method"], "layer": cells["layer"], "length": cells["length"],
            "learning rate": cfg.lr, "seed": cfg.seed, **{k: scores.get(k) for k in METRICS},
            **{f"{k} CI": intervals.get(k) for k in METRICS},
            "trainable params": result.get("trainable_params"), "train s": result.get("train_seconds"),
            "peak RSS MB": result.get("peak_rss_mb"), "p vs best": None, "differs from best": None}


def mark_best(rows: list[dict], reports: list, metric: str = BEST_BY, alpha: float = ALPHA) -> None:
    """Fill each row's "p vs best" (paired bootstrap on `metric` against the best row) and "differs from best"
    (p < alpha; "best" on the best row itself). Rows scored on other examples than the best one stay empty."""
    from groundtune.metrics.bootstrap import paired_bootstrap

    scored = [i for i, r in enumerate(rows) if r.get(metric) is not None and reports[i] is not None]
    if not scored:
        return
    best = max(scored, key=lambda i: rows[i][metric])
    rows[best]["differs from best"] = "best"
    for i in scored:
        if i == best:
            continue
        try:
            p = paired_bootstrap(reports[i], reports[best])[metric]
        except ValueError:  # other eval examples: no paired test
            continue
        rows[i]["p vs best"] = p
        rows[i]["differs from best"] = "yes" if p is not None and p < alpha else "no"


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) and v is not None else ("n/a" if v is None else str(v))


def _cell(r: dict, c: str) -> str:
    if c == "learning rate":
        return f"{r[c]:g}"
    if c in METRICS:
        interval = r.get(f"{c} CI")
        return _fmt(r[c]) + ("" if interval is None or r[c] is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]")
    if c == "p vs best":
        return "" if r[c] is None else f"{r[c]:.3f}"
    if c == "trainable params":
        return "n/a" if r[c] is None else f"{r[c]:,}"
    if c in ("train s", "peak RSS MB"):
        return "n/a" if r[c] is None else f"{r[c]:.0f}"
    return "" if r[c] is None else str(r[c])


def markdown_table(rows: list[dict], signatures: list[str] | None = None, pairs: list[dict] | None = None) -> str:
    """The paper's Table 2 layout, each score with its 95% bootstrap interval in brackets, then the run's cost and
    the paired test against the best row; the named pairs' p-values and the signatures below."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |" for r in rows]
    if any(r.get("differs from best") == "best" for r in rows):
        lines += ["", f"p vs best: paired bootstrap p-value of the row's {BEST_BY} against the best row's (1,000 "
                  f"resamples of the same eval examples); differs from best: p < {ALPHA}."]
    failed = [r for r in rows if r.get("failed")]
    if failed:
        lines += ["", "Failed cells (rerun the sweep to retry them; finished cells are reused):", ""]
        lines += [f"- {r['method']} layer {r['layer']} length {r['length']} lr {r['learning rate']:g} seed {r['seed']}: "
                  f"{r['failed']}" for r in failed]
    if pairs:
        names = list(METRICS)
        lines += ["", "Paired bootstrap p-values (`compare`):", "",
                  "| a | b | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        lines += [f"| {p['a']} | {p['b']} | " + " | ".join("n/a" if p["p"].get(n) is None else f"{p['p'][n]:.3f}"
                                                        for n in names) + " |" for p in pairs]
    if signatures:
        lines += ["", *[f"`{s}`" for s in signatures]]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    """One column per setting and score, each score followed by its interval's bounds ("F1 lo", "F1 hi")."""
    fields = CSV_COLUMNS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        flat = {k: v for k, v in r.items() if k in fields}
        for m in METRICS:
            interval = r.get(f"{m} CI")
            flat[f"{m} lo"], flat[f"{m} hi"] = (None, None) if interval is None else interval
        writer.writerow(flat)
    return buf.getvalue()


def compare_pairs(sweep: dict, names: list[str], reports: dict, where: str) -> list[dict]:
    """The `compare` pairs of cell names -> [{"a", "b", "p": {metric: p-value}}] (paired bootstrap)."""
    from groundtune.metrics.bootstrap import paired_bootstrap

    pairs = sweep.get("compare") or []
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise ConfigError(f"{where}: compare must be a list of [cell, cell] pairs, e.g. "
                          f"[[{names[0]}, {names[-1]}]]")
    out = []
    for a, b in pairs:
        unknown = [n for n in (a, b) if n not in names]
        if unknown:
            raise ConfigError(f"{where}: compare names unknown cell(s) {unknown}; the cells are {names}")
        if reports.get(a) is None or reports.get(b) is None:
            continue  # a failed or unscored cell: nothing to compare
        try:
            out.append({"a": a, "b": b, "p": paired_bootstrap(reports[a], reports[b])})
        except ValueError as err:
            raise ConfigError(f"{where}: compare [{a}, {b}]: {err}") from None
    return out


def heatmap(rows: list[dict], path: Path, metric: str = "F1") -> bool:
    """Layers × length heatmap of `metric` for LLaMA-Adapter rows (best over learning rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[tuple[int, int], float] = {}
    for r in rows:
        if r["method"] == "llama_adapter" and r[metric] is not None:
            key = (r["layer"], r["length"])
            cells[key] = max(cells.get(key, float("-inf")), r[metric])
    if not cells:
        return False
    layers = sorted({k[0] for k in cells})
    lengths = sorted({k[1] for k in cells})
    grid = [[cells.get((l, k), float("nan")) for k in lengths] for l in layers]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(lengths), 1.4 + 0.9 * len(layers)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(lengths)), [str(k) for k in lengths])
    ax.set_yticks(range(len(layers)), [str(l) for l in layers])
    ax.set_xlabel("adaption prompt length K")
    ax.set_ylabel("adapted layers L")
    ax.set_title(f"LLaMA-Adapter {metric}")
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            ax.text(j, i, "—" if v != v else f"{v:.1f}", ha="center", va="center", color="white")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def loss_curves(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, losses in runs.items():
        ax.plot([r["step"] for r in losses], [r["loss"] for r in losses], label=name, lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("answer-token loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _finished(cfg: TrainConfig) -> dict | None:
    """The cell's results.json when it was written by a run of exactly `cfg`, else None."""
    done = Path(cfg.output_dir) / "results.json"
    try:
        result = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    # the full resolved config, through JSON as results.json holds it
    return result if result.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))) else None


def plan(path: str | Path, out_dir: str | Path | None = None) -> tuple[Path, list[tuple[str, TrainConfig, str]]]:
    """(output folder, [(cell name, config, 'done' | 'resume' | 'changed' | 'new')]) without training anything."""
    path = Path(path)
    sweep = read_yaml(path)
    out = Path(out_dir or sweep.get("output_dir") or Path("runs") / path.stem)
    cells = []
    for name, cfg in expand(sweep, str(path)):
        cfg.output_dir = str(out / name)
        cell = Path(cfg.output_dir)
        if _finished(cfg) is not None:
            state = "done"
        elif (cell / "checkpoint").exists() and not (cell / "results.json").exists():
            state = "resume"
        elif cell.exists() and any(cell.iterdir()):
            state = "changed"
        else:
            state = "new"
        cells.append((name, cfg, state))
    return out, cells


def run_sweep(path: str | Path, out_dir: str | Path | None = None, progress: bool = True, *,
              resume: bool = False, overwrite: bool = False, only: list[str] | None = None,
              force: bool = False) -> list[dict]:
    """Train and evaluate every grid point; write results.md, results.csv, heatmap.png, loss_curves.png.

    Cells already finished with the same full config are reused; cells whose config changed are trained again;
    a cell a killed sweep left unfinished is continued from its checkpoint with `resume` (its settings must
    not have changed), or started afresh with `overwrite`. Without either, an unfinished cell is refused.
    A cell that fails is reported (its row says why) and the others still run. `only`: just these cells (by
    name), e.g. one per process so that each cell's peak memory is its own; the tables then hold only them. A
    learning rate above its method's sane bound is refused unless `force`."""
    from groundtune.tasks.grounded import train_and_evaluate
    from groundtune.train import check_learning_rate, prepare_output

    path = Path(path)
    out, cells = plan(path, out_dir)
    planned = [name for name, _, _ in cells]  # `compare` may name cells that `only` leaves out: they are skipped
    if only is not None:
        unknown = sorted(set(only) - {name for name, _, _ in cells})
        if unknown:
            raise ConfigError(f"{path}: no cell(s) named {unknown}; the cells are {[n for n, _, _ in cells]}")
        cells = [c for c in cells if c[0] in only]
    for name, cfg, _ in cells:
        check_learning_rate(cfg.method.get("method", ""), cfg.lr, force=force, source=f"{path} (cell {name})")
    # a sweep continues its own folder (finished cells are reused); each cell is then a training run's output
    guard_output(out, command="sweep", inputs=[path], overwrite=overwrite, resume=True)
    for name, cfg, state in cells:
        guard_output(cfg.output_dir, command="train", inputs=[path], overwrite=True, resume=True)
    unfinished = [name for name, _, state in cells if state == "resume"]
    if unfinished and not (resume or overwrite):
        raise OutputError(f"{out}: {len(unfinished)} cell(s) a stopped sweep left unfinished ({', '.join(unfinished)}): "
                          "pass --resume to continue them, or --overwrite to start them afresh")
    for name, cfg, state in cells:  # every setting checked before the first cell trains
        if state == "resume" and resume:
            prepare_output(cfg, resume=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MARKER, json.dumps({"sweep": str(path), "cells": {n: s for n, _, s in cells}}, indent=2) + "\n")
    sweep = read_yaml(path)
    names = [name for name, _, _ in cells]
    compare_pairs(sweep, planned, {}, str(path))  # a misnamed pair fails before the first cell trains
    rows, curves, signatures, reports, failed = [], {}, [], {}, {}
    for name, cfg, state in cells:
        if state != "done":
            try:
                train_and_evaluate(cfg, progress=progress, resume=state == "resume" and resume,
                                   overwrite=state in ("changed", "resume"))
            except Exception as err:  # noqa: BLE001 -- one failed cell is reported, the others still run
                failed[name] = f"{type(err).__name__}: {err}"
                print(f"sweep: cell {name} failed: {failed[name]}", file=sys.stderr)
                rows.append({**row(cfg, {}), "failed": failed[name]})
                reports[name] = None
                continue
        result = json.loads((Path(cfg.output_dir) / "results.json").read_text())
        rows.append(row(cfg, result["scores"], result))
        reports[name] = Report.from_dict(result["report"]) if result.get("report") else None
        signatures = result.get("signatures", signatures)
        curves[name] = result["losses"]
        _write_tables(out, rows, [reports[n] for n in names[:len(rows)]], signatures, [])
    pairs = compare_pairs(sweep, planned, reports, str(path))
    _write_tables(out, rows, [reports[n] for n in names], signatures, pairs)
    atomic_write(out / "results.json", json.dumps({"rows": [{"cell": n, **r} for n, r in zip(names, rows)],
                                                   "compare": pairs, "failed": failed, "signatures": signatures},
                                                  indent=2, ensure_ascii=False) + "\n")
    heatmap(rows, out / "heatmap.png")
    if curves:
        loss_curves(curves, out / "loss_curves.png")
    if failed:
        print(f"sweep: {len(failed)} of {len(cells)} cell(s) failed ({', '.join(failed)}); fix them and rerun "
              "(finished cells are reused)", file=sys.stderr)
    return rows


def _write_tables(out: Path, rows: list[dict], reports: list, signatures: list[str], pairs: list[dict]) -> None:
    mark_best(rows, reports)
    atomic_write(out / "results.md", markdown_table(rows, signatures, pairs))
    atomic_write(out / "results.csv", csv_table(rows))
