"""The rows the engine decodes together: their KV cache, attention mask and per-row streaming, stopping and sampling.

A `RunningBatch` is continuous: `admit` prefills newcomers and merges them into the rows already decoding, at a
decoding-step boundary; `step` runs one decoding step for every row; a row that finishes (end of text, its own
`max_tokens`, a stop string, cancellation) leaves the batch at once, its cache rows dropped.

Layout. Every row's cache and mask are right-aligned: a row that is shorter than the batch is left-padded, its
padded columns masked out. Positions are counted over each row's own mask (cumsum - 1), so a row sees exactly
what it sees alone, and its greedy answer is offline `groundtune.generate`'s. A prompt method's virtual tokens
are columns of the cache that the mask does not have (the method adds them: see methods/_prompt_embedding.py);
all rows of a batch carry the same number of them. Merging caches of different lengths goes through the public
`DynamicCache` API only: the layers' key/value tensors are read, left-padded with zeros to a common width, and a
new cache is built from them (`DynamicCache(ddp_cache_data=..., config=...)`), which also gives sliding-window
layers their true length.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

from groundtune.data.collate import pad_rows
from groundtune.kvcache import cache_from, cache_kwargs


def _forward_takes(model, name: str) -> bool:
    # a wrapper such as peft's PeftModel passes **kwargs on: the wrapped model's signature decides
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _class_forward_takes(type(base), name)


@functools.lru_cache(maxsize=None)
def _class_forward_takes(cls: type, name: str) -> bool:
    # asked at every decoding step: a class's signature is read once
    return name in inspect.signature(cls.forward).parameters


def _right_aligned(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [B, H, s, D] as [B, H, width, D]: its last `width` columns, or zeros before it."""
    s = x.shape[-2]
    if s >= width:
        return x[..., s - width:, :]
    return torch.cat([x.new_zeros(*x.shape[:-2], width - s, x.shape[-1]), x], dim=-2)


def merge_caches(parts: list, width: int, config):
    """One DynamicCache of `width` columns holding the rows of every part in order, each right-aligned."""
    from transformers import DynamicCache

    data = []
    for i in range(len(parts[0].layers)):
        layers = [p.layers[i] for p in parts]
        data.append((torch.cat([_right_aligned(layer.keys, width) for layer in layers]),
                     torch.cat([_right_aligned(layer.values, width) for layer in layers])))
    return DynamicCache(ddp_cache_data=data, config=config)


