"""Token ids for training: prompt and answer tokenized apart, loss on the answer only, left-padded batches.

Tokenizing the two parts separately (special tokens only on the prompt) gives one BOS at the start, none between
prompt and answer, and the same prompt ids at training and at generation time.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from groundtune.data.sample import Sample, encode_prompt
from groundtune.errors import DataError

IGNORE_INDEX = -100  # the label torch.nn.functional.cross_entropy skips


def pad_token_id(tokenizer) -> int:
    """The pad id, falling back to EOS as GPT-2 and GPT-NeoX (Polyglot-Ko) tokenizers, which have none, expect.
    Safe because padded positions are masked out of attention and carry no label."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise DataError(f"{type(tokenizer).__name__} has neither a pad nor an eos token; set tokenizer.pad_token")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, side: str = "left",
             width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask) of token rows padded with `pad_id` to `width` (default: the longest row).

    The one place a batch is padded: training, `generate`, the server engine and classification all call it.
    Left padding (the default) ends every row at the last column, where generation continues."""
    if side not in ("left", "right"):
        raise DataError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n > width:
            raise DataError(f"row {i} has {n} tokens, more than the batch width {width}")
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        if n:
            ids[i, cols] = torch.as_tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def encode(tokenizer, sample: Sample, max_prompt_tokens: int | None = None,
           max_answer_tokens: int | None = None) -> dict[str, list[int]]:
    """input_ids = prompt ids + answer ids (+ EOS); labels = IGNORE_INDEX on the prompt, the ids on the answer.

    A too-long prompt loses tokens from its left (the start of the document) so the question at its end stays;
    a leading BOS is kept. A too-long answer is cut at its end (and then has no EOS: it did not end there).
    """
    prompt = encode_prompt(tokenizer, sample.prompt, max_prompt_tokens)
    answer = list(tokenizer(sample.answer, add_special_tokens=False, verbose=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        answer.append(tokenizer.eos_token_id)
    if max_answer_tokens is not None:
        answer = answer[:max_answer_tokens]
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


class Collator:
    """Batches Samples (or `encode` outputs) into input_ids, attention_mask, labels and position_ids tensors.

    Left padding is the default on purpose: every answer then ends at the last position, so the trainer can run the
    LM head on the last N positions only (N = longest answer in the batch) instead of the whole sequence.
    position_ids = cumsum(attention_mask) - 1 (clamped at 0) give a left-padded row the same positions as the
    unpadded one; every Hugging Face decoder accepts them.
    """

    def __init__(self, tokenizer, padding_side: str = "left"):
        if padding_side not in ("left", "right"):
            raise DataError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.tokenizer = tokenizer
        self.padding_side = padding_side
        self.pad_id = pad_token_id(tokenizer)

    def __call__(self, batch: Sequence[Sample | dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [encode(self.tokenizer, x) if isinstance(x, Sample) else x for x in batch]
        input_ids, attention_mask = pad_rows([r["input_ids"] for r in rows], self.pad_id, side=self.padding_side)
        labels, _ = pad_rows([r["labels"] for r in rows], IGNORE_INDEX, side=self.padding_side)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "position_ids": position_ids}
