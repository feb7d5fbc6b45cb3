"""Late-interaction re-ranking (ColBERT, Khattab & Zaharia 2020) with sentence-transformers' MultiVectorEncoder.

A query and a passage are encoded separately into one normalised vector per token; their score is MaxSim:
each query token's best cosine with any passage token, averaged over the query's tokens. It is the
reranker `train_reranker` makes by default, because it starts from what the shipped encoder already knows:

- all-MiniLM-L6-v2 was trained to make the mean of its token vectors a good sentence embedding, so its token
  vectors already match related words. Kept at their 384 dimensions (no new projection, which is what
  sentence-transformers adds to a bare checkpoint and would have to be learnt), MaxSim over them is level with
  hybrid before any training (doc2dial, 1,168 held-out questions, hybrid's top 20: passage R@1 34.6 against
  34.2, R@5 66.3 against 67.4), where a cross-encoder's fresh head starts as a random order.
- Training then only has to sharpen what is there: two passes over 1,014 doc2dial questions, each step 16
  questions against one of their mined hard negatives and the batch's other passages, take minutes on 2 CPU
  cores (figures in docs/retrieval.md).
- A cross-encoder started from the same checkpoint has to learn relevance through a [CLS] pooler that was never
  trained; in a CPU budget it stays at chance (see `rerank.py`).

The loss is sentence-transformers' MultiVectorMultipleNegativesRankingLoss (softmax over the positive, the
batch's other positives and the hard negatives) with MeanMaxSim scores, trained through groundtune's one loop.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

from groundtune.retrieval.pipelines import RerankerStage, register_reranker
from groundtune.retrieval.reranker import Reranker

KIND = "late-interaction"
QUERY_TOKENS = 64  # the question and the newest turns of a MultiDoc2Dial query (its head)
DOCUMENT_TOKENS = 256  # a 100-word passage with room to spare
# MeanMaxSim lies in [-1, 1]; 1 / temperature, as sentence-transformers' dense MNRL scales cosine by 20.
SCALE = 20.0


def new_model(base: str | None = None, *, query_tokens: int = QUERY_TOKENS, document_tokens: int = DOCUMENT_TOKENS,
              device: str = "cpu"):
    """A MultiVectorEncoder over `base` (a BERT-style or sentence-transformers folder; default the shipped
    all-MiniLM-L6-v2): its token vectors, masked and L2-normalised, scored by MeanMaxSim."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    from groundtune.retrieval.dense import default_encoder_path

    source = base or default_encoder_path()
    local = {"local_files_only": Path(source).is_dir()}
    transformer = Transformer(source, model_kwargs=local, processor_kwargs=local, config_kwargs=local,
                              query_length=query_tokens, document_length=document_tokens)
    return MultiVectorEncoder(modules=[transformer, MultiVectorMask(), Normalize(module_input_name="token_embeddings")],
                              device=device, similarity_fn_name="meanmaxsim")


class LateInteractionReranker(Reranker):
    """Re-score retrieved passages by MeanMaxSim between query and passage token vectors."""

    kind = KIND

    def __init__(self, model, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32) -> "LateInteractionReranker":
        from sentence_transformers import MultiVectorEncoder

        return cls(MultiVectorEncoder(str(folder), device=device, local_files_only=True), batch_size)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """MeanMaxSim of each (query, passage) pair; each distinct query and passage is encoded once."""
        if not pairs:
            return []
        queries = list(dict.fromkeys(q for q, _ in pairs))
        texts = list(dict.fromkeys(p for _, p in pairs))
        encode = dict(batch_size=self.batch_size, show_progress_bar=False)
        q_vectors = dict(zip(queries, self.model.encode_query(queries, **encode)))
        p_vectors = dict(zip(texts, self.model.encode_document(texts, **encode)))
        scores = self.model.similarity_pairwise([q_vectors[q] for q, _ in pairs], [p_vectors[p] for _, p in pairs])
        return [float(s) for s in scores]


