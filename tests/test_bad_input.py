"""Bad inputs and faults, one test per finding of the robustness review at least.

Each test asserts the same contract: the message (one line, `error: ...`) names the file, record or key; the
exit status is 2; no traceback is printed; and nothing that existed before is changed. The kill tests check
what is on disk after the kill and again after the rerun.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from groundtune.cli import app
from tiny import tiny_run_folder

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


class snapshot:
    """Every file under `roots` (or the file itself) -> its bytes, folders -> None; `changed()` compares again."""

    def __init__(self, *roots: Path):
        self.roots, self.files = roots, self._read(roots)

    @staticmethod
    def _read(roots) -> dict:
        seen = {}
        for root in roots:
            if root.is_file():
                seen[root] = root.read_bytes()
                continue
            for path in sorted(root.rglob("*")):
                seen[path] = path.read_bytes() if path.is_file() else None
        return seen

    def changed(self) -> list:
        now = self._read(self.roots)
        return sorted(str(p) for p in set(now) | set(self.files) if now.get(p, 0) != self.files.get(p, 0))


def refused(result, *names, before: snapshot | None = None):
    """Exit 2, one `error:` line on stderr naming every one of `names`, no traceback, `before` unchanged."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "error: " in result.stderr, result.output
    for name in names:
        assert str(name) in result.stderr, (name, result.stderr)
    if before is not None:
        assert not before.changed()
    return result.stderr


def run_config(root, **kw):
    cfg = {"model": str(root / "model"), "method": {"method": "llama_adapter", "layers": 2, "length": 3},
           "data": {"format": "jsonl", "train": str(root / "train.jsonl"), "max_document_tokens": 64,
                    "max_answer_tokens": 8},
           "output_dir": str(root / "runs" / "one"), "max_steps": 2, "batch_size": 4, "precision": "fp32",
           "lr": 1e-2, "save_every": 1}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tiny_run_folder(tmp_path_factory.mktemp("bad_input"), 8, 4, [])
    (root / "docs.txt").write_text("Renew your licence online.\n\nA lapsed insurance policy needs a new quote.\n\n"
                                   "Pay the fee at the office.\n")
    return root


@pytest.fixture(scope="module")
def index_dir(workspace):
    result = cli("index", workspace / "docs.txt", "-o", workspace / "index", "--no-dense")
    assert result.exit_code == 0, result.output
    return workspace / "index"


# --- 1. outputs never destroy what is there -------------------------------------------------------------------


def test_index_refuses_a_non_empty_output_and_an_input_as_output(workspace, tmp_path):
    docs = workspace / "docs.txt"
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "important.txt").write_text("precious")
    before = snapshot(user, docs)
    refused(cli("index", docs, "-o", user, "--no-dense"), user, "--overwrite", before=before)
    refused(cli("index", docs, "-o", docs, "--no-dense"), docs, "also an input", before=before)
    refused(cli("index", tmp_path, "-o", tmp_path, "--no-dense"), "also an input", before=before)
    # --overwrite does not make a folder of someone else's files replaceable
    refused(cli("index", docs, "-o", user, "--no-dense", "--overwrite"), user, "important.txt", before=before)
    # an empty folder is fine, and --overwrite replaces the command's own earlier output on purpose
    (tmp_path / "empty").mkdir()
    assert cli("index", docs, "-o", tmp_path / "empty", "--no-dense").exit_code == 0
    refused(cli("index", docs, "-o", tmp_path / "empty", "--no-dense"), "--overwrite")
    assert cli("index", docs, "-o", tmp_path / "empty", "--no-dense", "--overwrite").exit_code == 0
    assert (tmp_path / "empty" / "index.json").exists()


def test_train_reranker_refuses_a_non_empty_output(workspace, index_dir, tmp_path):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "important.txt").write_text("precious")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q1", "doc_id": "docs", "question": "lapsed insurance",
                                     "answer_span_ids": []}) + "\n")
    before = snapshot(user, workspace / "index")
    refused(cli("train-reranker", workspace / "index", questions, "-o", user), user, "--overwrite", before=before)
    refused(cli("train-reranker", workspace / "index", questions, "-o", workspace / "index"), "also an input",
            before=before)


