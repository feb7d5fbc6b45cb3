"""The one output guard (groundtune.fileio.guard_output), values checked for sense, and the error style of the
second robustness review (issue 20). Each finding is a test named after it; the write audit runs every command
that writes and checks that each file it touched lies where the guard approved."""

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import typer
import yaml

from groundtune import fileio
from groundtune.cli import app
from test_bad_input import cli, index_dir, refused, run_config, snapshot, workspace  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def ws(workspace):
    """The bad-input tests' tiny run folder (model, data, docs.txt), built once for this module."""
    return workspace


def _questions(index_dir, path):
    doc_id = json.loads((index_dir / "passages.jsonl").read_text().splitlines()[0])["doc_id"]
    path.write_text(json.dumps({"id": "q1", "doc_id": doc_id, "question": "user: lapsed insurance",
                                "answer_span_ids": []}) + "\n")
    return path


# --- inputs overwritten ---------------------------------------------------------------------------------------


def test_eval_out_equal_to_the_predictions_is_refused(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"prediction": "a b", "reference": "a b"}) + "\n")
    before = snapshot(preds)
    refused(cli("eval", "--predictions", preds, "--out", preds), preds, "also an input", before=before)


def test_retrieve_eval_out_equal_to_the_dialogue_file_is_refused(index_dir, tmp_path):
    questions = _questions(index_dir, tmp_path / "d.jsonl")
    before = snapshot(questions, index_dir)
    refused(cli("retrieve", index_dir, "--eval", questions, "--out", questions), questions, "also an input",
            before=before)
    refused(cli("retrieve", index_dir, "--eval", questions, "--out", index_dir / "r.json"), "inside an input",
            before=before)


def test_classify_output_equal_to_the_data_is_refused(ws, tmp_path):
    rows = tmp_path / "c.jsonl"
    rows.write_text(json.dumps({"document": "w10 w11", "label": 1}) + "\n")
    before = snapshot(rows)
    # the model does not exist: refusing the output first proves it is checked before any work
    refused(cli("classify", rows, "--output", rows, "--shots", "0", "--model", tmp_path / "no-model"), rows,
            "also an input", before=before)


def test_classify_output_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "out").mkdir()
    msg = refused(cli("classify", "--output", tmp_path / "out", "--model", tmp_path / "no-model"), tmp_path / "out",
                  "is a folder")
    assert "no-model" not in msg


# --- folders wiped or replaced -----------------------------------------------------------------------------------


def test_index_overwrite_keeps_a_folder_of_other_files(ws, tmp_path):
    mine = tmp_path / "mine"
    (mine / "chapters").mkdir(parents=True)
    (mine / "thesis.tex").write_text("four years of work")
    (mine / "chapters" / "one.tex").write_text("chapter one")
    before = snapshot(mine)
    refused(cli("index", ws / "docs.txt", "-o", mine, "--no-dense", "--overwrite"), mine, "thesis.tex", before=before)
    # a user's file dropped into an index folder is not deleted by --overwrite either
    assert cli("index", ws / "docs.txt", "-o", tmp_path / "idx", "--no-dense").exit_code == 0
    assert fileio.read_marker(tmp_path / "idx")["command"] == "index"
    (tmp_path / "idx" / "notes.txt").write_text("mine")
    refused(cli("index", ws / "docs.txt", "-o", tmp_path / "idx", "--no-dense", "--overwrite"), "notes.txt")
    assert (tmp_path / "idx" / "notes.txt").read_text() == "mine"


def test_train_overwrite_keeps_a_folder_of_other_files(ws, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(ws, output_dir=str(out))))
    before = snapshot(out)
    refused(cli("train", path, "--overwrite"), out, "thesis.tex", before=before)


def _earlier_output(folder: Path, command: str, made: dict) -> snapshot:
    """A folder as an earlier run of `command` leaves it (its marker included)."""
    for name, text in made.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / fileio.MARKER).write_text(json.dumps({"command": command, "made": sorted({n.split("/")[0] for n in made})}))
    return snapshot(folder)