class Rows:
    """Per-row bookkeeping: each row's sampler, its text streamed so far, and its stopping rules."""

    def __init__(self, tokenizer, stats: dict):
        self.tokenizer = tokenizer
        self.stats = stats
        eos = tokenizer.eos_token_id
        self.eos = {eos} if eos is not None else set()

    @staticmethod
    def generator(request) -> torch.Generator | None:
        if request.temperature <= 0:
            return None
        g = torch.Generator()
        g.manual_seed(request.seed if request.seed is not None else int(torch.randint(0, 2**62, ()).item()))
        return g

    @staticmethod
    def choose(logits: torch.Tensor, requests: list, generators: list) -> list[int]:
        """The next token of each row from its last logits [B, vocab]: argmax (in float32, as `generate`'s greedy
        search), or a sample at the row's temperature / top-p with the row's own seeded generator."""
        scores = logits.float()
        tokens = scores.argmax(-1).tolist()
        for row, (r, g) in enumerate(zip(requests, generators)):
            if g is None:
                continue
            # In float64 (a temperature such as 1e-300 is 0 in float32), the top logit shifted to 0 first: a tiny
            # temperature then sends the others to -inf rather than the top to inf (inf - inf is nan in the softmax).
            x = scores[row].double()
            x = (x - x.max()) / r.temperature
            if r.top_p < 1.0:
                sorted_x, order = torch.sort(x, descending=True)
                p = torch.softmax(sorted_x, dim=-1)
                x[order[p.cumsum(-1) - p >= r.top_p]] = float("-inf")  # keep the smallest set reaching top_p
            tokens[row] = int(torch.multinomial(torch.softmax(x, dim=-1), 1, generator=g))
        return tokens

    def take(self, r, token: int) -> bool:
        """Give row `r` its next token: stream its text, apply its stopping rules. True when it is done."""
        if r.cancelled.is_set():
            self.finish(r, "cancelled")
        elif token in self.eos:
            self.flush(r, final=True)
            self.finish(r, "stop")
        else:
            r.tokens.append(token)
            self.stats["tokens"] += 1
            if not self.flush(r, final=len(r.tokens) >= r.max_tokens):
                self.finish(r, "stop")  # a stop string
            elif len(r.tokens) >= r.max_tokens:
                self.finish(r, "length")
        return r.done

    def text_of(self, r, final: bool) -> str:
        """The row's text so far, decoding only its newest tokens: decoding the whole list at every step costs
        O(n) per token, O(n²) per answer. As text-generation-inference and vLLM do, the tokens from
        `prefix_offset` on are decoded with and without the newest ones, and the difference is appended once it
        no longer ends in an incomplete character; the few tokens before keep a SentencePiece word's leading
        space right. The final text is one full decode, so it is exactly `generate`'s."""
        if final:
            return self.tokenizer.decode(r.tokens, skip_special_tokens=True).lstrip()
        before = self.tokenizer.decode(r.tokens[r.prefix_offset:r.read_offset], skip_special_tokens=True)
        after = self.tokenizer.decode(r.tokens[r.prefix_offset:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            r.decoded += after[len(before):]
            r.prefix_offset, r.read_offset = r.read_offset, len(r.tokens)
        return r.decoded.lstrip()

    def flush(self, r, final: bool) -> bool:
        """Emit the row's text that is safe to show; False when a stop string ended it."""
        text = self.text_of(r, final)
        for s in r.stop:
            at = text.find(s, max(0, len(r.text) - len(s)))
            if at >= 0:
                self._emit_upto(r, text[:at])
                return False
        if final:
            self._emit_upto(r, text)
            return True
        hold = max((len(s) - 1 for s in r.stop), default=0)
        safe = text[:len(text) - hold] if hold else text
        while safe.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its other tokens
            safe = safe[:-1]
        self._emit_upto(r, safe)
        return True

    @staticmethod
    def _emit_upto(r, text: str) -> None:
        if len(text) > len(r.text) and text.startswith(r.text):
            delta, r.text = text[len(r.text):], text
            r.emit(("delta", delta))

    def finish(self, r, reason: str) -> None:
        r.finish_reason = reason
        self.stats["cancelled" if reason == "cancelled" else "completed"] += 1
        r.emit(("done", reason))

    def fail(self, requests: list, err: Exception) -> None:
        for r in requests:
            if not r.done:
                r.finish_reason = "error"
                self.stats["failed"] += 1
                r.emit(("error", f"generation failed: {type(err).__name__}: {err}"))


class RunningBatch:
    """Rows decoding together on one model state. `virtual` is the cache columns a prompt method adds per row."""

    def __init__(self, rows: Rows, pad_id: int, config, virtual: int = 0, model_kwargs: Callable | None = None):
        self.rows, self.pad_id, self.config, self.virtual = rows, pad_id, config, virtual
        # per-row forward arguments (a mixed batch's adapter names), given the batch's requests
        self.model_kwargs = model_kwargs or (lambda requests: {})
        self.requests: list = []
        self.generators: list = []
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # [rows, text columns]
        self.next_ids = torch.zeros(0, dtype=torch.long)  # the token each row feeds next

    def __len__(self) -> int:
        return len(self.requests)

    # ------------------------------------------------------------------------------------------- prefill

    def _forward(self, model, requests, ids, mask, cache):
        device = next(model.parameters()).device
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        extra = {"logits_to_keep": 1} if _forward_takes(model, "logits_to_keep") else {}
        if cache is not None:
            extra.update(cache_kwargs(model, cache))
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    use_cache=True, **extra, **self.model_kwargs(requests))
        return out.logits[:, -1], cache_from(out)

    def prefill(self, model, requests: list, shared: int = 0):
        """(last logits, cache, mask) of `requests` prefilled together. With `shared` > 0 every row starts with
        the same `shared` tokens: they are prefilled once and their cache repeated over the rows, whose own rests
        follow left-padded ([prefix | padding | rest]; positions come from the mask, so padding in the middle
        changes nothing a row sees)."""
        cache = None
        if shared:
            prefix = torch.tensor([requests[0].prompt_ids[:shared]], dtype=torch.long)
            _, cache = self._forward(model, requests[:1], prefix, torch.ones_like(prefix), None)
            cache.batch_repeat_interleave(len(requests))
        rest, rest_mask = pad_rows([r.prompt_ids[shared:] for r in requests], self.pad_id)
        mask = torch.cat([torch.ones((len(requests), shared), dtype=torch.long), rest_mask], dim=1)
        logits, cache = self._forward(model, requests, rest, mask, cache)
        return logits, cache, mask

    def admit(self, model, groups: list[tuple[list, int]]) -> None:
        """Prefill each group of newcomers ([requests], shared prefix length), give them their first token, and
        merge those still going into the batch. A group that fails fails only its own requests."""
        parts = []
        for requests, shared in groups:
            try:
                logits, cache, mask = self.prefill(model, requests, shared)
            except Exception as err:  # noqa: BLE001 - the client gets the error, the batch goes on
                self.rows.fail(requests, err)
                continue
            generators = [self.rows.generator(r) for r in requests]
            tokens = self.rows.choose(logits, requests, generators)
            going = [i for i, r in enumerate(requests) if not self.rows.take(r, tokens[i])]
            if going:
                keep = torch.tensor(going)
                if len(going) < len(requests):
                    cache.batch_select_indices(keep)
                parts.append(([requests[i] for i in going], [generators[i] for i in going], cache, mask[keep],
                              torch.tensor([tokens[i] for i in going], dtype=torch.long)))
        if parts:
            self._merge(parts)

    def _merge(self, parts) -> None:
        if self.requests:
            parts = [(self.requests, self.generators, self.cache, self.mask, self.next_ids), *parts]
        width = max(p[3].shape[1] for p in parts)
        self.cache = parts[0][2] if len(parts) == 1 else \
            merge_caches([p[2] for p in parts], width + self.virtual, self.config)
        self.mask = torch.cat([torch.cat([p[3].new_zeros(p[3].shape[0], width - p[3].shape[1]), p[3]], dim=1)
                               for p in parts])
        self.requests = [r for p in parts for r in p[0]]
        self.generators = [g for p in parts for g in p[1]]
        self.next_ids = torch.cat([p[4] for p in parts])

    # ------------------------------------------------------------------------------------------- decode

    def step(self, model) -> None:
        """One decoding step for every row; finished rows leave."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self), 1)], dim=1)
        logits, self.cache = self._forward(model, self.requests, self.next_ids[:, None], self.mask, self.cache)
        tokens = self.rows.choose(logits, self.requests, self.generators)
        going = [i for i, r in enumerate(self.requests) if not self.rows.take(r, tokens[i])]
        self.next_ids = torch.tensor(tokens, dtype=torch.long)
        self.keep(going)

    def drop_cancelled(self) -> None:
        """Rows whose client cancelled leave before the next step is spent on them."""
        going = []
        for i, r in enumerate(self.requests):
            if r.cancelled.is_set():
                self.rows.finish(r, "cancelled")
            else:
                going.append(i)
        self.keep(going)

    def keep(self, going: list[int]) -> None:
        if len(going) == len(self.requests):
            return
        if not going:
            self.requests, self.generators, self.cache = [], [], None
            self.mask, self.next_ids = self.mask[:0], self.next_ids[:0]
            return
        keep = torch.tensor(going)
        self.cache.batch_select_indices(keep)
        self.requests = [self.requests[i] for i in going]
        self.generators = [self.generators[i] for i in going]
        self.mask, self.next_ids = self.mask[keep], self.next_ids[keep]
        lead = int((self.mask.cumsum(-1) == 0).sum(-1).min())
        if lead >= 32:  # columns no row attends to any more (a long row left): stop computing over them
            width = self.mask.shape[1] - lead
            self.cache = merge_caches([self.cache], width + self.virtual, self.config)
            self.mask = self.mask[:, lead:]

    def fail(self, err: Exception) -> None:
        self.rows.fail(self.requests, err)
        self.keep([])
