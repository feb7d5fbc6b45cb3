"""An index folder (passages + BM25 + optional dense vectors) and the retriever that searches it.

    my-index/
      index.json       what was built and how (segmentation, tokenizer, encoder, counts)
      passages.jsonl   one passage per line; a passage's line number is its id in both indexes
      bm25/            bm25s sparse score matrix (memory-mapped on load)
      dense/           faiss IndexFlatIP over normalised embeddings (memory-mapped on load)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

from groundtune.fileio import atomic_folder
from groundtune.retrieval.bm25 import BM25Index
from groundtune.retrieval.dense import DenseIndex
from groundtune.retrieval.hybrid import reciprocal_rank_fusion
from groundtune.retrieval.passages import Passage, read_passages, write_passages
from groundtune.retrieval.queries import plain_query
from groundtune.retrieval.tokenizer import Tokenizer

META_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25"
DENSE_DIR = "dense"
METHODS = ("bm25", "dense", "hybrid")
FUSION_DEPTH = 100  # candidates taken from each retriever before fusion
RERANK_DEPTH = 20  # candidates the cross-encoder re-scores


def build_index(
    passages: Sequence[Passage],
    folder: str | os.PathLike,
    *,
    language: str = "auto",
    dense: bool = True,
    encoder: str | None = None,
    segmentation: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Index `passages` into `folder` (written atomically: a failed build leaves any old index intact)."""
    passages = list(passages)
    if not passages:
        raise ValueError("build_index: no passages")
    bm25 = BM25Index.build([p.text for p in passages], Tokenizer(language), show_progress=show_progress)
    vectors = DenseIndex.build([p.text for p in passages], encoder, show_progress=show_progress) if dense else None
    meta = {
        "passages": len(passages),
        "documents": len({p.doc_id for p in passages}),
        "segmentation": segmentation,
        "tokenizer": bm25.tokenizer.to_dict(),
        "dense": vectors is not None,
        "encoder": encoder if dense else None,
    }
    with atomic_folder(folder) as tmp:
        write_passages(passages, tmp / PASSAGES_FILE)
        bm25.save(tmp / BM25_DIR)
        if vectors is not None:
            vectors.save(tmp / DENSE_DIR)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return Path(folder)


class Hit(NamedTuple):
    index: int  # passage id (line in passages.jsonl)
    score: float
    passage: Passage


class Retriever:
    """Search an index with BM25, dense, or both fused; optionally re-scored by a cross-encoder."""

    def __init__(self, passages: list[Passage], bm25: BM25Index, dense: DenseIndex | None = None, reranker=None, meta=None):
        self.passages = passages
        self.bm25 = bm25
        self.dense = dense
        self.reranker = reranker
        self.meta = meta or {}

    @classmethod
    def load(cls, folder: str | os.PathLike, *, reranker=None, mmap: bool = True) -> "Retriever":
        """Open an index folder; `reranker` is a `Reranker` or the folder of one (from `train_reranker`)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a groundtune index (no {META_FILE}); build one with `groundtune index`")
        meta = json.loads((folder / META_FILE).read_text())
        passages = read_passages(folder / PASSAGES_FILE)
        bm25 = BM25Index.load(folder / BM25_DIR, mmap=mmap)
        dense = DenseIndex.load(folder / DENSE_DIR, mmap=mmap) if meta.get("dense") else None
        if len(passages) != len(bm25) or (dense is not None and len(dense) != len(passages)):
            raise ValueError(f"{folder}: passages and indexes disagree in size; rebuild the index")
        if reranker is not None and not hasattr(reranker, "rerank"):
            from groundtune.retrieval.rerank import Reranker

            reranker = Reranker.load(reranker)
        return cls(passages, bm25, dense, reranker, meta)

    @property
    def default_method(self) -> str:
        return "hybrid" if self.dense is not None else "bm25"

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

        method: "bm25", "dense" or "hybrid" (reciprocal rank fusion of both); default hybrid when the index
        has dense vectors. rerank: re-score the top `rerank_depth` with the cross-encoder; default whenever
        a reranker is loaded.
        """
        method = method or self.default_method
        rerank = self.reranker is not None if rerank is None else rerank
        pipeline = method + ("+rerank" if rerank else "")
        return self.rank_pipelines(queries, k, [pipeline], rerank_depth=rerank_depth)[pipeline]

    def rank_pipelines(
        self, queries: Sequence[str], k: int, pipelines: Sequence[str], *, rerank_depth: int = RERANK_DEPTH
    ) -> dict[str, list[list[tuple[int, float]]]]:
        """Rankings of several pipelines ("bm25", "dense", "hybrid", each optionally "+rerank") at once,
        searching each index only once (dense query encoding is the slow part)."""
        parsed = {}
        for name in pipelines:
            method, plus, rest = name.partition("+")
            if method not in METHODS or (plus and rest != "rerank"):
                raise ValueError(f"unknown pipeline {name!r}; use one of {METHODS}, optionally followed by '+rerank'")
            if method != "bm25" and self.dense is None:
                raise ValueError(f"pipeline {name!r} needs dense vectors; rebuild the index with `groundtune index --dense`")
            if plus and self.reranker is None:
                raise ValueError(f"pipeline {name!r} needs a reranker (train one with `groundtune train-reranker`)")
            parsed[name] = (method, bool(plus))
        queries = list(queries)
        methods = {m for m, _ in parsed.values()}
        wide = max(k, rerank_depth, FUSION_DEPTH if "hybrid" in methods else 0)
        bm25 = self.bm25.search([plain_query(q) for q in queries], wide) if methods & {"bm25", "hybrid"} else None
        dense = self.dense.search(queries, wide) if methods & {"dense", "hybrid"} else None
        base = {
            "bm25": lambda: bm25,
            "dense": lambda: dense,
            "hybrid": lambda: [reciprocal_rank_fusion([b, d]) for b, d in zip(bm25, dense)],
        }
        out, cache = {}, {}
        for name, (method, rerank) in parsed.items():
            if method not in cache:
                cache[method] = base[method]()
            ranked = cache[method]
            if rerank:
                ranked = self.reranker.rerank(queries, ranked, self.passages, depth=rerank_depth)
            out[name] = [r[:k] for r in ranked]
        return out

    def search(self, query: str, k: int = 5, **kwargs) -> list[Hit]:
        """Top-`k` hits for one query (see `rank` for the options)."""
        return [Hit(i, s, self.passages[i]) for i, s in self.rank([query], k, **kwargs)[0]]
