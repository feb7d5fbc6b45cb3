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
from groundtune.retrieval.hybrid import tune_dense_weight, weighted_fusion
from groundtune.retrieval.passages import Passage, read_passages, write_passages
from groundtune.retrieval.pipelines import DEFAULT_DENSE_WEIGHT, FUSION_DEPTH, METHODS, RERANK_DEPTH, RERANKERS
from groundtune.retrieval.queries import plain_query
from groundtune.retrieval.tokenizer import Tokenizer

META_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25"
DENSE_DIR = "dense"


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
        raise ValueError("build_index: no passages")
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
            retriever = Retriever(passages, bm25, vectors, meta=meta)
            meta["fusion"] = tune_fusion(retriever, dev_queries, show_progress=show_progress)
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
    """Search an index with BM25, dense, or both fused; optionally re-scored by a reranker."""

    def __init__(self, passages: list[Passage], bm25: BM25Index, dense: DenseIndex | None = None, reranker=None,
                 meta=None, upr=None):
        self.passages = passages
        self.bm25 = bm25
        self.dense = dense
        self.reranker = reranker
        self.upr = upr  # a `UPRReranker`, loaded on first use of a "+upr" pipeline
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
            from groundtune.retrieval.rerank import load_reranker

            reranker = load_reranker(reranker)
        return cls(passages, bm25, dense, reranker, meta)

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

        method: "bm25", "dense" or "hybrid" (weighted reciprocal rank fusion of both); default
        `default_method`. rerank: re-score the top `rerank_depth` with the loaded reranker; default whenever
        a reranker is loaded.
        """
        method = method or self.default_method
        rerank = self.reranker is not None if rerank is None else rerank
        pipeline = method + ("+rerank" if rerank else "")
        return self.rank_pipelines(queries, k, [pipeline], rerank_depth=rerank_depth)[pipeline]

    def rank_pipelines(
        self, queries: Sequence[str], k: int, pipelines: Sequence[str], *, rerank_depth: int = RERANK_DEPTH
    ) -> dict[str, list[list[tuple[int, float]]]]:
        """Rankings of several pipelines ("bm25", "dense", "hybrid", each optionally "+rerank" or "+upr";
        "default" is `default_method`) at once, searching each index only once (dense query encoding is the
        slow part)."""
        parsed = {}
        for name in pipelines:
            method, plus, rest = name.partition("+")
            method = self.default_method if method == "default" else method
            if method not in METHODS or (plus and rest not in RERANKERS):
                raise ValueError(f"unknown pipeline {name!r}; use one of {METHODS} or 'default', optionally "
                                 f"followed by '+rerank' (the loaded reranker) or '+upr' (LM question likelihood)")
            if method != "bm25" and self.dense is None:
                raise ValueError(f"pipeline {name!r} needs dense vectors; rebuild the index with `groundtune index --dense`")
            if rest == "rerank" and self.reranker is None:
                raise ValueError(f"pipeline {name!r} needs a reranker (train one with `groundtune train-reranker`)")
            if rest == "upr" and self.upr is None:
                from groundtune.retrieval.upr import UPRReranker

                self.upr = UPRReranker.load()  # the embedded SmolLM2-135M-Instruct
            parsed[name] = (method, rest or None)
        queries = list(queries)
        methods = {m for m, _ in parsed.values()}
        wide = max(k, rerank_depth, FUSION_DEPTH if "hybrid" in methods else 0)
        bm25 = self.bm25.search([plain_query(q) for q in queries], wide) if methods & {"bm25", "hybrid"} else None
        dense = self.dense.search(queries, wide) if methods & {"dense", "hybrid"} else None
        base = {
            "bm25": lambda: bm25,
            "dense": lambda: dense,
            "hybrid": lambda: [weighted_fusion(b, d, self.dense_weight) for b, d in zip(bm25, dense)],
        }
        out, cache = {}, {}
        for name, (method, rerank) in parsed.items():
            if method not in cache:
                cache[method] = base[method]()
            ranked = cache[method]
            if rerank:
                model = self.reranker if rerank == "rerank" else self.upr
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
        raise ValueError("tune_fusion: the index has no dense vectors")
    queries = list(queries)
    by_doc = passages_by_doc(retriever.passages)
    relevant = [set(gold_passages(q, retriever.passages, by_doc)) for q in queries]
    if not any(relevant):
        raise ValueError("tune_fusion: none of the dev questions has a gold passage in this index "
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

