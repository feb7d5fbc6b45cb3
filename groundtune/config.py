"""Run configs: dataclasses that read from and write to YAML, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groundtune.errors import ConfigError
from groundtune.ranges import ANY, COUNT, FRACTION, NONNEG, POSITIVE, SHARE, Range, range_of, ranged


def _kinds(hint) -> tuple[set, bool]:
    """({'int', 'float', 'str', 'bool', 'dict', 'list'} allowed, None allowed) for a resolved type hint."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    names = {getattr(typing.get_origin(a) or a, "__name__", str(a)) for a in args}
    return names - {"NoneType"}, "NoneType" in names


def check_value(key: str, value, hint, allowed: Range = ANY) -> Any:
    """`value` for the setting `key` of type `hint`, checked against `allowed` (the range its dataclass field
    declares, see groundtune.ranges); raises ConfigError naming the key, the value and what is allowed. Numbers
    written as strings ("3e-4", which YAML reads as text) are read."""
    kinds, optional = _kinds(hint)
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
    """Check (and normalise) every field of the dataclass `obj` against its type and its declared range."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(getattr(obj, f.name)):
            continue
        value = check_value(prefix + f.name, getattr(obj, f.name), hints[f.name], range_of(f))
        object.__setattr__(obj, f.name, value)


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
    values = {k: check_value(f"{where}.{k}", v, hints[k], range_of(fields[k])) for k, v in block.items()
              if k != "method"}
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
    max_document_tokens: int = ranged(512, COUNT)
    max_answer_tokens: int = ranged(64, COUNT)
    max_prompt_tokens: int = ranged(1024, COUNT)  # whole prompt (document, history, question); longer ones lose document text
    history_turns: int = ranged(2, NONNEG)
    window_around_span: bool = False  # too-long document: keep a window around the grounding instead of dropping
    template: str = "koalpaca"  # alpaca format only: koalpaca | alpaca | chat | path to a YAML template
    eval_fraction: float = ranged(0.0, SHARE)  # when no eval file: hold out this share of dialogues / records
    # an eval file sharing example ids (or, where samples carry one, dialogues) with the train file:
    # "warn" prints the counts, "error" refuses to run
    eval_overlap: str = "warn"
    max_train_samples: int | None = ranged(None, COUNT)
    max_eval_samples: int | None = ranged(None, COUNT)
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
    max_new_tokens: int = ranged(64, COUNT)
    num_beams: int = ranged(1, COUNT)
    batch_size: int = ranged(8, COUNT)

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
    lr: float = ranged(1e-2, POSITIVE)
    weight_decay: float = ranged(0.02, NONNEG)
    warmup_ratio: float = ranged(0.1, FRACTION)
    epochs: float = ranged(1.0, POSITIVE)
    max_steps: int | None = ranged(None, COUNT)  # overrides epochs when set
    batch_size: int = ranged(4, COUNT)
    grad_accum: int = ranged(1, COUNT)
    max_grad_norm: float = ranged(1.0, POSITIVE)
    # auto | bf16 | fp16 | fp32. bf16 = mixed precision (fp32 trainable weights, bf16 autocast); auto = bf16 where
    # the hardware runs it natively, fp32 elsewhere (a CPU without AVX512-BF16/AMX emulates bf16, far slower).
    precision: str = "auto"
    seed: int = ranged(42, NONNEG)
    save_every: int = ranged(50, COUNT)  # optimizer steps between checkpoints
    trust_remote_code: bool = False
    group_by_length: bool = False  # batches of similar lengths: less padding (groundtune.data.order)

    def __post_init__(self):
        validate(self)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision is {self.precision!r}; choose auto (bf16 where the hardware has it, else "
                              "fp32), bf16, fp16 or fp32")
        check_method(self.method)


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


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
