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
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from groundtune.cli import app
from tiny import tiny_model, tiny_samples, tiny_tokenizer

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
    root = tmp_path_factory.mktemp("bad_input")
    tiny_model("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    for split, seed, n in (("train", 0, 8), ("eval", 1, 4)):
        lines = [json.dumps({"document": s.prompt, "history": [], "question": "w10 w11", "answer": s.answer})
                 for s in tiny_samples(n, seed)]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "docs.txt").write_text("Renew your licence online.\n\nA lapsed insurance policy needs a new quote.\n\n"
                                   "Pay the fee at the office.\n")
    assert cli("index", root / "docs.txt", "-o", root / "index", "--no-dense").exit_code == 0
    return root


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
    # an empty folder is fine, and --overwrite replaces a non-empty one on purpose
    (tmp_path / "empty").mkdir()
    assert cli("index", docs, "-o", tmp_path / "empty", "--no-dense").exit_code == 0
    assert cli("index", docs, "-o", user, "--no-dense", "--overwrite").exit_code == 0
    assert not (user / "important.txt").exists() and (user / "index.json").exists()


def test_train_reranker_refuses_a_non_empty_output(workspace, tmp_path):
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
    from test_merge import make_model

    from groundtune.merge import chat_vector

    models = {name: make_model(tmp_path / name, seed) for seed, name in enumerate(("base", "chat", "cp"))}
    flag, out = tmp_path / "writing", tmp_path / "out"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from groundtune.merge import chat_vector, writer
        original = writer.ShardWriter.write
        def slow_write(self, chunk, calls=[0]):
            calls[0] += 1
            if calls[0] == 5:
                Path({str(flag)!r}).touch()
                time.sleep(60)
            original(self, chunk)
        writer.ShardWriter.write = slow_write
        chat_vector({str(models['base'])!r}, {str(models['chat'])!r}, {str(models['cp'])!r}, {str(out)!r},
                    max_shard_size="40KB", chunk_elements=500, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), "the merge never reached the write"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert not out.exists() and left and all(n.startswith(f".out.tmp.{proc.pid}.") for n in left)
    chat_vector(models["base"], models["chat"], models["cp"], out, progress=False)
    assert (out / "config.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
