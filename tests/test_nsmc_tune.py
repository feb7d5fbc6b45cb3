"""scripts/nsmc_tune.py --smoke: both recipes train and score on a tiny random Gemma 3 (seconds), and the split it
measures on keeps the test reviews out of training."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_runs_both_recipes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GROUNDTUNE_CACHE": str(tmp_path / "cache"),
           "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "scripts/nsmc_tune.py", "--smoke", "--output-dir", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["smoke"] and [r["recipe"] for r in summary["results"]] == ["words", "head"]
    for row in summary["results"]:
        low, high = row["test_ci95"]
        assert row["train_examples"] == 8 and row["params"] > 0 and low <= row["test_accuracy"] <= high
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"] == summary["results"]


def test_the_split_leaves_out_test_reviews():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from nsmc_tune import split_pool
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    from groundtune.tasks.classify import LabelledText

    test = [LabelledText("1", "최고", 1), LabelledText("2", "별로", 0)]
    pool = [LabelledText("1", "다른 리뷰", 1), LabelledText("9", "별로", 0)] + \
        [LabelledText(str(i), f"리뷰 {i}", i % 2) for i in range(10, 20)]
    dev, train, dropped = split_pool(pool, test, dev_size=3, max_size=5, seed=0)
    assert dropped == 2 and len(dev) == 3 and len(train) == 5  # same id, and same text
    assert not {r.id for r in dev + train} & {"1", "2"} and not {r.text for r in dev + train} & {"최고", "별로"}