def test_train_refuses_an_output_dir_holding_other_files(workspace, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(workspace, output_dir=str(out))))
    before = snapshot(out)
    refused(cli("train", path), out, "--overwrite", before=before)


def test_eval_out_that_is_a_folder_fails_before_scoring(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"prediction": "a b", "reference": "a b"}) + "\n")
    (tmp_path / "report").mkdir()
    refused(cli("eval", "--predictions", preds, "--out", tmp_path / "report"), tmp_path / "report")


# --- 2. stale temporary siblings of dead runs are cleaned ------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_siblings_of_dead_runs_go_and_live_ones_stay(tmp_path):
    from groundtune.fileio import atomic_folder, atomic_write

    dead = _dead_pid()
    (tmp_path / f".out.tmp.{dead}.abc").mkdir()
    (tmp_path / f".out.tmp.{dead}.abc" / "shard.safetensors").write_bytes(b"x" * 10)
    (tmp_path / f".out.tmp.{os.getppid()}.live").mkdir()  # a live process's build
    (tmp_path / f".r.json.tmp.{dead}.x").write_text("half")
    with atomic_folder(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
    atomic_write(tmp_path / "r.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", "r.json", f".out.tmp.{os.getppid()}.live"])
    # killed between moving the old folder aside and renaming the new one in: the old one comes back
    old = tmp_path / f".keep.old.{dead}.q"
    (old / "keep").mkdir(parents=True)
    (old / "keep" / "f").write_text("old")
    with atomic_folder(tmp_path / "keep") as tmp:
        (tmp / "f").write_text("new")
    assert (tmp_path / "keep" / "f").read_text() == "new" and not old.exists()


def test_adapter_writer_leaves_no_old_folder_when_it_cannot_replace(tmp_path, monkeypatch):
    from groundtune import fileio
    from groundtune.errors import OutputError

    target = tmp_path / "adapter"
    target.mkdir()
    (target / "w").write_text("old")
    real = os.replace

    def refuse_moving_the_old_one(src, dst):  # what a read-only folder does (root is not refused)
        if Path(src) == target:
            raise PermissionError(13, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", refuse_moving_the_old_one)
    with pytest.raises(OutputError, match="cannot replace .*adapter"):
        with fileio.atomic_folder(target) as tmp:
            (tmp / "w").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"] and (target / "w").read_text() == "old"


def test_killed_merge_temp_folder_is_cleaned_by_the_next_run(tmp_path):
    from test_merge import kill_merge_mid_write, make_model

    from groundtune.merge import chat_vector

    models = {name: make_model(tmp_path / name, seed) for seed, name in enumerate(("base", "chat", "cp"))}
    out = tmp_path / "out"
    pid = kill_merge_mid_write(models, out, tmp_path / "writing")
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert not out.exists() and left and all(n.startswith(f".out.tmp.{pid}.") for n in left)
    chat_vector(models["base"], models["chat"], models["cp"], out, progress=False)
    assert (out / "config.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]


# --- 3. a resume refuses settings that change the result ------------------------------------------------------


def test_resume_refuses_changed_settings_and_lists_them(workspace, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(workspace, output_dir=str(tmp_path / "run"))))
    assert cli("train", path).exit_code == 0
    before = snapshot(tmp_path / "run")
    other = tmp_path / "other.jsonl"
    other.write_text((workspace / "train.jsonl").read_text())
    msg = refused(cli("train", path, "--resume", "--set", "lr=0.05"), "lr: 0.01 -> 0.05", "checkpoint", before=before)
    assert "--overwrite" in msg
    refused(cli("train", path, "--resume", "--set", f"data.train={other}", "--set", "seed=1"), "data.train",
            "seed: 42 -> 1", before=before)
    refused(cli("train", path, "--resume", "--set", "max_steps=1"), "max_steps: 2 -> 1", before=before)
    # logging settings, and an explicit longer schedule, may change
    result = cli("train", path, "--resume", "--set", "save_every=1", "--set", "max_steps=3")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["max_steps"] == 3 and [r["step"] for r in saved["losses"]] == [1, 2, 3]
    # a fresh start over the finished run needs --overwrite
    refused(cli("train", path), "already holds a checkpoint", "--resume", "--overwrite")


def test_corrupt_checkpoint_is_named_before_training(workspace, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(workspace, output_dir=str(tmp_path / "run"))))
    assert cli("train", path).exit_code == 0
    ckpt = tmp_path / "run" / "checkpoint"
    (ckpt / "state.json").write_text("{not json")
    before = snapshot(tmp_path / "run")
    refused(cli("train", path, "--resume"), ckpt / "state.json", before=before)
    (ckpt / "state.json").write_text(json.dumps({"step": 1}))
    (ckpt / "trainable.safetensors").write_bytes(b"\x10\x00\x00")
    before = snapshot(tmp_path / "run")
    refused(cli("train", path, "--resume"), ckpt, "corrupt", before=before)


