"""Retrieval stages register themselves here, as PEFT methods do in `groundtune.methods`; pipelines are read
from this registry, and so is the check of a config's data.retrieval block.

A pipeline is a first stage, optionally followed by "+" and a reranker: "bm25", "hybrid+rerank", "dense+upr".
"default" is the index's own first stage (`Retriever.default_method`); "+rerank" is the reranker loaded from a
folder (`Retriever.load(..., reranker=DIR)`), whatever its kind; "+NAME" is the reranker registered as NAME.

A stage is declared in its own module, which ends with ``register_first_stage(FirstStage(...))`` or
``register_reranker(RerankerStage(...))``. The registry finds every module of `groundtune.retrieval` (files
starting with ``_`` are helpers), so adding a stage means adding that file; the index, the pipeline parser,
the config check, RAG and the CLI help all read the registry.

This module imports nothing but the errors, so that the config layer (which checks the block) reads the names
without importing the retrieval modules above it; the stages are imported by name only when first asked for.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Sequence

from groundtune.errors import ConfigError, GroundtuneError

FUSION_DEPTH = 100  # candidates taken from each retriever before fusion
RERANK_DEPTH = 20  # candidates the cross-encoder re-scores
# Dense weight in the fusion when no dev questions chose one (`groundtune index --dev`): on English
# doc2dial the two retrievers are about as good (docs/retrieval.md), so they count equally (plain RRF).
DEFAULT_DENSE_WEIGHT = 0.5
LOADED = "rerank"  # "+rerank": the reranker loaded from a folder, whatever its kind

# data.retrieval keys and their defaults (index has none: it must be given)
RETRIEVAL_DEFAULTS = {"index": None, "k": 3, "pipeline": "default", "reranker": None, "rerank_depth": RERANK_DEPTH}


@dataclass(frozen=True)
class FirstStage:
    """A first stage: ranks every passage of an index for a query.

    rank(retriever, queries, depth, inputs) -> one [(passage id, score), ...] per query, best first, `depth`
        long at most; `inputs` holds the rankings of the stages named in `combines` (for a fusion).
    load(folder, meta, mmap) -> the stage's part of an index folder (None: this index was built without it);
    save(part, folder): write that part into an index folder being built;
    combines: first stages whose rankings `rank` combines (a stage with neither load nor combines needs no part);
    candidates: how many candidates it takes from each of those;
    languages(meta) -> the languages it ranks (None: any), from the index's index.json;
    missing: what to do when an index lacks the part (shown when a pipeline asks for the stage).
    """

    name: str
    rank: Callable
    load: Callable | None = None
    save: Callable | None = None
    combines: tuple[str, ...] = ()
    candidates: int = 0
    languages: Callable[[dict], Sequence[str] | None] = lambda meta: None
    missing: str = ""


@dataclass(frozen=True)
class RerankerStage:
    """A reranker: re-scores the top of a first stage's ranking (a `groundtune.retrieval.reranker.Reranker`).

    load(source, **options) -> the Reranker; source: a folder (or a model for those that take one), None for
        its default; rank is the loaded Reranker's own `rerank`;
    needs_folder: a pipeline "+NAME" needs a trained folder given (`Retriever.load(reranker=...)`), where
        otherwise `load(None)` gives the default on first use;
    save(model, folder): write a trained one (what `train_reranker` writes besides its record);
    recognizes(folder, model_type) -> bool: a folder of this kind that `train_reranker` did not write
        (model_type: sentence-transformers' config_sentence_transformers.json "model_type", or None);
    train(examples, **options) -> (model, losses, loss name), with `defaults` for the options left unset;
    languages: what it reads well (None: any language its model reads).
    """

    name: str
    load: Callable
    needs_folder: bool = True
    save: Callable | None = None
    recognizes: Callable[[Path, str | None], bool] | None = None
    train: Callable | None = None
    defaults: dict[str, Any] | None = None
    languages: Sequence[str] | None = None


_FIRST: dict[str, FirstStage] = {}
_RERANKERS: dict[str, RerankerStage] = {}
_discovered = False


def _register(table: dict, stage):
    known = table.get(stage.name)
    if stage.name in ("default", LOADED) or (known is not None and known != stage):
        raise GroundtuneError(f"a retrieval stage is already called {stage.name!r}; choose another name")
    if stage.name in (_FIRST if table is _RERANKERS else _RERANKERS) or "+" in stage.name:
        raise GroundtuneError(f"{stage.name!r} cannot name a retrieval stage: it is taken, or holds '+'")
    table[stage.name] = stage
    return stage


def register_first_stage(stage: FirstStage) -> FirstStage:
    """Make a first stage known by its name (called at the end of the stage's own module)."""
    return _register(_FIRST, stage)


def register_reranker(stage: RerankerStage) -> RerankerStage:
    """Make a reranker known by its name (called at the end of the reranker's own module)."""
    return _register(_RERANKERS, stage)


def _discover() -> None:
    """Import every module of groundtune.retrieval once; each stage registers itself."""
    global _discovered
    if not _discovered:
        package = import_module(__name__.rpartition(".")[0])
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                import_module(f"{package.__name__}.{info.name}")
        _discovered = True


def first_stages() -> dict[str, FirstStage]:
    _discover()
    return _FIRST


def rerankers() -> dict[str, RerankerStage]:
    _discover()
    return _RERANKERS


def reranker(name: str) -> RerankerStage:
    known = rerankers()
    if name not in known:
        raise GroundtuneError(f"unknown reranker {name!r}; choose one of {', '.join(known)}")
    return known[name]


def usage() -> str:
    """The pipelines there are, in words (error messages and the CLI's help)."""
    firsts, reranks = ", ".join(first_stages()), ", ".join(f"+{n}" for n in rerankers())
    return (f"a first stage ({firsts}, or default: the index's), optionally followed by +rerank (the reranker "
            f"folder given) or a named reranker ({reranks})")


def parse_pipeline(name: str) -> tuple[str, str | None]:
    """(first stage or "default", reranker or None) of a pipeline name; ValueError naming what there is."""
    first, plus, rest = name.partition("+")
    if (first != "default" and first not in first_stages()) or (plus and rest != LOADED and rest not in rerankers()):
        raise GroundtuneError(f"unknown pipeline {name!r}; use {usage()}")
    return first, rest or None


def check_retrieval(block, where: str = "data.retrieval", data_format: str = "doc2dial") -> dict:
    """A data.retrieval block with defaults filled in; a ConfigError names the key and the fix."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where} is {block!r}; it must be a mapping such as {{index: my-index, k: 3}}")
    unknown = sorted(set(block) - set(RETRIEVAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(RETRIEVAL_DEFAULTS)}")
    out = {**RETRIEVAL_DEFAULTS, **block}
    if not isinstance(out["index"], str) or not out["index"].strip():
        raise ConfigError(f"{where}.index is {out['index']!r}; give the index folder built by `groundtune index`")
    for key in ("k", "rerank_depth"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ConfigError(f"{where}.{key} is {out[key]!r}; it must be a whole number in [1, inf)")
    if not isinstance(out["pipeline"], str):
        raise ConfigError(f"{where}.pipeline is {out['pipeline']!r}; use {usage()}")
    try:
        _, rest = parse_pipeline(out["pipeline"])
    except ValueError:
        raise ConfigError(f"{where}.pipeline is {out['pipeline']!r}; use {usage()}") from None
    if rest is not None and (rest == LOADED or rerankers()[rest].needs_folder) and not out["reranker"]:
        raise ConfigError(f"{where}.pipeline {out['pipeline']!r} needs {where}.reranker: a folder from "
                          "`groundtune train-reranker`")
    if data_format != "doc2dial":
        raise ConfigError(f"{where} needs data.format doc2dial (dialogues with grounding); it is {data_format!r}")
    return out
