"""An index folder (passages + BM25 + optional dense vectors) and the retriever that searches it.

    my-index/
      index.json       what was built and how (segmentation, tokenizer, encoder, counts)
      passages.jsonl   one passage per line; a passage's line number is its id in both indexes
      bm25/            bm25s sparse score matrix (memory-mapped on load)
      dense/           faiss IndexFlatIP over normalised embeddings (memory-mapped on load)

Each part is a first stage's (`groundtune.retrieval.pipelines`): the stage loads, saves and ranks it, and
the retriever runs the stages and rerankers a pipeline names, reading them from the registry alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

from groundtune.fileio import atomic_folder
from groundtune.retrieval.bm25 import BM25Index
from groundtune.retrieval.dense import DenseIndex
from groundtune.retrieval.hybrid import tune_dense_weight
from groundtune.retrieval.passages import Passage, read_passages, write_passages
from groundtune.retrieval.pipelines import (DEFAULT_DENSE_WEIGHT, FUSION_DEPTH, LOADED, RERANK_DEPTH, first_stages,
                                            parse_pipeline, reranker as reranker_stage)
from groundtune.retrieval.queries import plain_query
from groundtune.retrieval.tokenizer import Tokenizer
from groundtune.errors import GroundtuneError

META_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"


def corpus_languages(texts: Sequence[str]) -> dict[str, float]:
    """Share of passages that are Korean / not Korean (`groundtune.korean.is_korean`)."""
    from groundtune.korean import is_korean

    ko = sum(map(is_korean, texts)) / len(texts) if texts else 0.0
    return {"ko": round(ko, 4), "en": round(1.0 - ko, 4)}


def main_language(languages: dict[str, float], tokenizer_language: str = "auto") -> str:
    """The corpus language the defaults are chosen for: the tokenizer's when fixed, else the majority."""
    if tokenizer_language in ("en", "ko"):
        return tokenizer_language
    return "ko" if languages.get("ko", 0.0) > 0.5 else "en"


def covers(encoder_languages: Sequence[str] | None, language: str) -> bool:
    """Whether an encoder trained on `encoder_languages` can embed `language` text (unknown: assumed yes,
    the user chose the encoder; "multilingual" covers everything)."""
    if not encoder_languages:
        return True
    return language in encoder_languages or "multilingual" in encoder_languages