# --- 5 and 10. every setting has a type and a range, checked when the config is read ----------------------------


@pytest.mark.parametrize("key, value, shown", [
    ("max_steps", -5, "[1, inf)"), ("epochs", 0, "(0, inf)"), ("epochs", -1, "(0, inf)"), ("lr", "fast", "lr"),
    ("max_steps", "three", "whole number"), ("batch_size", 0, "[1, inf)"), ("grad_accum", 0, "[1, inf)"),
    ("warmup_ratio", 2, "[0, 1]"), ("precision", "fp8", "bf16"), ("data", {"max_answer_tokens": -1}, "data.max_answer_tokens"),
    ("data", {"histroy_turns": 1}, "histroy_turns"), ("method", {"method": "llama_adapter", "layres": 2}, "layres"),
    ("method", {"method": "llama_adapter", "length": 0}, "method.length is 0"), ("learning_rate", 0.1, "known keys"),
])
def test_bad_setting_is_refused_before_the_model_loads(workspace, tmp_path, key, value, shown):
    # the model does not exist: an error about the setting proves nothing was loaded first
    cfg = run_config(workspace, model=str(tmp_path / "no-model"), output_dir=str(tmp_path / "run"))
    cfg[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    msg = refused(cli("train", path), path, shown)
    assert "no-model" not in msg and not (tmp_path / "run").exists()
    # the same setting in a sweep's base (or its runs' method block) is refused the same way
    sweep = _sweep_file(tmp_path, cfg, method=cfg["method"] if key == "method" else None, lr=cfg.get("lr"))
    refused(cli("sweep", sweep), sweep, shown)


def test_set_override_is_checked_like_the_file(workspace, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(workspace, model=str(tmp_path / "no-model"))))
    refused(cli("train", path, "--set", "lr=fast"), "lr is 'fast'")
    refused(cli("train", path, "--set", "max_steps=-5"), "max_steps is -5", "[1, inf)")


def test_demo_and_glue_refuse_non_positive_lengths(tmp_path):
    refused(cli("demo", "--steps", "-1", "--output-dir", tmp_path / "demo"), "--steps is -1")
    refused(cli("glue", "--task", "mrpc", "--set", "epochs=-1", "--output-dir", tmp_path / "g"), "epochs is -1",
            "(0, inf)")
    assert not (tmp_path / "demo").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize("kind", ["yaml", "train_jsonl", "predictions", "classify_tsv", "summarize_json"])
def test_non_utf8_input_names_the_file_and_line(workspace, tmp_path, kind):
    bad = "안녕\n".encode("cp949")
    if kind == "yaml":
        path = tmp_path / "run.yaml"
        path.write_bytes(b"lr: 0.01\n# " + bad)
        refused(cli("train", path), path, "line 2", "UTF-8")
    elif kind == "train_jsonl":
        path = tmp_path / "train.jsonl"
        path.write_bytes((workspace / "train.jsonl").read_bytes() + bad)
        cfg = tmp_path / "run.yaml"
        cfg.write_text(yaml.safe_dump(run_config(workspace, output_dir=str(tmp_path / "run"),
                                                 data={"format": "jsonl", "train": str(path)})))
        refused(cli("train", cfg), path, "line 9", "UTF-8")
    elif kind == "predictions":
        path = tmp_path / "p.jsonl"
        path.write_bytes(b'{"prediction": "a", "reference": "' + bad.strip() + b'"}\n')
        refused(cli("eval", "--predictions", path), path, "line 1", "UTF-8")
    elif kind == "classify_tsv":
        path = tmp_path / "rows.txt"
        path.write_bytes(b"id\tdocument\tlabel\n1\t" + bad.strip() + b"\t1\n")
        refused(cli("classify", path, "--shots", "0", "--model", workspace / "model"), path, "line 2", "UTF-8")
    else:
        path = tmp_path / "pairs.json"
        path.write_bytes(b'[{"article": "' + bad.strip() + b'", "summary": "x"}]')
        refused(cli("summarize-eval", path, "--model", workspace / "model"), path, "line 1", "UTF-8")


