import csv
import json
import random

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from groundtune.tasks.glue import (GlueConfig, get_task, length_grouped_batches, load_glue_config, read_tsv, run, scores,
                             split_dev)
from groundtune.methods import count_trainable

WORDS = ["good", "bad", "film", "plot", "actor", "scene", "music", "story", "the", "a", "is", "was", "very", "not"]


def _write(path, header, rows, bom=False):
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(map(str, row)) + "\n")
    return path


def _sentence(rng, n=5):
    return " ".join(rng.choice(WORDS[2:]) for _ in range(n))


def _sst2(path, n=80, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        rows.append((f"{_sentence(rng)} {'good' if label else 'bad'} {_sentence(rng, 2)}", label))
    return _write(path, ["sentence", "label"], rows)


def _mrpc(path, n=60, seed=0, bom=True):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = _sentence(rng)
        label = rng.randint(0, 1)
        b = a if label else _sentence(rng)
        rows.append((label, 1000 + i, 2000 + i, a, b))
    return _write(path, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], rows, bom=bom)


def _stsb(path, n=60, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = _sentence(rng), _sentence(rng)
        score = round(5 * sum(x == y for x, y in zip(a.split(), b.split())) / 5, 3)
        rows.append((i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b, score))
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    return _write(path, header, rows)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny random BERT and a word-level tokenizer over the synthetic vocabulary, saved as a model folder."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


# ---- reading ----

def test_read_mrpc_with_bom(tmp_path):
    data = read_tsv(_mrpc(tmp_path / "train.tsv", n=10), "mrpc")
    assert len(data.examples) == 10 and not data.dropped
    first = data.examples[0]
    assert first.text_a and first.text_b and first.label in (0.0, 1.0)


def test_bad_rows_are_dropped_and_counted(tmp_path):
    path = _write(tmp_path / "train.tsv", ["sentence", "label"],
                  [("fine film", 1), ("too", "many", "columns"), ("", 0), ("odd label", 7), ("x", "y"), ("ok", 0)])
    data = read_tsv(path, "sst2")
    assert [e.text_a for e in data.examples] == ["fine film", "ok"]
    assert dict(data.dropped) == {"with a wrong number of columns": 1, "with an empty sentence": 1, "with a bad label": 2}
    assert "2 records, 4 dropped" in data.report(path)


def test_stsb_scores_out_of_range_are_dropped(tmp_path):
    path = _stsb(tmp_path / "train.tsv", n=5)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit("\t", 1)[0] + "\t7.5"
    path.write_text("\n".join(lines) + "\n")
    data = read_tsv(path, "stsb")
    assert len(data.examples) == 4 and data.dropped["with a bad label"] == 1


def test_a_test_file_without_labels_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "test.tsv", ["index", "sentence"], [(0, "a film")])
    with pytest.raises(ValueError, match=r"test\.tsv.*no column \['label'\].*test files have no labels"):
        read_tsv(path, "sst2")
    with pytest.raises(ValueError, match="missing.tsv"):
        read_tsv(tmp_path / "missing.tsv", "sst2")
    with pytest.raises(ValueError, match="unknown GLUE task"):
        get_task("cola")


def test_quotes_are_kept_as_text(tmp_path):
    path = _write(tmp_path / "train.tsv", ["sentence", "label"], [('he said " the witness " twice', 1)])
    assert read_tsv(path, "sst2").examples[0].text_a == 'he said " the witness " twice'


def test_dev_split_is_seeded_and_disjoint():
    items = list(range(100))
    train, dev = split_dev(items, 0.2, seed=3)
    assert len(dev) == 20 and sorted(train + dev) == items
    assert split_dev(items, 0.2, seed=3) == (train, dev)
    assert split_dev(items, 0.2, seed=4)[1] != dev


def test_length_grouped_batches_cover_everything_once():
    lengths = [random.Random(0).randint(1, 50) for _ in range(103)]
    batches = length_grouped_batches(lengths, 8, seed=1, group=4)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert all(len(b) <= 8 for b in batches)


# ---- metrics ----

def test_classification_scores():
    s = scores(get_task("mrpc"), [1, 0, 1, 1, 0], [1, 0, 0, 1, 1])
    assert s["accuracy"] == pytest.approx(60.0)
    assert s["f1"] == pytest.approx(100 * 2 * 2 / (3 + 3))  # tp 2, predicted 3, actual 3
    sk = pytest.importorskip("sklearn.metrics")
    assert s["f1"] == pytest.approx(100 * sk.f1_score([1, 0, 0, 1, 1], [1, 0, 1, 1, 0]))


def test_regression_scores():
    s = scores(get_task("stsb"), [0.1, 0.5, 0.2, 0.9], [1.0, 3.0, 2.0, 4.0])
    assert s["spearman"] == pytest.approx(100.0)
    assert 90 < s["pearson"] < 100


# ---- the runner ----

def test_runner_rows_per_seed_with_parameter_counts(tmp_path, tiny_encoder):
    cfg = GlueConfig(task="sst2", method={"method": "accept", "length": 4, "codewords": 4, "scap_subspaces": 2,
                                         "scap_codewords": 3, "max_length": 16, "update_lr": 1e-3},
                     model=tiny_encoder, train=str(_sst2(tmp_path / "train.tsv", n=40)), dev_fraction=0.25,
                     epochs=1, batch_size=8, lr=1e-2, seeds=[1, 2], output_dir=str(tmp_path / "out"))
    rows = run(cfg, progress=False, log=lambda _: None)
    assert [r["seed"] for r in rows] == [1, 2]
    hidden = 32
    accept = 4 * 1 * 4 + 4 * hidden + 16 * 2 * 3 + 3 * hidden  # SCPP (K = 32/32 = 1) + SCAP
    assert all(r["trainable_params"] == accept + hidden * 2 + 2 for r in rows)  # + the task head
    assert all(0 <= r["accuracy"] <= 100 and 0 <= r["f1"] <= 100 and r["train_s"] > 0 for r in rows)
    out = tmp_path / "out"
    table = (out / "results.md").read_text()
    assert "| task | method | seed | trainable_params | accuracy | f1 | train_s |" in table
    with open(out / "results.csv") as f:
        assert [r["seed"] for r in csv.DictReader(f)] == ["1", "2"]
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["method"] == "accept"
    assert (out / "sst2-accept-seed1" / "adapter_model.safetensors").is_file()


