"""Retrieval pipeline names and defaults, and the check of a config's data.retrieval block.

A module of its own, importing nothing but the errors, so that the config layer (which checks the block) and
the index (which runs the pipelines) both read the same names without the config layer importing retrieval.
A pipeline is a first stage, optionally followed by "+" and a reranker: "bm25", "hybrid+rerank", "dense+upr";
"default" is the index's own choice (`Retriever.default_method`).
"""

from __future__ import annotations

from groundtune.errors import ConfigError

METHODS = ("bm25", "dense", "hybrid")
RERANKERS = ("rerank", "upr")  # "+rerank": the loaded reranker (train-reranker); "+upr": question likelihood under an LM
FUSION_DEPTH = 100  # candidates taken from each retriever before fusion
RERANK_DEPTH = 20  # candidates the cross-encoder re-scores
# Dense weight in the fusion when no dev questions chose one (`groundtune index --dev`): on English
# doc2dial the two retrievers are about as good (docs/retrieval.md), so they count equally (plain RRF).
DEFAULT_DENSE_WEIGHT = 0.5

# data.retrieval keys and their defaults (index has none: it must be given)
RETRIEVAL_DEFAULTS = {"index": None, "k": 3, "pipeline": "default", "reranker": None, "rerank_depth": RERANK_DEPTH}


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
        raise ConfigError(f"{where}.pipeline is {out['pipeline']!r}; e.g. default, bm25, hybrid, hybrid+rerank, hybrid+upr")
    method, _, rest = out["pipeline"].partition("+")
    if method not in ("default", *METHODS) or rest not in ("", *RERANKERS):
        raise ConfigError(f"{where}.pipeline is {out['pipeline']!r}; use default, bm25, dense or hybrid, optionally "
                          "followed by +rerank (needs reranker) or +upr")
    if rest == "rerank" and not out["reranker"]:
        raise ConfigError(f"{where}.pipeline {out['pipeline']!r} needs {where}.reranker: a folder from "
                          "`groundtune train-reranker`")
    if data_format != "doc2dial":
        raise ConfigError(f"{where} needs data.format doc2dial (dialogues with grounding); it is {data_format!r}")
    return out
