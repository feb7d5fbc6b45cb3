"""Run configs: dataclasses that read from and write to YAML, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from groundtune.errors import ConfigError


class Range(NamedTuple):
    """Allowed values of a numeric setting: lo < x (lo <= x when closed) and x < hi (x <= hi when closed)."""

    lo: float | None = None
    hi: float | None = None
    lo_closed: bool = True
    hi_closed: bool = True

    def __contains__(self, x) -> bool:
        if self.lo is not None and (x < self.lo if self.lo_closed else x <= self.lo):
            return False
        return not (self.hi is not None and (x > self.hi if self.hi_closed else x >= self.hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return ("[" if self.lo_closed and self.lo is not None else "(") + f"{lo}, {hi}" + (
            "]" if self.hi_closed and self.hi is not None else ")")


_POSITIVE, _COUNT, _NONNEG, _SHARE = Range(0, None, False), Range(1), Range(0), Range(0, 1, True, False)
# Every numeric setting of every config (run, data, generation, GLUE, method blocks), by name.
RANGES: dict[str, Range] = {
    "lr": _POSITIVE, "head_lr": _POSITIVE, "update_lr": _POSITIVE, "weight_decay": _NONNEG,
    "warmup_ratio": Range(0, 1), "epochs": _POSITIVE, "max_steps": _COUNT, "batch_size": _COUNT,
    "grad_accum": _COUNT, "max_grad_norm": _POSITIVE, "seed": _NONNEG, "data_seed": _NONNEG, "save_every": _COUNT,
    "max_document_tokens": _COUNT, "max_answer_tokens": _COUNT, "max_prompt_tokens": _COUNT,
    "history_turns": _NONNEG, "eval_fraction": _SHARE, "dev_fraction": _SHARE, "max_train_samples": _COUNT,
    "max_eval_samples": _COUNT, "max_new_tokens": _COUNT, "num_beams": _COUNT, "max_length": _COUNT,
    # method blocks
    "layers": _COUNT, "length": _COUNT, "r": _COUNT, "alpha": _POSITIVE, "dropout": _SHARE, "rank": _NONNEG,
    "subspaces": _COUNT, "codewords": _COUNT, "scap_subspaces": _COUNT, "scap_codewords": _COUNT,
}


def _kinds(hint) -> tuple[set, bool]:
    """({'int', 'float', 'str', 'bool', 'dict', 'list'} allowed, None allowed) for a resolved type hint."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    names = {getattr(typing.get_origin(a) or a, "__name__", str(a)) for a in args}
    return names - {"NoneType"}, "NoneType" in names


def check_value(key: str, value, hint) -> Any:
    """`value` for the setting `key` of type `hint`, range-checked (RANGES); raises ConfigError naming the key,
    the value and what is allowed. Numbers written as strings ("3e-4", which YAML reads as text) are read."""
    kinds, optional = _kinds(hint)
    allowed = RANGES.get(key.rsplit(".", 1)[-1], Range())
    if value is None:
        if optional or not kinds & {"int", "float"}:
            return value
        raise ConfigError(f"{key} is not set; it must be a number in {allowed}")
    if kinds & {"int", "float"} and not isinstance(value, bool):
        number = value
        if isinstance(value, str):
            try:
                number = float(value) if "float" in kinds else int(value)
            except ValueError:
                number = None
        if "float" in kinds and isinstance(number, (int, float)):
            number = float(number)
        if isinstance(number, int) or (isinstance(number, float) and "float" in kinds and math.isfinite(number)):
            if number not in allowed:
                raise ConfigError(f"{key} is {value!r}; it must be in {allowed}" + (" (or unset)" if optional else ""))
            return number
        what = "a whole number" if "float" not in kinds else "a finite number"
        raise ConfigError(f"{key} is {value!r}; it must be {what} in {allowed}")
    if "bool" in kinds and not isinstance(value, bool):
        raise ConfigError(f"{key} is {value!r}; it must be true or false")
    if "str" in kinds and not kinds & {"bool", "dict", "list"} and not isinstance(value, str):
        raise ConfigError(f"{key} is {value!r}; it must be text (a string)")
    if kinds == {"dict"} and not isinstance(value, dict):
        raise ConfigError(f"{key} is {value!r}; it must be a mapping")
    return value