def test_full_fine_tuning_learns_the_synthetic_task(tmp_path, tiny_encoder):
    train, dev = _sst2(tmp_path / "train.tsv", n=96, seed=0), _sst2(tmp_path / "dev.tsv", n=60, seed=1)
    cfg = GlueConfig(task="sst2", method={"method": "full"}, model=tiny_encoder, train=str(train), dev=str(dev),
                     epochs=12, batch_size=16, lr=3e-3, seeds=[0], output_dir=str(tmp_path / "out"))
    row = run(cfg, progress=False, log=lambda _: None)[0]
    assert row["accuracy"] > 80  # "good" / "bad" decides the label
    assert row["trainable_params"] > 10_000


@pytest.mark.parametrize("task,writer", [("mrpc", _mrpc), ("stsb", _stsb)])
def test_pair_tasks_run_with_a_dev_file(tmp_path, tiny_encoder, task, writer):
    train, dev = writer(tmp_path / "train.tsv", n=24), writer(tmp_path / "dev.tsv", n=12, seed=1)
    cfg = GlueConfig(task=task, method={"method": "dept", "length": 3, "rank": 2, "max_length": 16},
                     model=tiny_encoder, train=str(train), dev=str(dev), epochs=1, batch_size=8,
                     seeds=[0], output_dir=str(tmp_path / "out"), save_adapters=False)
    row = run(cfg, progress=False, log=lambda _: None)[0]
    assert set(row) >= ({"accuracy", "f1"} if task == "mrpc" else {"pearson", "spearman"})
    assert row["trainable_params"] == 3 * 32 + 16 * 2 + 2 * 32 + 32 * (1 if task == "stsb" else 2) + (1 if task == "stsb" else 2)


def test_lora_and_bitfit_run_on_the_encoder(tmp_path, tiny_encoder):
    from groundtune.tasks.glue import load_classifier, prepare

    for method in ({"method": "lora", "r": 2}, {"method": "bitfit"}):
        torch.manual_seed(0)
        model, _ = load_classifier(tiny_encoder, 2)
        model = prepare(model, method)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert any("classifier" in n for n in names), method
        assert count_trainable(model) < 10_000


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "glue.yaml"
    path.write_text("task: stsb\nmethod: {method: dept, length: 10}\nepochs: 2\n")
    cfg = load_glue_config(path, {"method.length": 20, "lr": 0.05})
    assert cfg.task == "stsb" and cfg.method == {"method": "dept", "length": 20} and cfg.lr == 0.05 and cfg.epochs == 2
    with pytest.raises(ValueError, match="unknown key"):
        load_glue_config(None, {"learning_rate": 1})
    with pytest.raises(ValueError, match="unknown GLUE task"):
        load_glue_config(None, {"task": "qqp"})


def test_cli_glue(tmp_path, tiny_encoder):
    from typer.testing import CliRunner

    from groundtune.cli import app

    train = _sst2(tmp_path / "train.tsv", n=24)
    result = CliRunner().invoke(app, ["glue", "--task", "sst2", "--method", "prompt_tuning", "--train", str(train),
                                      "--model", tiny_encoder, "--seeds", "3", "--output-dir", str(tmp_path / "out"),
                                      "--set", "epochs=1", "--set", "method.length=3", "--set", "batch_size=8"])
    assert result.exit_code == 0, result.output
    assert "| sst2 | prompt_tuning | 3 |" in result.output
    assert (tmp_path / "out" / "results.md").is_file()


def test_regression_head_starts_at_the_mean_score(tiny_encoder):
    from groundtune.tasks.glue import load_classifier, start_at_mean

    model, _ = load_classifier(tiny_encoder, 1)
    start_at_mean(model, [1.0, 2.0, 4.5])
    assert model.classifier.bias.item() == pytest.approx(2.5)


def test_bf16_training_learns_like_fp32(tmp_path, tiny_encoder):
    """precision="bf16" autocasts each step: the model learns the synthetic task as in fp32 (an autocast context held
    around the whole loop would cache the first step's bf16 weights and leave the model frozen)."""
    from groundtune.tasks.glue import load_classifier, prepare, predict, encode, train_classifier

    examples = read_tsv(_sst2(tmp_path / "train.tsv", n=96, seed=0), "sst2").examples
    cfg = GlueConfig(task="sst2", method={"method": "full"}, epochs=8, batch_size=16, lr=3e-3)
    torch.manual_seed(0)
    model, tokenizer = load_classifier(tiny_encoder, 2)
    model = prepare(model, cfg.method)
    losses = train_classifier(model, tokenizer, examples, get_task("sst2"), cfg, 0, progress=False, precision="bf16")
    predicted = predict(model, tokenizer, encode(tokenizer, examples, 32), get_task("sst2"))
    assert sum(losses[-6:]) / 6 < 0.5 * sum(losses[:6]) / 6
    assert sum(p == e.label for p, e in zip(predicted, examples)) / len(examples) > 0.8