def test_demo_refuses_to_replace_an_earlier_run_without_overwrite(tmp_path):
    before = _earlier_output(tmp_path / "d", "demo", {"adapter/adapter_config.json": "{}", "checkpoint/state.json": "{}",
                                                      "results.json": "{}"})
    msg = refused(cli("demo", "--output-dir", tmp_path / "d", "--model", tmp_path / "no-model"), tmp_path / "d",
                  "--overwrite", before=before)
    assert "no-model" not in msg


def test_summarize_eval_refuses_a_non_empty_output_dir(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "draft.md").write_text("mine")
    before = snapshot(tmp_path / "s")
    refused(cli("summarize-eval", "--output-dir", tmp_path / "s", "--model", tmp_path / "no-model"), tmp_path / "s",
            "draft.md", before=before)


def test_glue_refuses_a_non_empty_output_dir(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "results.md").write_text("someone's table")
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\nfine\t1\n")
    before = snapshot(tmp_path / "g")
    refused(cli("glue", "--task", "sst2", "--train", train, "--output-dir", tmp_path / "g"), tmp_path / "g",
            before=before)


# --- nonsense written ----------------------------------------------------------------------------------------------


from test_bad_input import merge_models  # noqa: E402,F401  (three tiny models to merge)


def test_merge_ratio_that_overflows_writes_nothing(merge_models, tmp_path):
    m = merge_models
    refused(cli("merge", "chat-vector", "--target", m["cp"], "--chat", m["chat"], "--base", m["base"],
                "--out", tmp_path / "out", "--ratio", "1e39"), "inf or nan", "nothing was written")
    refused(cli("merge", "chat-vector", "--target", m["cp"], "--chat", m["chat"], "--base", m["base"],
                "--out", tmp_path / "out", "--ratio", "nan"), "ratio must be a finite number")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert cli("merge", "extract", "--base", m["base"], "--chat", m["chat"], "--out", tmp_path / "v").exit_code == 0
    refused(cli("merge", "apply", "--target", m["cp"], "--vector", tmp_path / "v", "--ratio", "1e39",
                "--out", tmp_path / "out"), "inf or nan")
    assert not (tmp_path / "out").exists()


def test_merge_finite_check_is_exact_in_every_dtype():
    import torch

    from groundtune.merge.stream import Stream

    stream = Stream(64, 0, False, "test")
    try:
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            x = torch.linspace(-3, 3, 64).to(dtype)
            assert stream.non_finite(x) == 0, dtype
            x[3], x[40] = float("inf"), float("nan")
            assert stream.non_finite(x) == 2, dtype
        # bfloat16 values near its limit overflow a float32 sum, yet every one of them is finite
        assert stream.non_finite(torch.full((64,), 3e38, dtype=torch.bfloat16)) == 0
    finally:
        stream.writes.stop()


def test_train_refuses_an_insane_learning_rate_without_force(ws, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(ws, lr=1e8, model=str(tmp_path / "no-model"),
                                              output_dir=str(tmp_path / "run"))))
    refused(cli("train", path), path, "lr is 1e+08", "--force")
    refused(cli("train", path, "--set", "method={method: lora}", "--set", "lr=0.5"), "lr is 0.5", "lora")
    assert not (tmp_path / "run").exists()
    # --force lets it through to the next check (here: the model that is not there)
    refused(cli("train", path, "--force"), "no-model")
    sweep = tmp_path / "sweep.yaml"
    base = {k: v for k, v in run_config(ws).items() if k not in ("output_dir", "method", "lr")}
    sweep.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "sweep"), "base": base, "runs": [
        {"method": {"method": "llama_adapter", "layers": 1, "length": 2}, "grid": {"lr": [1e-2, 1e8]}}]}))
    refused(cli("sweep", sweep), "lr is 1e+08", "--force")
    assert not (tmp_path / "sweep").exists()


