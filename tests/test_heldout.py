"""Held-out evaluation and confidence intervals (issue 26): the bootstrap against hand-computed cases, the paired
test, the split by dialogue, the train/eval overlap check, and `eval --config` with only data.eval."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from groundtune.cli import app
from groundtune.config import DataConfig
from groundtune.errors import DataError
from groundtune.metrics import METRICS, score
from groundtune.metrics.bootstrap import (SIGNATURE, paired_bootstrap, percentile_interval,
                                          resample_weights, resampled_scores)
from groundtune.metrics.report import Report
from tiny import tiny_run_folder

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# Per-example SQuAD F1 of 100 (exact), 0 (no shared token), 0, 0.
HITS = ["renew it online", "the fee is due", "call the office", "bring two forms"]
REFS = ["renew it online", "apply by mail", "visit us", "a passport photo"]


def test_percentile_method_by_hand():
    # the percentile method with numpy's linear interpolation: index 0.025 * 4 = 0.1 between 0 and 25 -> 2.5
    assert percentile_interval(np.array([100.0, 0, 50, 25, 75])) == pytest.approx((2.5, 97.5))


def test_resampled_scores_by_hand():
    # three hand-written resamples of per-example F1 [0, 50, 100]: counts (3,0,0), (1,1,1), (0,1,2)
    weights = np.array([[3.0, 0, 0], [1, 1, 1], [0, 1, 2]])
    assert resampled_scores(METRICS["F1"], [0.0, 50.0, 100.0], weights) == pytest.approx([0, 50, 250 / 3])
    # corpus BLEU of a resample is the corpus score of the drawn examples, not a mean of sentence scores
    preds, refs = ["the cat sat on the mat", "a dog"], ["the cat sat on a mat", "the dog barked"]
    stats = score(preds, refs, lang="en", metrics=["SacreBLEU"]).metrics["SacreBLEU"].corpus_stats
    twice_first = resampled_scores(METRICS["SacreBLEU"], stats, np.array([[2.0, 0], [1, 1]]))
    import sacrebleu

    assert twice_first[0] == pytest.approx(sacrebleu.corpus_bleu([preds[0]] * 2, [[refs[0]] * 2]).score)
    assert twice_first[1] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)


def test_bootstrap_interval_against_the_exact_distribution():
    # F1 per example is [100, 0, 0, 0]: a resample's mean is 25 * Binomial(4, 1/4), so P(0) = .316, P(25) = .422,
    # P(50) = .211, P(75) = .047, P(100) = .004. The 2.5th percentile is 0; the 97.5th is 75 (P(<= 50) = .949).
    report = score(HITS, REFS, lang="en", metrics=["F1"])
    assert report.per_example["F1"] == [100.0, 0.0, 0.0, 0.0]
    assert report.intervals["F1"] == pytest.approx((0.0, 75.0))
    drawn = resample_weights(4)
    assert drawn.shape == (1000, 4) and (drawn.sum(axis=1) == 4).all()
    assert np.mean(drawn[:, 0] == 0) == pytest.approx(0.75 ** 4, abs=0.04)  # the first example left out
    # the score itself is unchanged, and the signature says how the interval was made
    assert report["F1"] == 25.0 and f"|{SIGNATURE}|version:" in report.signatures[0]  # version stays last
    assert score(HITS, REFS, lang="en", metrics=["F1"], ci=False).signatures[0].count("ci:") == 0


def test_intervals_of_every_metric_are_fixed_and_hold_the_score():
    preds = [f"you can renew it online with form {i}" for i in range(12)]
    refs = [f"renew online with form {i * (i % 3)}" for i in range(12)]
    report = score(preds, refs, lang="en", metrics=["F1", "SacreBLEU", "ROUGE-L"])
    again = score(preds, refs, lang="en", metrics=["F1", "SacreBLEU", "ROUGE-L"])
    assert report.intervals == again.intervals  # a fixed seed: the same interval every run
    for name, (lo, hi) in report.intervals.items():
        assert lo <= report[name] <= hi and lo < hi, name
    table = report.table()
    assert "95% CI" in table and f"[{report.intervals['F1'][0]:.2f}, {report.intervals['F1'][1]:.2f}]" in table
    written = json.loads(report.to_json(per_example=True))
    assert Report.from_dict(written).intervals == report.intervals


def test_paired_bootstrap_identical_and_clearly_better():
    refs = [f"the office opens at {i} on weekdays" for i in range(30)]
    good = list(refs)
    bad = [f"please call us about item {i}" for i in range(30)]
    noisy = [r if i % 2 else bad[i] for i, r in enumerate(refs)]
    a, b, c = (score(p, refs, lang="en", metrics=["F1", "SacreBLEU"]) for p in (good, bad, noisy))
    same = paired_bootstrap(c, score(noisy, refs, lang="en", metrics=["F1", "SacreBLEU"]))
    assert same["F1"] == pytest.approx(1.0) and same["SacreBLEU"] == pytest.approx(1.0)
    better = paired_bootstrap(a, b)
    assert better["F1"] < 0.05 and better["SacreBLEU"] < 0.05
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(a, score(good[:10], refs[:10], lang="en", metrics=["F1", "SacreBLEU"]))


def _bench(name):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_reading_comprehension_questions_split_by_dialogue():
    rag = _bench("rag")
    _, _, queries, _ = rag.load_data(None)  # the shipped doc2dial fixtures, as questions
    side = {}
    for q in queries:
        dialogue = q.qid.rsplit("_", 1)[0]
        side.setdefault(dialogue, set()).add(rag._half(q.qid))
    assert all(len(s) == 1 for s in side.values())  # no dialogue on both sides
    assert {next(iter(s)) for s in side.values()} == {0, 1} and len(side) > 10


def _records(path, rows):
    path.write_text("".join(json.dumps({"document": "w2 w3 w4", "history": [], "question": "w5 w6",
                                        "answer": "w7 w8", **r}) + "\n" for r in rows))
    return str(path)


def test_eval_overlapping_train_is_warned_or_refused(tmp_path, capsys):
    from groundtune.tasks.grounded import load_samples

    train = _records(tmp_path / "train.jsonl", [{"id": f"d{i}_1", "dial_id": f"d{i}"} for i in range(5)])
    # d3_1 is a training example; d4 and d5 (another turn of d4) share a dialogue with the train file
    evaluation = _records(tmp_path / "eval.jsonl", [{"id": "d3_1", "dial_id": "d3"}, {"id": "d4_3", "dial_id": "d4"},
                                                    {"id": "d9_1", "dial_id": "d9"}])
    data = DataConfig(format="jsonl", train=train, eval=evaluation)
    load_samples(data, None, verbose=False)
    warning = capsys.readouterr().err
    assert "warning:" in warning and "1 of 3 eval example(s) share an id" in warning
    assert "2 dialogue(s) are on both sides" in warning and evaluation in warning
    with pytest.raises(DataError, match="2 dialogue"):
        load_samples(DataConfig(format="jsonl", train=train, eval=evaluation, eval_overlap="error"), None)
    held_out = _records(tmp_path / "held.jsonl", [{"id": "d9_1", "dial_id": "d9"}])
    load_samples(DataConfig(format="jsonl", train=train, eval=held_out, eval_overlap="error"), None, verbose=False)
    assert "warning" not in capsys.readouterr().err


def test_eval_with_only_an_eval_file(tmp_path):
    root = tiny_run_folder(tmp_path, 0, 5, [])
    config = tmp_path / "eval_only.yaml"
    config.write_text(yaml.safe_dump({"model": str(root / "model"), "output_dir": str(tmp_path / "out"),
                                      "data": {"format": "jsonl", "eval": str(root / "eval.jsonl")},
                                      "generation": {"max_new_tokens": 4}}))
    assert not (root / "train.jsonl").read_text().strip()  # no training data anywhere
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", "--config", str(config), "--metrics", "F1,SacreBLEU", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 5 and set(report["intervals"]) == {"F1", "SacreBLEU"}
    assert "95% CI" in result.output and SIGNATURE in result.output
    # no eval file and no held-out share: refused with the fix named
    config.write_text(yaml.safe_dump({"model": str(root / "model"), "data": {"format": "jsonl"}}))
    result = runner.invoke(app, ["eval", "--config", str(config)])
    assert result.exit_code == 2 and "data.eval" in result.output


def test_sweep_reports_intervals_paired_tests_and_a_failed_cell(tmp_path):
    root = tiny_run_folder(tmp_path, 8, 6, [])
    base = {"model": str(root / "model"), "precision": "fp32", "max_steps": 2, "batch_size": 4, "save_every": 10,
            "generation": {"max_new_tokens": 4},
            "data": {"format": "jsonl", "train": str(root / "train.jsonl"), "eval": str(root / "eval.jsonl"),
                     "max_document_tokens": 64, "max_answer_tokens": 8}}
    sweep = {"output_dir": str(tmp_path / "sweep"), "base": base,
             "runs": [{"method": {"method": "llama_adapter", "length": 2}, "grid": {"layers": [1, 2, 9]}},
                      {"method": {"method": "lora", "r": 1, "alpha": 1}, "grid": {"lr": [3.0e-4]}}],
             "compare": [["llama_adapter-layers2", "lora-lr0.0003"]]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep))
    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 1, result.output  # a cell failed: said in the status, the others ran
    out = tmp_path / "sweep"
    table = (out / "results.md").read_text()
    # the 3-layer tiny model has no 9th layer: that cell fails, is listed with its error, the others ran
    assert "Failed cells" in table and "method.layers is 9" in table
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["failed"]) == ["llama_adapter-layers9"]
    done = [r for r in summary["rows"] if not r.get("failed")]
    assert len(done) == 3 and all(r["F1 CI"][0] <= r["F1"] <= r["F1 CI"][1] for r in done)
    assert sum(r["differs from best"] == "best" for r in done) == 1
    assert all(r["differs from best"] in ("yes", "no") and 0 < r["p vs best"] <= 1 for r in done
               if r["differs from best"] != "best")
    assert [(p["a"], p["b"]) for p in summary["compare"]] == [("llama_adapter-layers2", "lora-lr0.0003")]
    assert 0 < summary["compare"][0]["p"]["F1"] <= 1 and "Paired bootstrap p-values" in table
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"F1", "F1 lo", "F1 hi", "trainable params", "peak RSS MB", "differs from best"} <= set(header)
    cell = json.loads((out / "llama_adapter-layers1" / "results.json").read_text())
    assert cell["intervals"]["F1"] is not None and cell["report"]["ids"] and cell["train_seconds"] >= 0
    # a compare pair that names no cell is refused before anything trains
    sweep["compare"] = [["llama_adapter-layers2", "lora-lr9"]]
    path.write_text(yaml.safe_dump(sweep))
    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 2 and "lora-lr9" in result.output
