"""The multi-process path run, not only documented: `accelerate launch` with 2 processes (DDP over gloo, on CPU)
of `groundtune train` on a tiny model folder.

Checked: the run finishes; only the main process writes into output_dir (every file-system write of each
process is recorded through an audit hook); the adapter and the losses equal a single-process run with the same
global batch. DeepSpeed and FSDP need GPUs: for them only the shipped accelerate configs are parsed.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from groundtune.fileio import MARKER, read_marker

from tiny import tiny_run_folder

ROOT = Path(__file__).resolve().parents[1]

# Imported by every Python process of the launch (it is on PYTHONPATH): logs each write-like file-system call
# under the watched folder, one log per process rank.
_WATCH_WRITES = textwrap.dedent("""
    import os, sys

    _watched = os.environ.get("GT_WATCH_DIR")
    _log = os.environ.get("GT_WATCH_LOG")
    _events = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree",
               "os.truncate", "os.symlink", "os.link"}
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _path(p):
        try:
            p = os.fspath(p)
        except TypeError:
            return None
        return os.fsdecode(p)

    def _hook(event, args):
        if event not in _events or not _watched or "RANK" not in os.environ:
            return
        if event == "open":
            mode, flags = args[1], args[2]
            if not ((mode and any(c in mode for c in "wax+")) or (flags and flags & _writing)):
                return
            paths = [args[0]]
        else:
            paths = list(args[:2]) if event in ("os.rename", "os.replace", "os.symlink", "os.link") else [args[0]]
        paths = [_path(p) for p in paths]
        paths = [os.path.abspath(p) for p in paths if p]
        if not any(p == _watched or p.startswith(_watched + os.sep) for p in paths):
            return
        with open(f"{_log}.{os.environ['RANK']}", "a") as f:
            f.write(event + "\\t" + "\\t".join(os.path.relpath(p, _watched) for p in paths) + "\\n")

    sys.addaudithook(_hook)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_config(root: Path, **kw) -> dict:
    cfg = {"model": str(root / "model"), "method": {"method": "llama_adapter", "layers": 2, "length": 3},
           "data": {"format": "jsonl", "train": str(root / "train.jsonl"), "eval": str(root / "eval.jsonl"),
                    "max_document_tokens": 64, "max_answer_tokens": 8},
           "generation": {"max_new_tokens": 3, "batch_size": 4}, "output_dir": str(root / "two"),
           # 14 samples, global batch 4: the last step's batch has 2, so the second process gets none
           "epochs": 1, "batch_size": 2, "save_every": 2, "precision": "fp32", "lr": 2e-2, "warmup_ratio": 0.25}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tiny_run_folder(tmp_path_factory.mktemp("multiprocess").resolve(), 14, 4, ["user: w7 w8"])
    (root / "hook").mkdir()
    (root / "hook" / "sitecustomize.py").write_text(_WATCH_WRITES)
    run_yaml = root / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(_run_config(root)))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "hook"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GT_WATCH_DIR": str(root / "two"), "GT_WATCH_LOG": str(root / "writes"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # `accelerate launch --cpu` starts one process unless mpirun is used; the multi-GPU launcher (torchrun)
           # starts both, and ACCELERATE_USE_CPU makes accelerate set them up as DDP over gloo.
           "ACCELERATE_USE_CPU": "1"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "groundtune", "train", str(run_yaml)]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start

    # The same run in one process, batch 4: the same global batches in the same order.
    from groundtune.config import from_dict
    from groundtune.tasks.grounded import train_and_evaluate

    single = _run_config(root, batch_size=4, output_dir=str(root / "one"))
    single["data"] = {**single["data"], "eval": None}
    train_and_evaluate(from_dict(single), progress=False)
    return root, proc, seconds


def test_two_process_run_finishes(runs):
    root, proc, seconds = runs
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((root / "two" / "results.json").read_text())
    assert summary["eval_samples"] == 4 and summary["scores"]
    print(f"2-process launch: {seconds:.1f} s")


def _writes(root: Path, rank: int) -> list[list[str]]:
    log = root / f"writes.{rank}"
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def test_only_the_main_process_writes(runs):
    root, proc, _ = runs
    assert proc.returncode == 0, proc.stderr[-5000:]
    main, other = _writes(root, 0), _writes(root, 1)
    assert other == [], f"process 1 wrote into output_dir: {other[:10]}"
    # the hook saw the main process's writes: each final folder and file moved into place once per save
    replaced = [w[2] for w in main if w[0] in ("os.rename", "os.replace")]  # os.replace audits as os.rename
    assert replaced.count("adapter") == 1
    assert replaced.count("checkpoint") == 2  # steps 2 and 4 (save_every 2, 4 steps)
    for name in ("config.yaml", "losses.jsonl", "predictions.jsonl", "results.json"):
        assert replaced.count(name) == 1, (name, replaced)
    out = root / "two"
    assert sorted(p.name for p in out.iterdir()) == sorted(["adapter", "checkpoint", "config.yaml", "loss.png",
                                                             "losses.jsonl", "predictions.jsonl", "results.json",
                                                             MARKER])  # the output guard's marker
    assert sorted(read_marker(out)["made"]) == ["adapter", "checkpoint", "config.yaml", "loss.png", "losses.jsonl",
                                                "predictions.jsonl", "results.json"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4  # generated once, not once per process
    assert json.loads((out / "checkpoint" / "state.json").read_text())["num_processes"] == 2


def test_two_processes_train_the_adapter_one_process_trains(runs):
    root, proc, _ = runs
    assert proc.returncode == 0, proc.stderr[-5000:]
    two = load_file(root / "two" / "adapter" / "adapter_model.safetensors")
    one = load_file(root / "one" / "adapter" / "adapter_model.safetensors")
    assert two.keys() == one.keys() and two
    diff = max((two[k] - one[k]).abs().max().item() for k in two)
    print(f"max |2-process - 1-process| adapter difference: {diff:.2e}")
    for k in two:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(two[k].abs().max() > 1e-3 for k in two if "gate" in k)  # it trained: the zero-initialised gates moved
    losses_two = [json.loads(line)["loss"] for line in (root / "two" / "losses.jsonl").read_text().splitlines()]
    losses_one = [json.loads(line)["loss"] for line in (root / "one" / "losses.jsonl").read_text().splitlines()]
    assert len(losses_two) == len(losses_one) == 4
    assert losses_two == pytest.approx(losses_one, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero3", "fsdp"])
def test_shipped_accelerate_configs_parse(name):
    # These need GPUs (and DeepSpeed); here they are only read with accelerate's own config loader.
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "examples" / "accelerate" / f"{name}.yaml"))
    assert config.num_processes == 2 and config.mixed_precision == "bf16"
    expected = {"ddp": "MULTI_GPU", "deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP"}[name]
    assert str(config.distributed_type).endswith(expected)
    if name == "deepspeed_zero3":
        assert config.deepspeed_config["zero_stage"] == 3
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
