"""The types every data source and everything downstream share: a Sample, the DropReport that counts what a
reader left out, and encode_prompt, the one way a bare prompt becomes token ids (for training and generation
alike, so the model sees the same ids at both)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One training / evaluation example, shared by every data source and by everything downstream."""

    id: str
    prompt: str
    answer: str
    doc_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DropReport:
    """How many samples were kept, and how many were dropped for which reason (with a few example ids)."""

    source: str = ""
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def keep(self, n: int = 1) -> None:
        self.kept += n

    def drop(self, reason: str, where: str = "") -> None:
        self.dropped[reason] += 1
        if where and len(shown := self.examples.setdefault(reason, [])) < self.max_examples:
            shown.append(where)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kept": self.kept, "dropped": dict(self.dropped)}

    def __str__(self) -> str:
        total = self.kept + self.total_dropped
        head = f"{self.source + ': ' if self.source else ''}kept {self.kept} of {total}"
        if not self.dropped:
            return head + ", none dropped"
        lines = [head + f", dropped {self.total_dropped}:"]
        width = max(map(len, self.dropped))
        for reason, n in self.dropped.most_common():
            eg = self.examples.get(reason)
            lines.append(f"  {reason:<{width}}  {n:>6}" + (f"   e.g. {', '.join(eg)}" if eg else ""))
        return "\n".join(lines)


def encode_prompt(tokenizer, prompt: str, max_prompt_tokens: int | None = None) -> list[int]:
    """Token ids of a prompt alone: special tokens as the tokenizer adds them, no trailing EOS.

    A too-long prompt loses tokens from its left (the start of the document) so the question at its end stays;
    a leading BOS is kept.
    """
    ids = list(tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    # A chat template already writes the BOS text; the tokenizer would add a second one.
    if bos is not None and ids[:2] == [bos, bos]:
        ids = ids[1:]
    # Tokenizers set to add EOS (some Llama configs) must not end the prompt with it.
    if eos is not None and eos != bos and len(ids) > 1 and ids[-1] == eos and not prompt.endswith(tokenizer.eos_token):
        ids = ids[:-1]
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
        keep_bos = bos is not None and ids[0] == bos and max_prompt_tokens > 1
        tail = max_prompt_tokens - int(keep_bos)
        ids = (ids[:1] if keep_bos else []) + ids[len(ids) - tail:]
    return ids
