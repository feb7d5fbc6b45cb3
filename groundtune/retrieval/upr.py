"""UPR, unsupervised passage re-ranking (Sachan et al., 2022, "Improving Passage Retrieval with Zero-Shot
Question Generation"): re-score each candidate passage by a language model's likelihood of the question
given the passage, log p(question | "Passage: ... Please write a question based on this passage."),
averaged over the question's tokens. No training, so it works on any corpus in any language the LM reads.

The question is the current user turn (the part of a MultiDoc2Dial query before "[SEP]"); the dialogue
history is not scored. Cost: one forward pass over (passage + question) per candidate.
"""

from __future__ import annotations

from typing import Sequence

from groundtune.retrieval.pipelines import RerankerStage, register_reranker
from groundtune.retrieval.reranker import Reranker

PROMPT = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"
MAX_PASSAGE_TOKENS = 192
MAX_QUESTION_TOKENS = 64


def question_of(query: str) -> str:
    """The current question of a MultiDoc2Dial query ("question[SEP]history")."""
    return query.split("[SEP]", 1)[0].strip()


class UPRReranker(Reranker):
    """Re-rank candidates by mean log-likelihood of the question under a causal LM (default: the embedded
    SmolLM2-135M-Instruct)."""

    kind = "upr"

    def __init__(self, model, tokenizer, *, batch_size: int = 10, prompt: str = PROMPT,
                 max_passage_tokens: int = MAX_PASSAGE_TOKENS, max_question_tokens: int = MAX_QUESTION_TOKENS):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.prompt = prompt
        self.max_passage_tokens = max_passage_tokens
        self.max_question_tokens = max_question_tokens

    @classmethod
    def load(cls, model: str | None = None, **kwargs) -> "UPRReranker":
        """From a model folder, .gguf file or hub id (`groundtune.load_model`); None = the embedded SmolLM2."""
        from groundtune.models import load_model

        lm, tokenizer = load_model(model)
        return cls(lm, tokenizer, **kwargs)

    def query_text(self, query: str) -> str:
        return question_of(query)  # the dialogue history is not scored

    def _ids(self, text: str, limit: int) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][:limit]

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Mean log p(question tokens | prompt with passage) for each (question, passage) pair."""
        import torch

        head, tail = self.prompt.split("{passage}")
        head_ids, tail_ids = self._ids(head, 64), self._ids(tail, 64)
        rows = []
        for question, passage in pairs:
            context = head_ids + self._ids(passage, self.max_passage_tokens) + tail_ids
            target = self._ids(" " + question, self.max_question_tokens) or [self.tokenizer.eos_token_id]
            rows.append((context, target))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        out: list[float] = [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]) - len(rows[i][1]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                seqs = [rows[i][0] + rows[i][1] for i in batch]
                width = max(map(len, seqs))
                keep = max(len(rows[i][1]) for i in batch) + 1
                # left padding: every row ends at the last column, so the question tokens of all rows sit in the
                # last `keep` columns and the LM head runs on those alone (logits_to_keep), not on the passages
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for j, seq in enumerate(seqs):
                    ids[j, width - len(seq):] = torch.tensor(seq)
                    mask[j, width - len(seq):] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                    position_ids=positions.to(device), logits_to_keep=keep).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # column c predicts token width - keep + c + 1
                for j, i in enumerate(batch):
                    target = rows[i][1]
                    cols = torch.arange(keep - 1 - len(target), keep - 1, device=logprobs.device)
                    tokens = torch.tensor(target, device=logprobs.device)
                    out[i] = float(logprobs[j, cols, tokens].mean())
        return out


# No training and no folder: "+upr" loads the embedded SmolLM2-135M-Instruct on first use (or the model named).
register_reranker(RerankerStage("upr", load=lambda source=None, **options: UPRReranker.load(
    None if source is None else str(source), **options), needs_folder=False, languages=None))
