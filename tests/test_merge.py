"""Chat Vector merges on tiny random Llama checkpoints written by transformers (sharded, with tokenizers)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from groundtune.merge import MergeError, Vector, chat_vector, extract_vector, merge
from groundtune.merge import writer as merge_writer

VOCAB = 97
SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


def make_model(folder: Path, seed: int, *, dtype=torch.float32, extra_tokens=(), intermediate=64, template=None,
               eos="</s>", shard="60KB"):
    """A 2-layer Llama with every weight random (norms too), sharded, with a WordLevel tokenizer whose first ids
    are SPECIAL, then filler words, then `extra_tokens` (a continually pre-trained model's added vocabulary)."""
    from tokenizers import Tokenizer, models
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    tokens = SPECIAL + [f"w{i}" for i in range(VOCAB - len(SPECIAL))] + list(extra_tokens)
    ids = {t: i for i, t in enumerate(tokens)}
    config = AutoConfig.for_model("llama", vocab_size=len(tokens), hidden_size=48, intermediate_size=intermediate,
                                  num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                                  max_position_embeddings=64, bos_token_id=1, eos_token_id=ids[eos], pad_token_id=0)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.to(dtype).save_pretrained(folder, max_shard_size=shard)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(ids, unk_token="<unk>")),
                                        bos_token="<s>", eos_token=eos, unk_token="<unk>", pad_token="<unk>")
    if template:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder


def weights(folder: Path, prefix: str = "model") -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob(f"{prefix}*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def reference(target, terms):
    """target + Σ ratio (chat − base), per tensor, in the same float32 operations the merge uses."""
    out = {}
    for name, t in target.items():
        acc = t.float().clone()
        for ratio, chat, base in terms:
            diff = chat[name].float() - base[name].float()
            diff.mul_(ratio)
            acc.add_(diff)
        out[name] = acc.to(t.dtype)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "base": make_model(root / "base", 0),
        "chat": make_model(root / "chat", 1, template=TEMPLATE, eos="<|im_end|>"),
        "chat2": make_model(root / "chat2", 2),
        "cp": make_model(root / "cp", 3),
        "cp_big_vocab": make_model(root / "cp_big_vocab", 4, extra_tokens=["<|ko_a|>", "<|ko_b|>"]),
    }


def leftovers(parent: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


def test_several_vectors_exact_arithmetic_across_chunks_and_shards(models, tmp_path):
    out = tmp_path / "out"
    report = merge(models["cp"], [Vector(0.5, chat=models["chat"], base=models["base"]),
                                  Vector(-0.25, chat=models["chat2"], base=models["base"])],
                   out, max_shard_size="40KB", chunk_elements=1000, progress=False)
    w = {k: weights(models[k]) for k in ("base", "chat", "chat2", "cp")}
    expected = reference(w["cp"], [(0.5, w["chat"], w["base"]), (-0.25, w["chat2"], w["base"])])
    got = weights(out)
    assert got.keys() == expected.keys() and report.merged == len(expected) and not report.copied
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(expected)
    # the result is an ordinary Hugging Face model folder
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, expected["model.layers.1.mlp.up_proj.weight"])
    recipe = json.loads((out / "groundtune_merge.json").read_text())
    assert [v["ratio"] for v in recipe["vectors"]] == [0.5, -0.25]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_is_preserved(tmp_path, dtype):
    base, chat = make_model(tmp_path / "base", 0), make_model(tmp_path / "chat", 1)  # float32 sources
    cp = make_model(tmp_path / "cp", 3, dtype=dtype)
    chat_vector(base, chat, cp, tmp_path / "out", ratio=0.7, chunk_elements=999, progress=False)
    got = weights(tmp_path / "out")
    expected = reference(weights(cp), [(0.7, weights(chat), weights(base))])
    for name, tensor in got.items():
        assert tensor.dtype == dtype and torch.equal(tensor, expected[name]), name


def test_skip_patterns_keep_the_targets_tensors(models, tmp_path):
    report = chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", ratio=1.0,
                         skip=["*norm*"], progress=False)
    got, cp = weights(tmp_path / "out"), weights(models["cp"])
    norms = [n for n in cp if "norm" in n]
    assert norms and sorted(report.copied) == sorted(norms)
    for name in cp:
        assert torch.equal(got[name], cp[name]) == (name in norms), name


def test_vocabulary_mismatch_keeps_embeddings_unless_token_map(models, tmp_path):
    report = chat_vector(models["base"], models["chat"], models["cp_big_vocab"], tmp_path / "plain", ratio=0.5,
                         progress=False)
    cp, chat, base = weights(models["cp_big_vocab"]), weights(models["chat"]), weights(models["base"])
    got = weights(tmp_path / "plain")
    vocab_tensors = ["model.embed_tokens.weight", "lm_head.weight"]
    assert sorted(report.copied) == sorted(vocab_tensors) and "vocabulary sizes differ" in report.copied["lm_head.weight"]
    for name in vocab_tensors:
        assert torch.equal(got[name], cp[name])
    assert not torch.equal(got["model.norm.weight"], cp["model.norm.weight"])

    # target id -> chat id: the added Korean tokens borrow the chat rows of <|im_start|> / <|im_end|>
    token_map = {97: 3, 98: 4, 2: 2}
    report = chat_vector(models["base"], models["chat"], models["cp_big_vocab"], tmp_path / "mapped", ratio=0.5,
                         token_map=token_map, chunk_elements=100, progress=False)  # rows straddle chunks
    got = weights(tmp_path / "mapped")
    assert report.rows == {"model.embed_tokens.weight": 3, "lm_head.weight": 3}
    for name in vocab_tensors:
        expected = cp[name].clone()
        for k, v in token_map.items():
            diff = chat[name][v] - base[name][v]
            diff.mul_(0.5)
            expected[k] += diff
        assert torch.equal(got[name], expected), name
        assert torch.equal(got[name][10:97], cp[name][10:97])