def build_index(
    passages: Sequence[Passage],
    folder: str | os.PathLike,
    *,
    language: str = "auto",
    dense: bool | None = None,
    encoder: str | None = None,
    encoder_languages: Sequence[str] | None = None,
    segmentation: str | None = None,
    dev_queries=None,
    show_progress: bool = True,
) -> Path:
    """Index `passages` into `folder` (written atomically: a failed build leaves any old index intact).

    dense: None (default) embeds the passages unless the encoder does not cover the corpus's language (the
    shipped all-MiniLM-L6-v2 is English-only: a Korean corpus gets BM25 alone); True embeds them anyway
    (the fusion then gives them weight 0 unless `dev_queries` show they help); False never.
    encoder_languages: what the encoder was trained on (default: read from the encoder's model card).
    dev_queries: `RetrievalQuery`s with gold grounding in these passages; the fusion's dense weight is the
    one that scores best on them (see `tune_fusion`), else `DEFAULT_DENSE_WEIGHT`.
    """
    from groundtune.retrieval.dense import encoder_languages as card_languages

    passages = list(passages)
    if not passages:
        raise GroundtuneError("build_index: no passages")
    texts = [p.text for p in passages]
    languages = corpus_languages(texts)
    language_main = main_language(languages, language)
    if dense is not False and encoder_languages is None:
        encoder_languages = card_languages(encoder)
    encoder_covers = covers(encoder_languages, language_main)
    embed = dense if dense is not None else encoder_covers
    bm25 = BM25Index.build(texts, Tokenizer(language), show_progress=show_progress)
    vectors = DenseIndex.build(texts, encoder, show_progress=show_progress) if embed else None
    meta = {
        "passages": len(passages),
        "documents": len({p.doc_id for p in passages}),
        "segmentation": segmentation,
        "tokenizer": bm25.tokenizer.to_dict(),
        "corpus_languages": languages,
        "language": language_main,
        "dense": vectors is not None,
        "encoder": encoder if embed else None,
        "encoder_languages": list(encoder_languages) if encoder_languages else None,
        "encoder_covers_corpus": encoder_covers if embed else None,
    }
    if vectors is None and dense is None and not encoder_covers:
        meta["dense_skipped"] = (f"the encoder covers {list(encoder_languages)}, not this {language_main} corpus; "
                                 "pass an encoder that does (index --encoder), or --dense to embed anyway")
    if vectors is not None:
        weight = DEFAULT_DENSE_WEIGHT if encoder_covers else 0.0
        meta["fusion"] = {"dense_weight": weight, "chosen_on": "default" if encoder_covers else
                          "default: the encoder does not cover the corpus language"}
        if dev_queries:
            retriever = Retriever(passages, {"bm25": bm25, "dense": vectors}, meta=meta)
            meta["fusion"] = tune_fusion(retriever, dev_queries, show_progress=show_progress)
    with atomic_folder(folder) as tmp:
        write_passages(passages, tmp / PASSAGES_FILE)
        for name, part in {"bm25": bm25, "dense": vectors}.items():
            if part is not None:
                first_stages()[name].save(part, tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return Path(folder)


class Hit(NamedTuple):
    index: int  # passage id (line in passages.jsonl)
    score: float
    passage: Passage


class Retriever:
    """Search an index with its first stages (BM25, dense, their fusion, ...), optionally re-scored by a
    reranker."""

    def __init__(self, passages: list[Passage], parts: dict, reranker=None, meta=None):
        self.passages = passages
        self.parts = {name: part for name, part in parts.items() if part is not None}  # first stage -> its index
        self.reranker = reranker  # the one loaded from a folder: "+rerank"
        # every reranker in use, by its registry name; those that need no folder (UPR) are loaded on first use
        self.rerankers = {reranker.kind: reranker} if reranker is not None else {}
        self.meta = meta or {}

    @property
    def bm25(self):
        return self.parts.get("bm25")

    @property
    def dense(self):
        return self.parts.get("dense")

    def use(self, reranker) -> None:
        """Rank "+NAME" pipelines with `reranker` (a `Reranker` whose kind is NAME) instead of NAME's default."""
        reranker_stage(reranker.kind)
        self.rerankers[reranker.kind] = reranker

    @classmethod
    def load(cls, folder: str | os.PathLike, *, reranker=None, mmap: bool = True) -> "Retriever":
        """Open an index folder; `reranker` is a `Reranker` or the folder of one (from `train_reranker`)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a groundtune index (no {META_FILE}); build one with `groundtune index`")
        meta = json.loads((folder / META_FILE).read_text())
        passages = read_passages(folder / PASSAGES_FILE)
        parts = {name: stage.load(folder, meta, mmap) for name, stage in first_stages().items() if stage.load}
        if any(part is not None and len(part) != len(passages) for part in parts.values()):
            raise GroundtuneError(f"{folder}: passages and indexes disagree in size; rebuild the index")
        if reranker is not None and not hasattr(reranker, "rerank"):
            from groundtune.retrieval.rerank import load_reranker

            reranker = load_reranker(reranker)
        return cls(passages, parts, reranker, meta)

    @property
    def dense_weight(self) -> float:
        """The dense ranking's weight in the hybrid fusion (index.json "fusion"; older indexes: plain RRF)."""
        return float(self.meta.get("fusion", {}).get("dense_weight", DEFAULT_DENSE_WEIGHT))

    @property
    def default_method(self) -> str:
        """hybrid when the index has dense vectors that the fusion gives weight (between 0 and 1), else the
        one retriever that has all of it: bm25 (no vectors, or an encoder that does not cover the corpus)."""
        if self.dense is None:
            return "bm25"
        w = self.dense_weight
        return "bm25" if w == 0.0 else "dense" if w == 1.0 else "hybrid"

    def rank(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        method: str | None = None,
        rerank: bool | None = None,
        rerank_depth: int = RERANK_DEPTH,
    ) -> list[list[tuple[int, float]]]:
        """Top-`k` (passage id, score) per query, best first.

        method: a first stage ("bm25", "dense", "hybrid": weighted reciprocal rank fusion of both, ...); default
        `default_method`. rerank: re-score the top `rerank_depth` with the loaded reranker; default whenever
        a reranker is loaded.
        """
        method = method or self.default_method
        rerank = self.reranker is not None if rerank is None else rerank
        pipeline = method + (f"+{LOADED}" if rerank else "")
        return self.rank_pipelines(queries, k, [pipeline], rerank_depth=rerank_depth)[pipeline]

    def _missing(self, stage) -> str | None:
        """What `stage` needs that this index lacks (None: it can run)."""
        if stage.load is not None and stage.name not in self.parts:
            return stage.missing or f"the {stage.name} part of the index"
        for name in stage.combines:
            missing = self._missing(first_stages()[name])
            if missing:
                return missing
        return None

    def runnable_stages(self) -> list[str]:
        """The first stages this index has every part for, in registry order."""
        return [name for name, stage in first_stages().items() if self._missing(stage) is None]

    def _reranker_for(self, name: str, pipeline: str):
        if name == LOADED:
            if self.reranker is None:
                raise GroundtuneError(f"pipeline {pipeline!r} needs a reranker (train one with `groundtune train-reranker`)")
            return self.reranker
        if name not in self.rerankers:
            stage = reranker_stage(name)
            if stage.needs_folder:
                raise GroundtuneError(f"pipeline {pipeline!r} needs a {name} reranker folder (give it as the reranker)")
            self.rerankers[name] = stage.load(None)  # its default, e.g. UPR over the embedded SmolLM2-135M-Instruct
        return self.rerankers[name]

    def rank_pipelines(
        self, queries: Sequence[str], k: int, pipelines: Sequence[str], *, rerank_depth: int = RERANK_DEPTH
    ) -> dict[str, list[list[tuple[int, float]]]]:
        """Rankings of several pipelines (a first stage, optionally "+rerank" or "+" a named reranker such as
        "+upr"; "default" is `default_method`) at once, running each first stage only once (dense query
        encoding is the slow part)."""
        stages = first_stages()
        parsed = {}
        for name in pipelines:
            method, rerank = parse_pipeline(name)
            method = self.default_method if method == "default" else method
            missing = self._missing(stages[method])
            if missing:
                raise GroundtuneError(f"pipeline {name!r} needs {missing}")
            parsed[name] = (method, rerank and self._reranker_for(rerank, name))
        queries = list(queries)
        needed, todo = [], [m for m, _ in parsed.values()]
        while todo:  # the stages asked for and those they combine, inputs first
            stage = stages[todo.pop()]
            needed = [stage.name] + [n for n in needed if n != stage.name]
            todo += stage.combines
        wide = max(k, rerank_depth, *(stages[m].candidates for m in needed))
        ranked_by = {}
        for method in needed:
            stage = stages[method]
            ranked_by[method] = stage.rank(self, queries, wide, {n: ranked_by[n] for n in stage.combines})
        out = {}
        for name, (method, model) in parsed.items():
            ranked = ranked_by[method]
            if model:
                ranked = model.rerank(queries, ranked, self.passages, depth=rerank_depth)
            out[name] = [r[:k] for r in ranked]
        return out

    def search(self, query: str, k: int = 5, **kwargs) -> list[Hit]:
        """Top-`k` hits for one query (see `rank` for the options)."""
        return [Hit(i, s, self.passages[i]) for i, s in self.rank([query], k, **kwargs)[0]]


def tune_fusion(retriever: Retriever, queries, *, show_progress: bool = False, batch_size: int = 64) -> dict:
    """The dense weight of the fusion that scores best (mean of passage recall@1, recall@5 and MRR) on
    `queries` (dev questions with gold grounding), searched over 0, 0.1, ..., 1; 0 and 1 are BM25 and dense
    alone, so on these questions the chosen fusion is never worse than its best part. Returns the
    index.json "fusion" record."""
    from groundtune.retrieval.evaluate import gold_passages, passages_by_doc

    if retriever.dense is None:
        raise GroundtuneError("tune_fusion: the index has no dense vectors")
    queries = list(queries)
    by_doc = passages_by_doc(retriever.passages)
    relevant = [set(gold_passages(q, retriever.passages, by_doc)) for q in queries]
    if not any(relevant):
        raise GroundtuneError("tune_fusion: none of the dev questions has a gold passage in this index "
                         "(are they grounded in these documents?)")
    bm25, dense = [], []
    for start in range(0, len(queries), batch_size):
        texts = [q.query for q in queries[start : start + batch_size]]
        bm25 += retriever.bm25.search([plain_query(t) for t in texts], FUSION_DEPTH)
        dense += retriever.dense.search(texts, FUSION_DEPTH)
    weight, scores = tune_dense_weight(bm25, dense, relevant)
    if show_progress:
        print("fusion dense weight on dev questions: " + ", ".join(f"{w:g}: {s:.3f}" for w, s in scores.items())
              + f" -> {weight:g}", flush=True)
    return {"dense_weight": weight, "chosen_on": f"{sum(map(bool, relevant))} dev questions",
            "objective": "mean of passage recall@1, recall@5, MRR", "scores": {f"{w:g}": round(s, 4) for w, s in scores.items()}}