def test_training_stops_when_the_weights_become_non_finite(ws, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(ws, lr=1e30, max_steps=4, save_every=1,
                                              output_dir=str(tmp_path / "run"))))
    refused(cli("train", path, "--force"), "training diverged at step 2", "the last good checkpoint (step 1)",
            "Lower lr")
    from safetensors.torch import load_file
    import torch

    saved = load_file(tmp_path / "run" / "checkpoint" / "trainable.safetensors")
    assert saved and all(torch.isfinite(t).all() for t in saved.values())
    assert not (tmp_path / "run" / "adapter").exists()


def test_resume_without_a_checkpoint_is_an_error(ws, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(ws, output_dir=str(tmp_path / "run"))))
    refused(cli("train", path, "--resume"), "no checkpoint", "--resume-if-possible")
    assert not (tmp_path / "run").exists()
    result = cli("train", path, "--resume-if-possible")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "adapter").is_dir()


# --- one error style -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_files")
    (root / "empty.tsv").write_text("")
    (root / "empty.jsonl").write_text("")
    (root / "empty.yaml").write_text("")
    (root / "cp949.tsv").write_bytes("문장\t1\n".encode("cp949"))
    (root / "wrong.tsv").write_text("a\tb\n1\t2\n")
    (root / "task.yaml").write_text("template: [unclosed\n")
    (root / "pairs.json").write_text(json.dumps([{"article": "w10 w11", "summary": "w10"}]))
    return root


@pytest.mark.parametrize("args, shown", [
    ([], ["--train"]),
    (["--task", "cola"], ["unknown GLUE task 'cola'"]),
    (["--task", "mrpc", "--train", "{root}/missing.tsv"], ["missing.tsv", "does not exist"]),
    (["--task", "mrpc", "--train", "{root}/empty.tsv"], ["empty.tsv", "is empty"]),
    (["--task", "sst2", "--train", "{root}/cp949.tsv"], ["cp949.tsv", "line 1", "UTF-8"]),
    (["--task", "mrpc", "--train", "{root}/wrong.tsv"], ["wrong.tsv", "no column"]),
])
def test_glue_bad_input_is_one_error_line(bad_files, tmp_path, args, shown):
    args = [a.format(root=bad_files) for a in args]
    refused(cli("glue", *args, "--output-dir", tmp_path / "g"), *shown)
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("case", ["empty_yaml", "no_train_key", "missing_train", "train_is_a_folder", "layers_999"])
def test_train_bad_input_is_one_error_line(ws, bad_files, tmp_path, case):
    if case == "empty_yaml":
        refused(cli("train", bad_files / "empty.yaml"), bad_files / "empty.yaml", "data.train")
        return
    data = {"format": "jsonl", "train": str(ws / "train.jsonl")}
    method = {"method": "llama_adapter", "layers": 2, "length": 3}
    if case == "no_train_key":
        del data["train"]
        shown = ["data.train is not set"]
    elif case == "missing_train":
        data["train"], shown = str(tmp_path / "nope.jsonl"), [tmp_path / "nope.jsonl", "does not exist"]
    elif case == "train_is_a_folder":
        (tmp_path / "data").mkdir()
        data["train"], shown = str(tmp_path / "data"), [tmp_path / "data", "is a folder"]
    else:
        method["layers"], shown = 999, ["method.layers is 999", "<= 3"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(ws, data=data, method=method, output_dir=str(tmp_path / "run"))))
    refused(cli("train", path), *shown)


@pytest.mark.parametrize("args, shown", [
    (["{root}/empty.jsonl"], ["empty.jsonl", "no rows to classify"]),
    (["--task", "{root}/task.yaml"], ["task.yaml", "line 2", "not valid YAML"]),
    (["--dtype", "float8"], ["--dtype is 'float8'", "bfloat16"]),
])
def test_classify_bad_input_is_one_error_line(ws, bad_files, args, shown):
    args = [a.format(root=bad_files) for a in args]
    refused(cli("classify", *args, "--shots", "0", "--limit", "1", "--model", ws / "model"), *shown)