def test_chat_template_and_eos_come_from_the_chat_model(models, tmp_path):
    from transformers import AutoTokenizer

    chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", progress=False)
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.eos_token == "<|im_end|>"
    assert tok.apply_chat_template([{"role": "user", "content": "w7"}], tokenize=False) == "<|im_start|>w7<|im_end|>"
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == 4
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == json.loads((models["cp"] / "config.json").read_text())

    # different vocabularies: eos ids go through the token map (chat id 4 is the target's 98)
    chat_vector(models["base"], models["chat"], models["cp_big_vocab"], tmp_path / "mapped", token_map={98: 4},
                progress=False)
    assert json.loads((tmp_path / "mapped" / "generation_config.json").read_text())["eos_token_id"] == 98
    # ... and the target keeps its template with template_from="target"
    chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "kept", template_from="target", progress=False)
    assert AutoTokenizer.from_pretrained(tmp_path / "kept").chat_template is None


def test_truncated_or_corrupt_shard_names_the_file_and_writes_nothing(models, tmp_path):
    import shutil

    for damage in ("truncate", "garble"):
        chat = tmp_path / f"chat_{damage}"
        shutil.copytree(models["chat"], chat)
        shard = sorted(chat.glob("model-*.safetensors"))[1]
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) - 1000] if damage == "truncate" else data[:8] + b"#" * 40 + data[48:])
        with pytest.raises(MergeError, match="truncated or corrupt") as err:
            chat_vector(models["base"], chat, models["cp"], tmp_path / "out", progress=False)
        assert str(shard) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_lists_tensors_and_writes_nothing(models, tmp_path):
    wide = make_model(tmp_path / "wide", 5, intermediate=80)
    with pytest.raises(MergeError, match="6 tensor") as err:
        chat_vector(models["base"], wide, models["cp"], tmp_path / "out", progress=False)
    assert "model.layers.0.mlp.gate_proj.weight: [80, 48]" in str(err.value)
    assert "model.layers.1.mlp.down_proj.weight" in str(err.value)
    assert leftovers(tmp_path, "wide") == []


def test_error_during_write_leaves_no_output(models, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = merge_writer.ShardWriter.write

    def failing_write(self, chunk):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError("disk full (simulated)")
        return original(self, chunk)

    monkeypatch.setattr(merge_writer.ShardWriter, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", max_shard_size="40KB",
                    chunk_elements=500, progress=False)
    assert leftovers(tmp_path) == []


def kill_merge_mid_write(models: dict, out, flag) -> int:
    """Run chat_vector in a subprocess, SIGKILL it in the middle of writing its 5th chunk; returns its pid."""
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
    return proc.pid


def test_killed_merge_leaves_nothing_that_looks_complete(models, tmp_path):
    """SIGKILL in the middle of writing a shard: the output path never appears; a rerun succeeds."""
    kill_merge_mid_write(models, tmp_path / "out", tmp_path / "writing")
    assert not (tmp_path / "out").exists()
    partial = [p for p in tmp_path.iterdir() if p.name != "writing"]
    assert partial and all(p.name.startswith(".out.tmp.") for p in partial)  # hidden, and named as unfinished
    chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "groundtune_merge.json").is_file()


