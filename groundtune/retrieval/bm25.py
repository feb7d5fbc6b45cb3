"""BM25 over passages with bm25s (scores precomputed into a sparse matrix; saved and memory-mapped)."""

from __future__ import annotations

import json
import os
from pathlib import Path


from groundtune.retrieval.pipelines import FirstStage, register_first_stage
from groundtune.retrieval.queries import plain_query
from groundtune.retrieval.tokenizer import Tokenizer
from groundtune.errors import GroundtuneError

TOKENIZER_FILE = "tokenizer.json"


class BM25Index:
    """A bm25s index plus the tokenizer that built it (queries must be cut the same way)."""

    def __init__(self, model, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return int(self.model.scores["num_docs"])

    @classmethod
    def build(
        cls,
        texts: list[str],
        tokenizer: Tokenizer | None = None,
        *,
        k1: float = 1.5,
        b: float = 0.75,
        show_progress: bool = True,
    ) -> "BM25Index":
        if not texts:
            raise GroundtuneError("BM25Index.build: no passages to index")
        tokenizer = tokenizer or Tokenizer()
        return cls.from_tokens(tokenizer(texts), tokenizer, k1=k1, b=b, show_progress=show_progress)

    @classmethod
    def from_tokens(
        cls, tokens: list[list[str]], tokenizer: Tokenizer, *, k1: float = 1.5, b: float = 0.75, show_progress: bool = True
    ) -> "BM25Index":
        """Index passages already cut by `tokenizer` (which is kept to cut the queries)."""
        import bm25s

        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        model.index(tokens, show_progress=show_progress)
        return cls(model, tokenizer)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index files into `folder` (callers build the whole index folder atomically)."""
        folder = Path(folder)
        self.model.save(str(folder), show_progress=False)
        (folder / TOKENIZER_FILE).write_text(json.dumps(self.tokenizer.to_dict()) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = True) -> "BM25Index":
        import bm25s

        folder = Path(folder)
        if not (folder / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a BM25 index folder (no {TOKENIZER_FILE}); build one with `groundtune index`")
        tokenizer = Tokenizer(**json.loads((folder / TOKENIZER_FILE).read_text()))
        model = bm25s.BM25.load(str(folder), mmap=mmap, load_corpus=False)
        return cls(model, tokenizer)

    def search(self, queries: list[str], k: int = 10, *, show_progress: bool = False) -> list[list[tuple[int, float]]]:
        """Top-`k` (passage index, score) per query, best first. Passages sharing no term are left out."""
        if not queries:
            return []
        k = min(k, len(self))
        vocab = self.model.vocab_dict
        tokens = [[t for t in q if t in vocab] for q in self.tokenizer(queries)]
        results: list[list[tuple[int, float]]] = [[] for _ in queries]
        # A query with no indexed term matches nothing (bm25s itself would raise), so it is not sent.
        todo = [i for i, q in enumerate(tokens) if q]
        if todo:
            ids, scores = self.model.retrieve(
                [tokens[i] for i in todo], k=k, show_progress=show_progress, n_threads=0
            )
            import numpy as np  # here, not at the top: the stage registry imports this module for its name

            for i, row_ids, row_scores in zip(todo, np.asarray(ids), np.asarray(scores)):
                results[i] = [(int(p), float(s)) for p, s in zip(row_ids, row_scores) if s > 0]
        return results


def _load_part(folder: Path, meta: dict, mmap: bool) -> BM25Index:
    return BM25Index.load(Path(folder) / PART, mmap=mmap)


def _rank(retriever, queries: list[str], depth: int, inputs: dict) -> list[list[tuple[int, float]]]:
    return retriever.parts[NAME].search([plain_query(q) for q in queries], depth)


NAME = PART = "bm25"  # the stage's name, and its folder in an index
register_first_stage(FirstStage(
    NAME, _rank, load=_load_part, save=lambda part, folder: part.save(Path(folder) / PART),
    languages=lambda meta: ["en", "ko"],  # the tokenizer cuts English words and Korean morphemes (tokenizer.py)
    missing="a BM25 index; rebuild the index with `groundtune index`"))