@pytest.mark.parametrize("args, shown", [
    (["{root}/empty.jsonl"], ["empty.jsonl", "no article/summary pairs"]),
    (["{root}/pairs.json", "--template", "nope"], ["unknown template 'nope'", "koalpaca"]),
])
def test_summarize_eval_bad_input_is_one_error_line(ws, bad_files, args, shown):
    args = [a.format(root=bad_files) for a in args]
    refused(cli("summarize-eval", *args, "--model", ws / "model"), *shown)


@pytest.mark.parametrize("words", ["0", "-5"])
def test_index_words_must_be_positive(ws, tmp_path, words):
    refused(cli("index", ws / "docs.txt", "-o", tmp_path / "i", "--no-dense", "--segmentation", "token",
                "--words", words), f"--words is {words}", "[1, inf)")
    assert not (tmp_path / "i").exists()


def test_non_utf8_text_is_named_by_index_and_train_reranker(index_dir, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_bytes("안녕하세요\n".encode("cp949"))
    refused(cli("index", bad, "-o", tmp_path / "i", "--no-dense"), bad, "line 1", "UTF-8")
    questions = tmp_path / "q.jsonl"
    questions.write_bytes(b'{"id": "q", "doc_id": "d", "question": "user: ' + "안녕".encode("cp949") + b'"}\n')
    refused(cli("train-reranker", index_dir, questions, "-o", tmp_path / "r"), questions, "line 1", "UTF-8")


def test_retrieve_with_no_matching_passage_says_so(index_dir):
    result = cli("retrieve", index_dir, "zzzq qqqz")
    assert result.exit_code == 1, result.output
    assert "no passage" in result.stderr and "Traceback" not in result.output


# --- every command that writes goes through the guard ------------------------------------------------------------

# Commands whose writes are not audited here, and why. Every other command is run below.
NOT_AUDITED = {
    "serve": "a long-running server; what it writes (uploaded adapters) is covered by the server's own tests",
}

_audit = {"on": False, "writes": []}


def _audit_hook(event, args):
    if not _audit["on"]:
        return
    paths = []
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or path is None:
            return
        if mode is not None:
            writing = any(c in str(mode) for c in "wax+")
        else:
            writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
        if writing:
            paths.append(("open", path))
    elif event == "os.rename":  # os.rename and os.replace
        if args[2] is None and args[3] is None:
            paths += [("rename", args[0]), ("rename", args[1])]
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
        if len(args) < 2 or args[-1] is None:  # with a dir_fd they act inside a folder already audited
            paths.append((event, args[0]))
    for kind, path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            _audit["writes"].append((kind, Path(os.path.abspath(os.fsdecode(path)))))


sys.addaudithook(_audit_hook)  # hooks cannot be removed: it records only while _audit["on"]


def _allowed(kind: str, path: Path, approved: list[Path], caches: list[Path]) -> bool:
    path = path.resolve()
    for root in caches:
        if path == root or root in path.parents:
            return True
    for out in approved:
        if path == out or out in path.parents:
            return True
        sibling = path.parent == out.parent and path.name.startswith((f".{out.name}.tmp.", f".{out.name}.old."))
        if sibling or any(p.parent == out.parent and p.name.startswith((f".{out.name}.tmp.", f".{out.name}.old."))
                          for p in path.parents):
            return True
        if kind == "os.mkdir" and path in out.parents:  # the folders an output goes in
            return True
    return False


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if getattr(command, "commands", None) is not None:  # a group (merge)
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name))