# --- 4 and 9. sweeps: keyed on the full config, unknown keys refused, a killed sweep continues ------------------


def _sweep_file(tmp_path, base, method=None, lr=1e-2, **top):
    base = {k: v for k, v in base.items() if k not in ("output_dir", "method")}
    sweep = {"output_dir": str(tmp_path / "sweep"), "base": base,
             "runs": [{"method": method or {"method": "llama_adapter", "layers": 1, "length": 2},
                       "grid": {"lr": [lr]}}], **top}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweep_reruns_a_cell_whose_config_changed(workspace, tmp_path):
    path = _sweep_file(tmp_path, run_config(workspace))
    assert cli("sweep", path).exit_code == 0
    cell = tmp_path / "sweep" / "llama_adapter-lr0.01" / "results.json"
    assert json.loads(cell.read_text())["config"]["max_steps"] == 2
    before = snapshot(tmp_path / "sweep")
    assert cli("sweep", path).exit_code == 0  # nothing changed: nothing trains again
    assert not [p for p in before.changed() if not p.endswith((".md", ".csv", ".png", "sweep.json"))]
    path = _sweep_file(tmp_path, run_config(workspace, max_steps=3))
    assert cli("sweep", path).exit_code == 0
    saved = json.loads(cell.read_text())
    assert saved["config"]["max_steps"] == 3 and len(saved["losses"]) == 3


def test_sweep_refuses_unknown_keys(workspace, tmp_path):
    path = _sweep_file(tmp_path, run_config(workspace), bse={"lr": 1})
    refused(cli("sweep", path), path, "bse", "base")
    sweep = yaml.safe_load(path.read_text())
    sweep.pop("bse")
    sweep["runs"][0]["gird"] = {"lr": [1]}
    path.write_text(yaml.safe_dump(sweep))
    refused(cli("sweep", path), path, "gird", "grid")
    assert not (tmp_path / "sweep").exists()


_DIE_AT_SECOND_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    from groundtune import train as T
    from groundtune.cli import app
    original, calls = T.save_file, [0]
    def save_then_die(tensors, path, *args, **kwargs):
        calls[0] += 1
        original(tensors, path, *args, **kwargs)
        if calls[0] == {at}:  # in the middle of writing a checkpoint: the tensors are in its temp folder
            os.kill(os.getpid(), signal.SIGKILL)
    T.save_file = save_then_die
    sys.argv = ["groundtune", *{args!r}]
    app()
