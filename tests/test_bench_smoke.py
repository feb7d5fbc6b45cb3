"""Every bench/*.py runs with --smoke in seconds and prints, as its last line, the JSON keys its docstring promises.

A bench promises its keys in its module docstring, in a paragraph that starts with `JSON keys:` and lists them
comma-separated (it may wrap over lines; a blank line ends it). Every bench prints `smoke` (true here) and
`skipped` (peer -> why it did not run: a missing peer is reported, not a crash). Files named _*.py in bench/ are
helpers, not benches. The benches run two at a time, one torch thread each, so the whole file takes about a minute.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 300  # per bench; a smoke run takes seconds on an idle machine, this only catches a hang
PARALLEL = 2


def promised_keys(path: Path) -> list[str]:
    """The keys listed in the `JSON keys:` paragraph of the file's module docstring (read without importing it)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        if text.startswith("JSON keys:"):
            keys = [k.strip() for k in text.removeprefix("JSON keys:").split(",")]
            assert all(keys), f"{path.name}: an empty key in its `JSON keys:` paragraph"
            assert len(set(keys)) == len(keys), f"{path.name}: a key listed twice in `JSON keys:`"
            return keys
    raise AssertionError(f"{path.name}: its docstring has no `JSON keys: a, b, ...` paragraph")


def run_smoke(name: str, tmp: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GROUNDTUNE_CACHE": str(tmp / name),
           "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
           # two benches share the cores: one thread each instead of two fighting over both
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, f"bench/{name}", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        return {"name": name, "returncode": None, "stdout": err.stdout or "", "stderr": err.stderr or "",
                "seconds": time.perf_counter() - start}
    return {"name": name, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "seconds": time.perf_counter() - start}


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """Start the smoke runs of every selected bench at once (PARALLEL at a time); each test waits for its own."""
    selected = [item.callspec.params["bench"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_bench_smoke" and hasattr(item, "callspec")]
    tmp = tmp_path_factory.mktemp("bench-smoke")
    pool = ThreadPoolExecutor(PARALLEL)
    futures = {name: pool.submit(run_smoke, name, tmp) for name in dict.fromkeys(selected)}
    yield futures
    for future in futures.values():
        future.cancel()
    pool.shutdown(wait=True)


def test_bench_glob_finds_the_benches():
    assert len(BENCHES) >= 7, BENCHES


@pytest.mark.parametrize("bench", BENCHES)
def test_bench_smoke(bench, smoke_runs):
    keys = promised_keys(ROOT / "bench" / bench)
    run = smoke_runs[bench].result()
    tail = f"\n--- stdout (tail) ---\n{run['stdout'][-2000:]}\n--- stderr (tail) ---\n{run['stderr'][-4000:]}"
    assert run["returncode"] is not None, f"{bench} --smoke ran past {TIMEOUT_S}s{tail}"
    assert run["returncode"] == 0, f"{bench} --smoke exited {run['returncode']} after {run['seconds']:.0f}s{tail}"
    lines = run["stdout"].strip().splitlines()
    assert lines, f"{bench} --smoke printed nothing{tail}"
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{bench} --smoke: the last stdout line is not JSON: {lines[-1][:300]!r}{tail}")
    assert isinstance(result, dict), f"{bench} --smoke: the last line is JSON but not an object"
    missing, extra = [k for k in keys if k not in result], [k for k in result if k not in keys]
    assert not missing and not extra, (f"{bench}: keys promised in its docstring but not printed {missing}; "
                                       f"printed but not promised {extra}")
    assert result.get("smoke") is True, f"{bench}: every bench prints smoke: true under --smoke"
    # a peer that is not installed is named here, with the reason, instead of crashing the bench
    assert isinstance(result.get("skipped"), dict), f"{bench}: every bench prints skipped: {{peer: reason}}"