@pytest.fixture(scope="module")
def audit_inputs(ws, index_dir, merge_models, tmp_path_factory):
    from test_glue import _mrpc

    root = tmp_path_factory.mktemp("audit_in")
    (root / "p.jsonl").write_text(json.dumps({"prediction": "a b", "reference": "a b"}) + "\n")
    _questions(index_dir, root / "q.jsonl")
    (root / "rows.jsonl").write_text("".join(json.dumps({"document": f"w1{i} w2{i}", "label": i % 2}) + "\n"
                                             for i in range(4)))
    (root / "pairs.json").write_text(json.dumps([{"article": "w10 w11 w12", "summary": "w10"}]))
    run = run_config(ws, max_steps=1, output_dir="{out}/run")
    run["data"]["eval"] = str(ws / "eval.jsonl")
    run["generation"] = {"max_new_tokens": 2, "batch_size": 4}
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    base = {k: v for k, v in run.items() if k not in ("output_dir", "method")}
    (root / "sweep.yaml").write_text(yaml.safe_dump({"base": base, "runs": [
        {"method": {"method": "llama_adapter", "layers": 1, "length": 2}, "grid": {"lr": [1e-2]}}]}))
    _mrpc(root / "mrpc.tsv", n=12)
    from groundtune.data import asset_path

    docs = asset_path("doc2dial/doc2dial_doc.json")
    assert cli("index", docs, "-o", root / "doc2dial-index", "--no-dense").exit_code == 0
    import groundtune as gt
    from groundtune.models import load_model

    gt.save_adapter(gt.attach(load_model(ws / "model")[0], gt.LoraConfig(r=2, alpha=4)), root / "lora-adapter")
    return root


