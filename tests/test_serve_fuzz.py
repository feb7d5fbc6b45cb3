"""Fuzzing `groundtune serve` with schemathesis: property-based requests generated from the app's own OpenAPI
schema (valid ones and invalid ones: its coverage, fuzzing and stateful phases) against every /v1 and /admin
operation of a real server on 127.0.0.1, with the API key, a fixed seed and a bounded number of examples. No
answer may be a 5xx, and the server must still serve afterwards.

schemathesis runs through its command line in a child process (its documented interface), reading the schema
from a file, since the server does not publish it; its JSON report gives the counts."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
pytest.importorskip("uvicorn")

import groundtune as gt  # noqa: E402
from groundtune.serve import BackgroundServer, build  # noqa: E402
from test_serve import base_model, one_thread  # noqa: E402,F401  (fixture: one torch thread for the tiny model)
from tiny import tiny_tokenizer  # noqa: E402

KEY = "fuzz-key-0123456789abcdef"
MAX_EXAMPLES = 10  # per operation and phase: about 400 requests, 25-30 s on two busy cores


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    lora = gt.save_adapter(gt.attach(base_model(), gt.LoraConfig(r=2, alpha=4)), root / "lora")
    app, engine = build(base_model(), tiny_tokenizer(), {"lora": lora}, api_key=KEY, base_name="tiny-base",
                        adapter_dir=root / "kept", max_upload_bytes=2**20)
    with BackgroundServer(app) as url:
        yield url, app, engine, root
    engine.close()


def test_schemathesis_finds_no_server_error_on_v1_and_admin(fuzzed):
    url, app, engine, root = fuzzed
    schema = app.openapi()
    # `model` names one of the served models: pinned to them, so that generated requests reach generation
    # (a random name stops at the 404) and the other fields are fuzzed behind it.
    for component in schema["components"]["schemas"].values():
        if "model" in component.get("properties", {}):
            component["properties"]["model"] = {"type": "string", "enum": ["tiny-base", "lora"]}
    (root / "openapi.json").write_text(json.dumps(schema))
    report = root / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", str(root / "openapi.json"), "--url", url,
         "--header", f"Authorization: Bearer {KEY}", "--checks", "not_a_server_error",
         "--include-path-regex", "^/(v1|admin)/", "--max-examples", str(MAX_EXAMPLES), "--seed", "20",
         "--workers", "1", "--request-timeout", "60", "--report", "json", "--report-json-path", str(report)],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert report.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        up = r.status == 200
    print(f"\nschemathesis {result['schemathesis_version']}: {cases['generated']} test cases on "
          f"{result['operations']['tested']} operations in {result['running_time']:.1f} s, "
          f"{cases['with_failures']} with a server error; server up afterwards: {up}")
    assert result["failures"] == [] and cases["with_failures"] == 0, run.stdout[-5000:]
    assert result["errors"] == [] and run.returncode == 0, run.stdout[-5000:]
    assert result["operations"]["tested"] == 6 and cases["generated"] >= 200  # every /v1 and /admin operation
    assert up
    out = json.dumps({"model": "tiny-base", "prompt": "w10 w11", "max_tokens": 2}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=out, headers={"Authorization": f"Bearer {KEY}",
                                                                             "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