def validate(obj, prefix: str = "") -> None:
    """Check (and normalise) every field of the dataclass `obj` against its type and RANGES."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(getattr(obj, f.name)):
            continue
        object.__setattr__(obj, f.name, check_value(prefix + f.name, getattr(obj, f.name), hints[f.name]))


def check_method(block, where: str = "method") -> None:
    """Check a method block ({method: llama_adapter, layers: 30, ...}) against its method's config class."""
    from groundtune import methods

    if not isinstance(block, dict):
        raise ConfigError(f"{where} is {block!r}; it must be a mapping such as {{method: llama_adapter}}")
    name = block.get("method")
    known = methods.names()
    if name not in known:
        raise ConfigError(f"{where}.method is {name!r}; choose one of {', '.join(known)}")
    config_class = methods.config_class
    cls = config_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(block) - set(fields) - {"method"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {name}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: check_value(f"{where}.{k}", v, hints[k]) for k, v in block.items() if k != "method"}
    try:
        cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


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
    # an eval file sharing example ids (or, where samples carry one, dialogues) with the train file:
    # "warn" prints the counts, "error" refuses to run
    eval_overlap: str = "warn"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # RAG: {index: DIR, k: 3, pipeline: default, reranker: DIR, rerank_depth: 20}; doc2dial format only.
    # Prompts then hold the top-k retrieved passages instead of the gold document (groundtune.retrieval.rag).
    retrieval: dict | None = None

    def __post_init__(self):
        validate(self, "data.")
        if self.retrieval is not None:
            from groundtune.retrieval.pipelines import check_retrieval

            self.retrieval = check_retrieval(self.retrieval, "data.retrieval", self.format)
        if self.format not in FORMATS:
            raise ConfigError(f"data.format is {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.eval_overlap not in ("warn", "error"):
            raise ConfigError(f"data.eval_overlap is {self.eval_overlap!r}; choose warn or error")


FORMATS = ("doc2dial", "jsonl", "alpaca")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    num_beams: int = 1
    batch_size: int = 8

    def __post_init__(self):
        validate(self, "generation.")


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
    trust_remote_code: bool = False
    group_by_length: bool = False  # batches of similar lengths: less padding (groundtune.data.order)

    def __post_init__(self):
        validate(self)
        if self.precision not in ("bf16", "fp32", "fp16"):
            raise ConfigError(f"precision is {self.precision!r}; choose bf16, fp16 or fp32")
        check_method(self.method)


def build_config(cls, values: dict, where: str, prefix: str = ""):
    """A `cls` from a YAML mapping: unknown keys, wrong types and out-of-range numbers fail here, naming `where`
    (the file) and the key, before anything is loaded."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the config'} must be a mapping of settings, "
                          f"got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {[prefix + k for k in unknown]}; known keys: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        sub = {"data": DataConfig, "generation": GenerationConfig}.get(name) if cls is TrainConfig else None
        kwargs[name] = build_config(sub, value, where, f"{prefix}{name}.") if sub else value
    try:
        built = cls(**kwargs)
        validate(built, prefix)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return built


def from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    return build_config(TrainConfig, values, where)


def read_yaml(path: str | Path | None, overrides: dict[str, Any] | None = None,
              error: type[Exception] = ConfigError) -> dict:
    """A YAML mapping from `path` (none: empty), with dotted-key `overrides` (e.g. {"data.history_turns": 1})
    applied on top. Errors name the file; `error` is the exception type the caller's users expect."""
    values = {} if path is None else _read_mapping(Path(path), error)
    for key, value in (overrides or {}).items():
        target = values
        *parents, last = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise error(f"--set {key}: {p} is not a block of settings")
        target[last] = value
    return values


def _read_mapping(path: Path, error: type[Exception]) -> dict:
    from groundtune.fileio import read_text

    try:
        values = yaml.safe_load(read_text(path, error=error)) or {}
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise error(f"{path}: expected a mapping of settings, found {type(values).__name__}")
    return values


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TrainConfig from YAML; `overrides` (dotted keys) win over the file."""
    return from_dict(read_yaml(path, overrides), str(path))
