"""Grids of runs (method × layers × length × learning rate) and their results in the paper's Table 2 layout.

A sweep YAML has a `base` run config and a list of `runs`, each a method block and a grid:

    base: {data: {...}, epochs: 1, batch_size: 4}
    runs:
      - method: {method: llama_adapter}
        grid: {layers: [10, 30], length: [10, 30], lr: [1.0e-2]}
      - method: {method: lora, r: 1, alpha: 1}
        grid: {lr: [3.0e-4]}

Grid keys that are run settings (lr, epochs, ...) go to the run; the others are method options. Each run writes
its own folder. A rerun keys every cell on its full resolved config: a finished cell whose config is unchanged
is reused, one whose config changed is trained again; `resume=True` continues cells a killed sweep left
unfinished (from their checkpoints).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from pathlib import Path


from groundtune.config import TrainConfig, from_dict, read_yaml
from groundtune.errors import ConfigError, OutputError
from groundtune.fileio import atomic_write, guard_output, save_figure
from groundtune.metrics import METRICS

SETTING_COLUMNS = ["method", "layer", "length", "learning rate"]
COLUMNS = SETTING_COLUMNS + list(METRICS)  # every metric of the registry, in its order
_RUN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
SWEEP_KEYS = ("base", "runs", "output_dir")
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


def row(cfg: TrainConfig, scores: dict) -> dict:
    """One table row: the method's own description of its settings (its registry entry), then the scores."""
    from groundtune.methods import config_from_dict, describe

    cells = describe(config_from_dict(cfg.method))
    return {"method": cfg.method["method"], "layer": cells["layer"], "length": cells["length"],
            "learning rate": cfg.lr, **{k: scores.get(k) for k in METRICS}}


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) and v is not None else ("n/a" if v is None else str(v))


def markdown_table(rows: list[dict], signatures: list[str] | None = None) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) if c != "learning rate" else f"{r[c]:g}" for c in COLUMNS) + " |" for r in rows]
    if signatures:
        lines += ["", *[f"`{s}`" for s in signatures]]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


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
              resume: bool = False, overwrite: bool = False, force: bool = False) -> list[dict]:
    """Train and evaluate every grid point; write results.md, results.csv, heatmap.png, loss_curves.png.

    Cells already finished with the same full config are reused; cells whose config changed are trained again;
    a cell a killed sweep left unfinished is continued from its checkpoint with `resume` (its settings must
    not have changed), or started afresh with `overwrite`. Without either, an unfinished cell is refused. A
    learning rate above its method's sane bound is refused unless `force`."""
    from groundtune.tasks.grounded import train_and_evaluate
    from groundtune.train import check_learning_rate, prepare_output

    path = Path(path)
    out, cells = plan(path, out_dir)
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
    rows, curves, signatures = [], {}, []
    for name, cfg, state in cells:
        if state != "done":
            train_and_evaluate(cfg, progress=progress, resume=state == "resume" and resume,
                               overwrite=state in ("changed", "resume"))
        result = json.loads((Path(cfg.output_dir) / "results.json").read_text())
        rows.append(row(cfg, result["scores"]))
        signatures = result.get("signatures", signatures)
        curves[name] = result["losses"]
        atomic_write(out / "results.md", markdown_table(rows, signatures))
        atomic_write(out / "results.csv", csv_table(rows))
    heatmap(rows, out / "heatmap.png")
    loss_curves(curves, out / "loss_curves.png")
    return rows