def test_extract_then_apply_equals_the_one_shot_merge(models, tmp_path):
    one_shot = tmp_path / "one_shot"
    merge(models["cp"], [Vector(0.5, chat=models["chat"], base=models["base"]),
                         Vector(0.3, chat=models["chat2"], base=models["base"])], one_shot, progress=False)
    extract_vector(models["base"], models["chat"], tmp_path / "v1", max_shard_size="50KB", progress=False)
    extract_vector(models["base"], models["chat2"], tmp_path / "v2", progress=False)
    index = json.loads((tmp_path / "v1" / "vector.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (tmp_path / "v1" / "config.json").exists()
    applied = tmp_path / "applied"
    merge(models["cp"], [Vector(0.5, saved=tmp_path / "v1"), Vector(0.3, saved=tmp_path / "v2")], applied,
          progress=False)
    a, b = weights(one_shot), weights(applied)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (applied / "chat_template.jinja").read_text() == (one_shot / "chat_template.jinja").read_text()

    # a chat model with a larger vocabulary than its base: the vector keeps the rows both share
    chat_big = make_model(tmp_path / "chat_big", 6, extra_tokens=["<|a|>", "<|b|>"])
    token_map = "97:3,98:4"
    chat_vector(models["base"], chat_big, models["cp_big_vocab"], tmp_path / "one_shot_big", ratio=0.5,
                token_map=token_map, progress=False)
    report = extract_vector(models["base"], chat_big, tmp_path / "v_big", progress=False)
    assert "keep only the rows both share" in report.warnings[0]
    merge(models["cp_big_vocab"], [Vector(0.5, saved=tmp_path / "v_big")], tmp_path / "applied_big",
          token_map=token_map, progress=False)
    a, b = weights(tmp_path / "one_shot_big"), weights(tmp_path / "applied_big")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"][97], weights(models["cp_big_vocab"])["lm_head.weight"][97])


def test_existing_output_and_bad_vectors_are_refused(models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(MergeError, match="already exists"):
        chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", progress=False)
    with pytest.raises(MergeError, match="keep.txt"):  # --overwrite replaces only what a merge made
        chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", overwrite=True, progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "out" / "keep.txt").unlink()
    chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", progress=False)
    chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "out", overwrite=True, progress=False)
    with pytest.raises(MergeError, match="is also an input"):
        chat_vector(models["base"], models["chat"], models["cp"], models["cp"], progress=False)
    with pytest.raises(MergeError, match="not a saved chat vector"):
        merge(models["cp"], [Vector(1.0, saved=models["chat"])], tmp_path / "x", progress=False)
    with pytest.raises(MergeError, match="neither model.safetensors.index.json nor model.safetensors"):
        chat_vector(models["base"], tmp_path, models["cp"], tmp_path / "y", progress=False)
    with pytest.raises(MergeError, match="outside the target's 97 rows"):
        chat_vector(models["base"], models["chat"], models["cp"], tmp_path / "z", token_map={120: 3}, progress=False)


def test_cli_chat_vector_yaml_extract_apply(models, tmp_path):
    from typer.testing import CliRunner

    from groundtune.cli import app

    runner = CliRunner()
    for command in ([], ["chat-vector"], ["extract"], ["apply"]):
        result = runner.invoke(app, ["merge", *command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output

    result = runner.invoke(app, ["merge", "chat-vector", "--base", str(models["base"]), "--chat", str(models["chat"]),
                                 "--target", str(models["cp"]), "--ratio", "0.5", "--out", str(tmp_path / "flags")])
    assert result.exit_code == 0, result.output
    assert f"{len(weights(models['cp']))} tensors merged" in result.output

    recipe = tmp_path / "merge.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        target: {models['cp']}
        base: {models['base']}
        out: {tmp_path / 'yaml'}
        vectors:
          - {{chat: {models['chat']}, ratio: 0.5}}
          - {{chat: {models['chat2']}, ratio: 0.25}}
        skip: ["*norm*"]
    """))
    result = runner.invoke(app, ["merge", "chat-vector", "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    w = {k: weights(models[k]) for k in ("base", "chat", "chat2", "cp")}
    expected = reference(w["cp"], [(0.5, w["chat"], w["base"]), (0.25, w["chat2"], w["base"])])
    got = weights(tmp_path / "yaml")
    for name in expected:
        assert torch.equal(got[name], w["cp"][name] if "norm" in name else expected[name]), name

    assert runner.invoke(app, ["merge", "extract", "--base", str(models["base"]), "--chat", str(models["chat"]),
                               "--out", str(tmp_path / "vec")]).exit_code == 0
    result = runner.invoke(app, ["merge", "apply", "--target", str(models["cp"]), "--vector", str(tmp_path / "vec"),
                                 "--ratio", "0.5", "--out", str(tmp_path / "applied")])
    assert result.exit_code == 0, result.output
    a, b = weights(tmp_path / "flags"), weights(tmp_path / "applied")
    assert all(torch.equal(a[k], b[k]) for k in a)

    result = runner.invoke(app, ["merge", "chat-vector", "--base", str(models["base"]), "--chat", str(models["chat"]),
                                 "--target", str(models["cp"]), "--out", str(tmp_path / "flags")])
    assert result.exit_code == 2 and "already exists" in result.output


def test_peak_memory_stays_near_the_chunk_not_the_model(tmp_path):
    """Three 96 MB models (three 32 MB tensors each): loading them whole would add ~300 MB; streaming adds far less
    than the issue's bound (2 x largest tensor + 500 MB) and less than one model."""
    names = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight"]
    for seed, name in enumerate(("base", "chat", "cp")):
        (tmp_path / name).mkdir()
        gen = torch.Generator().manual_seed(seed)
        save_file({n: torch.randn(2048, 4096, generator=gen) for n in names}, tmp_path / name / "model.safetensors")
    script = textwrap.dedent(f"""
        import re
        from groundtune.merge import chat_vector
        def hwm():
            return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
        before = hwm()
        chat_vector(*[{str(tmp_path)!r} + "/" + n for n in ("base", "chat", "cp", "out")], ratio=0.5, progress=False)
        print(hwm() - before)
    """)
    grown_mb = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    assert grown_mb < 96, f"peak RSS grew by {grown_mb:.0f} MB"
