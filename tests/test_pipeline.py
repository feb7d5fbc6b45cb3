"""End to end on a tiny model folder: `groundtune train`, `eval --config` and `sweep` through the CLI."""

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from groundtune.cli import app
from groundtune.config import TrainConfig
from groundtune.tasks.sweep import CSV_COLUMNS, expand, markdown_table, row
from tiny import tiny_run_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tiny_run_folder(tmp_path_factory.mktemp("pipeline"), 16, 6, ["user: w7 w8", "agent: w9"])


def _run_config(root, **kw):
    cfg = {"model": str(root / "model"), "method": {"method": "llama_adapter", "layers": 2, "length": 3},
           "data": {"format": "jsonl", "train": str(root / "train.jsonl"), "eval": str(root / "eval.jsonl"),
                    "max_document_tokens": 64, "max_answer_tokens": 8},
           "generation": {"max_new_tokens": 4, "batch_size": 4}, "output_dir": str(root / "runs" / "one"),
           "max_steps": 4, "batch_size": 4, "precision": "fp32", "lr": 1e-2}
    cfg.update(kw)
    return cfg


def test_train_command_writes_adapter_curve_predictions_and_scores(workspace):
    path = workspace / "run.yaml"
    path.write_text(yaml.safe_dump(_run_config(workspace)))
    result = runner.invoke(app, ["train", str(path), "--set", "lr=0.02"])
    assert result.exit_code == 0, result.output
    out = workspace / "runs" / "one"
    summary = json.loads((out / "results.json").read_text())
    assert summary["config"]["lr"] == 0.02 and summary["eval_samples"] == 6
    assert set(summary["scores"]) >= {"F1", "SacreBLEU", "METEOR", "ROUGE-L"}
    assert (out / "adapter" / "adapter_model.safetensors").exists() and (out / "loss.png").exists()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6

    again = runner.invoke(app, ["eval", "--config", str(path), "--adapter", str(out / "adapter"), "--lang", "en"])
    assert again.exit_code == 0, again.output
    assert "F1" in again.output and "signature" in again.output


def test_bad_config_key_names_the_file(workspace):
    path = workspace / "bad.yaml"
    path.write_text(yaml.safe_dump({**_run_config(workspace), "learning_rate": 0.1}))
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "bad.yaml" in result.stderr and "learning_rate" in result.stderr


def test_sweep_writes_table_csv_heatmap_and_curves(workspace):
    base = _run_config(workspace)
    base.pop("method")
    base.pop("output_dir")
    sweep = {"output_dir": str(workspace / "sweep"), "base": base,
             "runs": [{"method": {"method": "llama_adapter"}, "grid": {"layers": [1, 2], "length": [2, 3], "lr": [1e-2]}},
                      {"method": {"method": "lora", "r": 1, "alpha": 1}, "grid": {"lr": [3e-4]}}]}
    path = workspace / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    out = workspace / "sweep"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["method"] for r in rows] == ["llama_adapter"] * 4 + ["lora"]
    assert list(rows[0]) == CSV_COLUMNS
    assert all(float(r["F1 lo"]) <= float(r["F1"]) <= float(r["F1 hi"]) for r in rows)  # the intervals
    assert (out / "heatmap.png").stat().st_size > 1000 and (out / "loss_curves.png").exists()
    assert "| method | layer | length | learning rate | seed | F1 | METEOR | ROUGE-L | SacreBLEU | ROUGE-1 |" in (
        out / "results.md").read_text()


def test_grid_expansion_puts_run_keys_on_the_run_and_the_rest_on_the_method():
    runs = expand({"base": {"batch_size": 2}, "runs": [{"method": {"method": "llama_adapter", "gate": "scalar"},
                                                        "grid": {"layers": [10, 30], "length": [10], "lr": [1e-2, 1e-3]}}]})
    assert len(runs) == 4
    name, cfg = runs[0]
    assert cfg.lr == 1e-2 and cfg.batch_size == 2
    assert cfg.method == {"method": "llama_adapter", "gate": "scalar", "layers": 10, "length": 10}
    assert name == "llama_adapter-layers10-length10-lr0.01"
    table = markdown_table([row(cfg, {"F1": 12.345, "METEOR": None, "ROUGE-L": 1.0, "SacreBLEU": 2.0})])
    assert "| llama_adapter | 10 | 10 | 0.01 | 42 | 12.35 | n/a | 1.00 | 2.00 | n/a |" in table
    lora = markdown_table([row(TrainConfig(method={"method": "lora", "r": 4, "alpha": 8}), {})])
    assert "| lora | all | r=4, α=8 |" in lora  # each method describes its own settings (its registry entry)