@pytest.fixture(scope="module")
def reranker_base(tmp_path_factory):
    """A 2-layer, 32-wide random BERT with the shipped MiniLM's WordPiece vocabulary (as in test_retrieval)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from groundtune.retrieval.dense import default_encoder_path

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_reranker_base")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(default_encoder_path()) / name, folder / name)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    return folder


def _runs(ws, index_dir, m, i, out, encoder, reranker_base):
    from groundtune.data import asset_path

    dialogues = asset_path("doc2dial/doc2dial_dial_validation.json")
    out.mkdir()
    run_yaml = i / "run-here.yaml"
    run_yaml.write_text((i / "run.yaml").read_text().replace("{out}", str(out)))
    return {
        "demo": ["demo", "--model", ws / "model", "--steps", "1", "--output-dir", out / "demo"],
        "demo ko-rag": ["demo", "ko-rag", "--model", ws / "model", "--steps", "1", "--output-dir", out / "demo-ko-rag"],
        "eval": ["eval", "--predictions", i / "p.jsonl", "--out", out / "eval.json"],
        "train": ["train", run_yaml],
        "sweep": ["sweep", i / "sweep.yaml", "--output-dir", out / "sweep"],
        "glue": ["glue", "--task", "mrpc", "--train", i / "mrpc.tsv", "--model", encoder, "--method", "bitfit",
                 "--set", "epochs=1", "--set", "max_length=16", "--set", "batch_size=8", "--output-dir", out / "glue"],
        "index": ["index", ws / "docs.txt", "-o", out / "index", "--no-dense"],
        "retrieve": ["retrieve", i / "doc2dial-index", "--eval", dialogues, "--limit", "4", "--out",
                     out / "retrieval.json"],
        "train-reranker": ["train-reranker", i / "doc2dial-index", dialogues, "-o", out / "reranker", "--limit", "4",
                           "--epochs", "1", "--batch-size", "2", "--max-length", "32", "--negatives", "1",
                           "--base", reranker_base],
        "merge chat-vector": ["merge", "chat-vector", "--target", m["cp"], "--chat", m["chat"], "--base", m["base"],
                              "--out", out / "merged"],
        "merge extract": ["merge", "extract", "--base", m["base"], "--chat", m["chat"], "--out", out / "vector"],
        "merge apply": ["merge", "apply", "--target", m["cp"], "--vector", out / "vector", "--out", out / "applied"],
        "export": ["export", i / "lora-adapter", "--for", "merged", "--model", ws / "model", "--out", out / "exported"],
        "synth": ["synth", i / "doc2dial-index", "--out", out / "synth.jsonl", "--model", ws / "model", "--limit", "2",
                  "--batch-size", "2", "--max-new-tokens", "4"],
        "classify": ["classify", i / "rows.jsonl", "--shots", "0", "--model", ws / "model", "--output",
                     out / "classify.json"],
        "summarize-eval": ["summarize-eval", i / "pairs.json", "--model", ws / "model", "--max-new-tokens", "2",
                           "--output-dir", out / "summaries"],
    }


def test_every_command_that_writes_goes_through_the_guard(ws, index_dir, merge_models, audit_inputs, tmp_path,
                                                          tiny_encoder, reranker_base, monkeypatch):
    out = tmp_path / "outputs"
    caches = tmp_path / "caches"
    for var in ("GROUNDTUNE_CACHE", "XDG_CACHE_HOME", "MPLCONFIGDIR", "HF_HOME"):
        monkeypatch.setenv(var, str(caches / var))
    monkeypatch.setattr(tempfile, "tempdir", str(caches / "tmp"))
    (caches / "tmp").mkdir(parents=True)
    runs = _runs(ws, index_dir, merge_models, audit_inputs, out, tiny_encoder, reranker_base)
    from groundtune.tasks import demo

    real_demo_config = demo.demo_config

    def small_demo(*args, **kwargs):  # the demo's own run, on the tiny model: 2 layers, a few turns, 2 new tokens
        cfg = real_demo_config(*args, method={"method": "llama_adapter", "layers": 2, "length": 2}, **kwargs)
        cfg.data.max_train_samples, cfg.data.max_eval_samples, cfg.generation.max_new_tokens = 8, 2, 2
        cfg.data.max_document_tokens, cfg.precision = 32, "fp32"
        return cfg

    monkeypatch.setattr(demo, "demo_config", small_demo)
    from test_korean_rag import KeywordTeacher

    from groundtune.tasks import korean_rag

    real_rag_config = korean_rag.korean_rag_config

    def small_rag(*args, **kwargs):  # demo ko-rag on the tiny model; a random model cannot write questions
        cfg = real_rag_config(*args, method={"method": "llama_adapter", "layers": 2, "length": 2}, **kwargs)
        cfg.generation.max_new_tokens = 2
        return cfg

    monkeypatch.setattr(korean_rag, "korean_rag_config", small_rag)
    monkeypatch.setattr(korean_rag, "default_teacher", lambda model, tokenizer: KeywordTeacher())
    everything = set(_commands(typer.main.get_command(app)))
    audited = {name.split(" ko-rag")[0] for name in runs}  # "demo ko-rag" is a second run of demo
    assert everything == audited | set(NOT_AUDITED), everything ^ (audited | set(NOT_AUDITED))
    unguarded = {}
    for name, args in runs.items():
        _audit["writes"].clear()
        _audit["on"] = True
        try:
            result = cli(*args)
        finally:
            _audit["on"] = False
        assert result.exit_code == 0, (name, result.output[-2000:])
        approved = fileio.approved_outputs()
        writes = [(k, p) for k, p in _audit["writes"]]
        assert writes, f"{name} wrote nothing: list it in NOT_AUDITED as a command that writes nothing"
        bad = sorted({str(p) for k, p in writes if not _allowed(k, p, approved, [caches.resolve()])})
        if bad:
            unguarded[name] = bad[:5]
    assert not unguarded, unguarded
    # a second run of each into its own output is refused without --overwrite, and nothing it made is touched
    before = snapshot(out / "index")
    refused(cli(*runs["index"]), out / "index", "--overwrite", before=before)
    assert fileio.read_marker(out / "run")["command"] == "train"


from test_glue import tiny_encoder  # noqa: E402,F401  (the tiny BERT fixture)