""")


def _killed(args, at=2):
    proc = subprocess.Popen([sys.executable, "-c", _DIE_AT_SECOND_CHECKPOINT.format(args=[str(a) for a in args], at=at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    return proc


def test_killed_train_resumes_and_cleans_its_temp_folder(workspace, tmp_path):
    path = tmp_path / "run.yaml"
    out = tmp_path / "run"
    path.write_text(yaml.safe_dump(run_config(workspace, output_dir=str(out), max_steps=3)))
    proc = _killed(["train", path])
    # after the kill: the step-1 checkpoint whole, step 2 half-written in a hidden temp folder, no adapter
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 1
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] and not (out / "adapter").exists()
    assert all(p.name.startswith(f".checkpoint.tmp.{proc.pid}.") for p in out.iterdir() if p.name.startswith("."))
    before = snapshot(out)
    refused(cli("train", path), "--resume", before=before)
    result = cli("train", path, "--resume")
    assert result.exit_code == 0, result.output
    # after the rerun: finished, every step once, nothing hidden left
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    assert [r["step"] for r in json.loads((out / "results.json").read_text())["losses"]] == [1, 2, 3]
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_killed_sweep_continues_with_resume(workspace, tmp_path):
    path = _sweep_file(tmp_path, run_config(workspace, max_steps=3))
    cell = tmp_path / "sweep" / "llama_adapter-lr0.01"
    _killed(["sweep", path])
    assert json.loads((cell / "checkpoint" / "state.json").read_text())["step"] == 1
    assert not (cell / "results.json").exists() and not (tmp_path / "sweep" / "results.md").exists()
    before = snapshot(tmp_path / "sweep")
    refused(cli("sweep", path), "llama_adapter-lr0.01", "--resume", before=before)
    result = cli("sweep", path, "--resume")
    assert result.exit_code == 0, result.output
    saved = json.loads((cell / "results.json").read_text())
    assert [r["step"] for r in saved["losses"]] == [1, 2, 3] and (tmp_path / "sweep" / "results.md").exists()
    assert not [p for p in cell.iterdir() if p.name.startswith(".")]


# --- 8. scoring stays within a stated memory bound on any input ------------------------------------------------


def test_eval_of_a_200k_word_record_stays_under_1_gb(tmp_path):
    words = " ".join(f"w{i % 5000}" for i in range(200_000))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"prediction": words, "reference": words[::-1]}) + "\n"
                     + json.dumps({"prediction": "a b c", "reference": "a c"}) + "\n")
    script = textwrap.dedent(f"""
        import resource, sys
        from typer.testing import CliRunner
        from groundtune.cli import app
        result = CliRunner().invoke(app, ["eval", "--predictions", {str(preds)!r}, "--lang", "en",
                                          "--metrics", "F1,SacreBLEU,ROUGE-L,ROUGE-1,METEOR"])
        print(result.output)
        # VmHWM is this process's own peak; ru_maxrss would carry over the (larger) pytest parent's from the fork
        try:
            peak_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
        except OSError:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("exit", result.exit_code, "peak_mb", peak_kb // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "exit 0" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    peak = int(proc.stdout.rsplit("peak_mb", 1)[1])
    assert peak < 1024, peak
    assert "lcs_cap:2000|capped:1" in proc.stdout  # the signature says a text was cut


def test_only_the_requested_rouge_type_is_built(monkeypatch):
    from rouge_score import rouge_scorer

    from groundtune.metrics import score

    built = []
    real = rouge_scorer.RougeScorer.__init__

    def spy(self, rouge_types, *args, **kwargs):
        built.extend(rouge_types)
        real(self, rouge_types, *args, **kwargs)

    monkeypatch.setattr(rouge_scorer.RougeScorer, "__init__", spy)
    report = score(["a b c"], ["a c"], lang="en", metrics=["ROUGE-1"])
    assert built == ["rouge1"] and list(report.scores) == ["ROUGE-1"]


# --- 6. retrieval evaluation: what cannot be scored is dropped and counted, bad counts refused --------------------


def test_retrieval_eval_drops_questions_outside_the_index(index_dir, tmp_path):
    doc_id = json.loads((index_dir / "passages.jsonl").read_text().splitlines()[0])["doc_id"]
    questions = tmp_path / "q.jsonl"
    rows = [{"id": "in", "doc_id": doc_id, "question": "user: lapsed insurance", "answer_span_ids": []},
            {"id": "out1", "doc_id": "not-indexed", "question": "user: renew", "answer_span_ids": []},
            {"id": "out2", "doc_id": "not-indexed", "question": "user: fee", "answer_span_ids": []}]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("retrieve", index_dir, "--eval", questions, "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "kept 1 of 3" in result.output and "document not in the index" in result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["queries"] == 1 and saved["dropped"] == {"document not in the index": 2}
    only_missing = tmp_path / "missing.jsonl"
    only_missing.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    refused(cli("retrieve", index_dir, "--eval", only_missing, "--out", tmp_path / "r2.json"), "in this index")
    assert not (tmp_path / "r2.json").exists()


@pytest.mark.parametrize("args, shown", [(["lapse", "-k", "-1"], "-k is -1"), (["lapse", "-k", "0"], "-k is 0"),
                                         (["   "], "QUERY is empty"), (["lapse", "--limit", "0"], "--limit is 0")])
def test_retrieve_refuses_bad_counts_and_blank_queries(index_dir, args, shown):
    refused(cli("retrieve", index_dir, *args), shown)


# --- 7. smaller silent ones -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def merge_models(tmp_path_factory):
    from test_merge import make_model

    root = tmp_path_factory.mktemp("merge_models")
    return {name: make_model(root / name, seed) for seed, name in enumerate(("base", "chat", "cp"))}


def test_merge_skip_that_matches_nothing_is_refused(merge_models, tmp_path):
    m = merge_models
    refused(cli("merge", "chat-vector", "--target", m["cp"], "--chat", m["chat"], "--base", m["base"],
                "--out", tmp_path / "out", "--skip", "*nrom*"), "'*nrom*'", "matches no tensor")
    refused(cli("merge", "extract", "--base", m["base"], "--chat", m["chat"], "--out", tmp_path / "v",
                "--skip", "*nrom*"), "'*nrom*'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "v").exists()


def test_merge_extract_of_a_model_from_itself_is_refused(merge_models, tmp_path):
    refused(cli("merge", "extract", "--base", merge_models["base"], "--chat", merge_models["base"],
                "--out", tmp_path / "v"), "same model", "--base")
    assert not (tmp_path / "v").exists()


def test_corrupt_saved_vector_is_named_before_writing(merge_models, tmp_path):
    m = merge_models
    assert cli("merge", "extract", "--base", m["base"], "--chat", m["chat"], "--out", tmp_path / "v").exit_code == 0
    (tmp_path / "v" / "chat_vector.json").write_text("{broken")
    before = snapshot(tmp_path / "v")
    refused(cli("merge", "apply", "--target", m["cp"], "--vector", tmp_path / "v", "--out", tmp_path / "out"),
            tmp_path / "v" / "chat_vector.json", "corrupt", before=before)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--negatives", "0"), ("--epochs", "0"), ("--batch-size", "0"),
                                         ("--lr", "-1")])
def test_train_reranker_refuses_non_positive_settings(index_dir, tmp_path, flag, value):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q", "doc_id": "d", "question": "user: x", "answer_spans_ids": []}) + "\n")
    refused(cli("train-reranker", index_dir, questions, "-o", tmp_path / "r", flag, value), f"{flag} is {value}")
    assert not (tmp_path / "r").exists()


def test_train_reranker_refuses_an_unknown_kind(index_dir, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q", "doc_id": "d", "question": "user: x", "answer_spans_ids": []}) + "\n")
    refused(cli("train-reranker", index_dir, questions, "-o", tmp_path / "r", "--kind", "colbert"), "--kind",
            "late-interaction", "cross-encoder")
    assert not (tmp_path / "r").exists()


def test_demo_names_the_model_it_loads(tmp_path):
    result = cli("demo", "--model", tmp_path / "my-model", "--steps", "1", "--output-dir", tmp_path / "demo")
    refused(result, tmp_path / "my-model")
    assert f"loading {tmp_path / 'my-model'}" in result.stdout and "SmolLM2" not in result.output


# --- 10. a truncated dense index is named when it is loaded ---------------------------------------------------------


def test_truncated_faiss_index_is_named(tmp_path):
    import faiss
    import numpy as np

    from groundtune.errors import DataError
    from groundtune.retrieval.dense import CONFIG_FILE, INDEX_FILE, DenseIndex

    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).standard_normal((20, 8)).astype("float32"))
    faiss.write_index(index, str(tmp_path / INDEX_FILE))
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"encoder": "any"}))
    data = (tmp_path / INDEX_FILE).read_bytes()
    (tmp_path / INDEX_FILE).write_bytes(data[:len(data) // 3])
    for mmap in (True, False):
        with pytest.raises(DataError, match=r"passages\.faiss is truncated or corrupt.*--overwrite"):
            DenseIndex.load(tmp_path, mmap=mmap)
    (tmp_path / INDEX_FILE).write_bytes(data)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(DataError, match="missing or corrupt"):
        DenseIndex.load(tmp_path)