class _ContrastiveTask:
    """What groundtune.train.fit needs to train a MultiVectorEncoder: questions with a positive and hard
    negatives, scored against every passage in the batch (the other questions' positives are in-batch
    negatives) by sentence-transformers' multi-vector MNRL loss."""

    def __init__(self, model, examples, negatives: int, seed: int):
        """`negatives` per question and step, drawn afresh each epoch from the example's mined ones."""
        from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss
        from sentence_transformers.multi_vector_encoder.scoring import mean_colbert_scores

        self.model, self.examples, self.seed, self.size = model, list(examples), seed, len(examples)
        self.negatives = negatives
        self.loss = MultiVectorMultipleNegativesRankingLoss(model, scale=SCALE, similarity_fct=mean_colbert_scores)

    def batches(self, epoch: int, size: int) -> list[list[tuple[int, int]]]:
        rng = random.Random(self.seed * 1000 + epoch)
        order = rng.sample(range(self.size), self.size)
        # which of its mined negatives each question is shown this epoch
        picks = [tuple(rng.sample(range(len(e.negatives)), min(self.negatives, len(e.negatives))))
                 for e in self.examples]
        rows = [(j, picks[j]) for j in order]
        return [rows[i:i + size] for i in range(0, self.size, size)]

    def collate(self, rows: list[tuple[int, tuple[int, ...]]]) -> dict:
        batch = [(self.examples[j], picked) for j, picked in rows]
        # one column per role, as the loss expects: queries, positives, then the k-th drawn negative of each
        # (a question with fewer negatives repeats its last one, so every column has a row per question)
        columns = [("query", [e.query for e, _ in batch]), ("document", [e.positive for e, _ in batch])]
        for k in range(self.negatives):
            columns.append(("document", [e.negatives[picked[min(k, len(picked) - 1)]] for e, picked in batch]))
        features = {}
        for c, (task, texts) in enumerate(columns):
            for key, value in self.model.preprocess(texts, task=task).items():
                features[f"{c}.{key}"] = value
            features[f"{c}.task"] = task
        return features

    def loss_sum(self, model, batch: dict):
        columns: dict[int, dict] = {}
        for name, value in batch.items():
            c, key = name.split(".", 1)
            columns.setdefault(int(c), {})[key] = value
        questions = columns[0]["attention_mask"].shape[0]
        return self.loss([columns[c] for c in sorted(columns)]) * questions, questions


def train(examples, *, base: str | None, epochs: int, batch_size: int, lr: float, warmup: float,
          negatives: int, query_tokens: int, document_tokens: int, seed: int, show_progress: bool):
    """Train a late-interaction reranker on `examples` (RerankerExample); returns (model, fit losses)."""
    import torch

    from groundtune.train import Schedule, fit

    torch.manual_seed(seed)
    model = new_model(base, query_tokens=query_tokens, document_tokens=document_tokens)
    schedule = Schedule(lr=lr, batch_size=batch_size, epochs=epochs, warmup_ratio=warmup, weight_decay=0.01,
                        max_grad_norm=1.0, seed=seed, decay="linear")
    result = fit(model, _ContrastiveTask(model, examples, negatives, seed), schedule, progress=show_progress,
                 desc="train reranker")
    return result.model, [r["loss"] for r in result.losses]


def _train(examples, *, base, epochs, batch_size, lr, warmup, max_length, max_query_tokens, negatives_per_step, seed,
           show_progress):
    # the encoder truncates the query to its head itself (query_length), so no clipping here
    model, losses = train(examples, base=base, epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup,
                          negatives=negatives_per_step, query_tokens=max_query_tokens, document_tokens=max_length,
                          seed=seed, show_progress=show_progress)
    return model, losses, "multi-vector MNRL: softmax over the positive, in-batch passages and hard negatives (MeanMaxSim)"


# What it trains with unless told otherwise: 16 questions a step, so each is scored against 31 other passages
# (one of its mined negatives, the others' positives and negatives) at a fine-tuning lr, for 2 epochs;
# `negatives` is how many to mine per question (from the index's default pipeline, whose top 20 the reranker
# re-scores). Chosen on the doc2dial dev fifth (219 questions, passage R@1 / R@5 after re-ranking hybrid's top
# 20), 2 epochs each: always the top BM25 negative 45.2 / 74.9; one of 7 hybrid-mined negatives drawn afresh
# each epoch 49.3 / 75.8; hybrid alone 34.7 / 70.3.
register_reranker(RerankerStage(
    KIND, load=LateInteractionReranker.load, save=lambda model, folder: model.save_pretrained(str(folder)),
    recognizes=lambda folder, model_type: model_type == "MultiVectorEncoder", train=_train,
    defaults={"batch_size": 16, "lr": 2e-5, "max_length": 256, "epochs": 2, "negatives": 7},
    languages=("en",)))  # the shipped all-MiniLM-L6-v2 it starts from is English-only
