"""Run configs: dataclasses that read from and write to YAML, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    """Where samples come from. format: doc2dial (official doc2dial / MultiDoc2Dial JSON, needs documents),
    jsonl (your own {document, history, question, answer} records), alpaca (instruction / input / output)."""

    format: str = "doc2dial"
    train: str | None = None
    eval: str | None = None
    documents: str | None = None
    max_document_tokens: int = 512
    max_answer_tokens: int = 64
    max_prompt_tokens: int = 1024  # whole prompt (document, history, question); longer ones lose document text
    history_turns: int = 2
    window_around_span: bool = False  # too-long document: keep a window around the grounding instead of dropping
    template: str = "koalpaca"  # alpaca format only: koalpaca | alpaca | chat | path to a YAML template
    eval_fraction: float = 0.0  # when no eval file: hold out this share of dialogues / records
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    num_beams: int = 1
    batch_size: int = 8


@dataclass
class TrainConfig:
    """One training run: a frozen base model, a method, data, and the optimiser's schedule."""

    model: str | None = None  # hub id, folder, .gguf file; None = the embedded SmolLM2-135M-Instruct
    method: dict = field(default_factory=lambda: {"method": "llama_adapter", "layers": 30, "length": 10})
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    output_dir: str = "runs/default"
    lr: float = 1e-2
    weight_decay: float = 0.02
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    precision: str = "bf16"  # bf16 | fp32 (bf16 = mixed precision: fp32 weights, bf16 autocast)
    seed: int = 42
    save_every: int = 50  # optimizer steps between checkpoints
    log_every: int = 5
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.precision not in ("bf16", "fp32", "fp16"):
            raise ValueError(f"precision must be bf16, fp16 or fp32, not {self.precision!r}")


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        sub = {"data": DataConfig, "generation": GenerationConfig}.get(name) if cls is TrainConfig else None
        kwargs[name] = _build(sub, value, f"{where}.{name}") if sub else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    return _build(TrainConfig, values, where)


def read_yaml(path: str | Path | None, overrides: dict[str, Any] | None = None,
              error: type[Exception] = ValueError) -> dict:
    """A YAML mapping from `path` (none: empty), with dotted-key `overrides` (e.g. {"data.history_turns": 1})
    applied on top. Errors name the file; `error` is the exception type the caller's users expect."""
    values = {} if path is None else _read_mapping(Path(path), error)
    for key, value in (overrides or {}).items():
        target = values
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[last] = value
    return values


def _read_mapping(path: Path, error: type[Exception]) -> dict:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise error(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise error(f"{path}: expected a mapping of settings, found {type(values).__name__}")
    return values


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TrainConfig from YAML; `overrides` (dotted keys) win over the file."""
    return from_dict(read_yaml(path, overrides), str(path))


def to_yaml(config) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True)
