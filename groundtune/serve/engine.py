"""One worker thread owns the model: a bounded queue of requests, batched per adapter, adapters swapped in place.

Adapters are loaded once (through `groundtune.methods.io.load_adapter`, which checks them against the base),
their trained tensors kept on the CPU, and detached again. To serve a batch, the worker detaches whatever is on
the model and attaches the batch's adapter through the method registry, copying its tensors in: the base model is
never reloaded, LoRA stays unmerged, and BitFit's biases are put back exactly by its own detach.

Waiting requests are grouped by adapter, oldest first; a batch takes up to `max_batch` requests of one adapter
and runs them through `model.generate` together (left-padded, as offline `groundtune.generate` does). Before a
batch starts, the worker waits until `max_batch` requests of the oldest one's adapter are waiting or the oldest
one has waited `batch_wait_s` (the gather window; a lone request is delayed by at most that). On a CPU a batch's
time is mostly prefill, which batching does not amortize, so a prompt prefix shared by every row (grounded
prompts on one document) is prefilled once and its KV cache repeated over the rows; the rows' own rests follow
it, left-padded (base, LoRA and BitFit only: prompt methods put virtual tokens first). A stopping
criterion sees each new token: it streams the row's text to its request, applies the row's own `max_tokens`,
stop strings and cancellation, and marks the row done; a logits processor samples the rows that asked for a
temperature with their own seeded generator (greedy rows are left to generate's argmax, so a greedy answer is
exactly offline `generate`'s).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from groundtune.data.collate import pad_rows, pad_token_id
from groundtune.errors import GroundtuneError


def _takes(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


class QueueFull(GroundtuneError):
    """The request queue is at its bound; the client should retry later."""


class AdapterExists(GroundtuneError):
    """An adapter of that name is served already."""


@dataclass
class AdapterState:
    """An adapter as the engine keeps it: its config, its trained tensors on the CPU, its prompt format."""

    name: str
    config: Any
    tensors: dict[str, torch.Tensor]
    prompt_format: dict
    source: str = ""  # where it came from, for /v1/models (never a path a request can give)

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def virtual_tokens(self) -> int:
        from groundtune.methods import virtual_tokens

        return virtual_tokens(self.config)


_ids = itertools.count(1)


@dataclass
class GenRequest:
    """One generation. `emit(event)` is called from the worker thread with ("delta", text), then one of
    ("done", finish_reason) or ("error", message); it must not block."""

    prompt_ids: list[int]
    adapter: AdapterState | None
    max_tokens: int
    emit: Callable[[tuple], None]
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    id: int = field(default_factory=lambda: next(_ids))
    submitted: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # what has been emitted so far
    finish_reason: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class _Rows:
    """Per-row bookkeeping of one batch: the stopping criterion and the sampler of `model.generate`."""

    def __init__(self, requests: list[GenRequest], tokenizer, stats: dict):
        self.requests = requests
        self.tokenizer = tokenizer
        self.stats = stats
        eos = tokenizer.eos_token_id
        self.eos = {eos} if eos is not None else set()
        self.generators = []
        for r in requests:
            g = None
            if r.temperature > 0:
                g = torch.Generator()
                g.manual_seed(r.seed if r.seed is not None else int(torch.randint(0, 2**62, ()).item()))
            self.generators.append(g)

    # ---- logits processor: per-row temperature / top-p sampling with the row's own generator
    def sample(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, (r, g) in enumerate(zip(self.requests, self.generators)):
            if g is None or r.done:
                continue
            # In float64 (a temperature such as 1e-300 is 0 in float32), the top logit shifted to 0 first: a tiny
            # temperature then sends the others to -inf rather than the top to inf (inf - inf is nan in the softmax).
            logits = scores[row].double()
            logits = (logits - logits.max()) / r.temperature
            if r.top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True)
                cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
                drop = cum - torch.softmax(sorted_logits, dim=-1) >= r.top_p  # keep the smallest set reaching top_p
                logits[order[drop]] = float("-inf")
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        return scores

    # ---- stopping criterion: stream each row's new text, stop rows that are finished
    def step(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, -1].tolist()
        flags = []
        for row, r in enumerate(self.requests):
            if not r.done:
                if r.cancelled.is_set():
                    self._finish(r, "cancelled")
                elif new[row] in self.eos:
                    self._flush(r, final=True)
                    self._finish(r, "stop")
                else:
                    r.tokens.append(new[row])
                    self.stats["tokens"] += 1
                    if not self._flush(r, final=len(r.tokens) >= r.max_tokens):
                        self._finish(r, "stop")  # a stop string
                    elif len(r.tokens) >= r.max_tokens:
                        self._finish(r, "length")
            flags.append(r.done)
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

    def _flush(self, r: GenRequest, final: bool) -> bool:
        """Emit the row's text that is safe to show; False when a stop string ended it."""
        text = self.tokenizer.decode(r.tokens, skip_special_tokens=True).lstrip()
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
    def _emit_upto(r: GenRequest, text: str) -> None:
        if len(text) > len(r.text) and text.startswith(r.text):
            delta, r.text = text[len(r.text):], text
            r.emit(("delta", delta))

    def _finish(self, r: GenRequest, reason: str) -> None:
        r.finish_reason = reason
        self.stats["cancelled" if reason == "cancelled" else "completed"] += 1
        r.emit(("done", reason))


class _Stop(StoppingCriteria):
    def __init__(self, rows: _Rows):
        self.rows = rows

    def __call__(self, input_ids, scores, **kwargs):
        return self.rows.step(input_ids, scores, **kwargs)


class _Sample(LogitsProcessor):
    def __init__(self, rows: _Rows):
        self.rows = rows

    def __call__(self, input_ids, scores):
        return self.rows.sample(input_ids, scores)


class Engine:
    """The model, its adapters and the worker thread that serves them."""

    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_queue: int = 64, batch_wait_s: float = 0.1,
                 base_name: str | None = None, min_shared_prefix: int = 16, max_adapter_parameters: int | None = None):
        if max_batch < 1 or max_queue < 1:
            raise GroundtuneError(f"max_batch and max_queue must be >= 1 (got {max_batch}, {max_queue})")
        from groundtune.methods import detach

        self.model = detach(model)
        self.model.eval()
        self.tokenizer = tokenizer
        self.base_name = base_name or str(getattr(model, "name_or_path", "base"))
        self.max_batch, self.max_queue, self.batch_wait_s = max_batch, max_queue, batch_wait_s
        self.min_shared_prefix = min_shared_prefix
        self.adapters: dict[str, AdapterState] = {}
        self.current: AdapterState | None = None
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        # An adapter larger than the model it adapts is refused before anything is allocated (full fine-tuning,
        # the largest method, is exactly the model's size).
        self.max_adapter_parameters = max_adapter_parameters or sum(p.numel() for p in self.model.parameters())
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0, "rejected": 0, "batches": 0, "tokens": 0,
                      "swaps": 0, "max_batch_seen": 0, "batch_sizes": {}, "prefix_tokens_shared": 0}
        self._pending: deque[GenRequest] = deque()
        self._control: deque[tuple[Callable, Future]] = deque()
        self._cond = threading.Condition()
        self._running = threading.Event()  # cleared by pause() (tests): the worker takes nothing new
        self._running.set()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="groundtune-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------- public

    def submit(self, request: GenRequest) -> None:
        with self._cond:
            if len(self._pending) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"the server is busy: {len(self._pending)} requests are waiting (the bound is "
                                f"{self.max_queue}); retry in a moment")
            self._pending.append(request)
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._pending)

    def call(self, fn: Callable, *args) -> Future:
        """Run fn(*args) on the worker thread between batches (the only thread that touches the model)."""
        future: Future = Future()
        with self._cond:
            self._control.append((lambda: fn(*args), future))
            self._cond.notify_all()
        return future

    def add_adapter(self, name: str, folder, *, source: str = "") -> Future:
        """Load an adapter folder (checked against the base) and keep it under `name`; a Future of its state."""
        return self.call(self._add_adapter, name, folder, source)

    def remove_adapter(self, name: str) -> AdapterState:
        """Forget an adapter: requests already queued for it still finish with it."""
        with self._cond:
            if name not in self.adapters:
                raise KeyError(name)
            return self.adapters.pop(name)

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self._stop = True
        self.resume()
        self._thread.join(timeout=30)
        self.model = self._use(None) if not self._thread.is_alive() else self.model

    # ------------------------------------------------------------------------------------------ worker

    def _add_adapter(self, name: str, folder, source: str) -> AdapterState:
        from groundtune.data.prompt_format import read as read_prompt_format
        from groundtune.methods import attach, attached_config, detach, trainable_state_dict
        from groundtune.methods.io import check_weights, load_adapter, planned_parameters

        if name in self.adapters:
            raise AdapterExists(f"an adapter called {name!r} is served already; remove it first")
        fmt = read_prompt_format(folder)
        check_weights(folder)
        self._use(None)  # counted on the bare base: its shapes decide what attaching would allocate
        planned = planned_parameters(self.model, folder)
        if planned is not None and planned > self.max_adapter_parameters:
            raise ValueError(f"adapter_config.json asks for {planned:,} trainable parameters; this server takes "
                             f"adapters of at most {self.max_adapter_parameters:,} (the base model's own size)")
        model = load_adapter(self.model, folder)
        config = attached_config(model)
        tensors = {n: p.detach().to("cpu").clone() for n, p in trainable_state_dict(model).items()}
        self.model = detach(model)
        # Swapping re-attaches through the registry: the same parameters must come out of a plain attach.
        trial = attach(self.model, config)
        names = set(trainable_state_dict(trial))
        self.model = detach(trial)
        if names != set(tensors):
            raise GroundtuneError(f"adapter {name!r} cannot be swapped in: attaching its config gives other "
                                  f"parameters than loading it ({sorted(names ^ set(tensors))[:3]})")
        state = AdapterState(name, config, tensors, fmt, source)
        with self._cond:
            self.adapters[name] = state
        return state

    def _use(self, state: AdapterState | None):
        """Put `state`'s adapter on the model (None: the bare base). Returns the model."""
        if self.current is state:
            return self.model
        from groundtune.methods import attach, detach, trainable_state_dict

        self.model = detach(self.model)
        self.current = None
        if state is not None:
            model = attach(self.model, state.config)
            params = trainable_state_dict(model)
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(state.tensors[n])
                    p.requires_grad_(False)
            self.model = model
            self.current = state
            self.stats["swaps"] += 1
        self.model.eval()
        return self.model

    def _next_batch(self) -> list[GenRequest]:
        """The oldest waiting request and up to max_batch - 1 more for the same adapter (FIFO)."""
        with self._cond:
            while self._pending and self._pending[0].cancelled.is_set():
                r = self._pending.popleft()
                r.finish_reason = "cancelled"
                self.stats["cancelled"] += 1
                r.emit(("done", "cancelled"))
            if not self._pending:
                return []
            adapter = self._pending[0].adapter
            batch, rest = [], deque()
            while self._pending:
                r = self._pending.popleft()
                if r.adapter is adapter and len(batch) < self.max_batch and not r.cancelled.is_set():
                    batch.append(r)
                elif r.cancelled.is_set():
                    r.finish_reason = "cancelled"
                    self.stats["cancelled"] += 1
                    r.emit(("done", "cancelled"))
                else:
                    rest.append(r)
            self._pending = rest
            return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._control and not (self._pending and self._running.is_set()):
                    self._cond.wait(timeout=0.5)
                if self._stop:
                    break
                control = self._control.popleft() if self._control else None
            if control is not None:
                fn, future = control
                try:
                    future.set_result(fn())
                except BaseException as err:  # the caller gets it; the worker goes on
                    future.set_exception(err)
                continue
            self._gather()
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _gather(self) -> None:
        """The gather window: wait until the oldest waiting request is `batch_wait_s` old or its adapter has
        `max_batch` requests waiting, so that requests arriving together share a batch. A lone request is
        delayed by at most the window (and not at all once it has waited that long already)."""
        if self.batch_wait_s <= 0:
            return
        with self._cond:
            while not self._stop and self._pending and not self._control:
                head = self._pending[0]
                same = sum(1 for r in self._pending if r.adapter is head.adapter and not r.cancelled.is_set())
                left = head.submitted + self.batch_wait_s - time.perf_counter()
                if same >= self.max_batch or left <= 0 or head.cancelled.is_set():
                    return
                self._cond.wait(timeout=left)

    def _shared_prefix(self, batch: list[GenRequest]) -> int:
        """How many leading prompt tokens every row of the batch shares, to prefill once (0: none worth it).
        Only for the base, LoRA and BitFit, whose forward over a prefix does not depend on what follows; each
        row keeps at least one token of its own, so generation starts from a prefill step."""
        if len(batch) < 2 or self.min_shared_prefix <= 0:
            return 0
        from groundtune.methods import get

        if batch[0].adapter is not None and not get(batch[0].adapter.method).prefix_safe:
            return 0
        first, n = batch[0].prompt_ids, min(len(r.prompt_ids) for r in batch) - 1
        for r in batch[1:]:
            other = r.prompt_ids
            i = 0
            while i < n and other[i] == first[i]:
                i += 1
            n = i
        return n if n >= self.min_shared_prefix else 0

    def _run(self, batch: list[GenRequest]) -> None:
        self.stats["batches"] += 1
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
        sizes = self.stats["batch_sizes"]
        sizes[len(batch)] = sizes.get(len(batch), 0) + 1
        try:
            model = self._use(batch[0].adapter)
            tok = self.tokenizer
            pad = pad_token_id(tok)
            device = next(model.parameters()).device
            shared = self._shared_prefix(batch)
            # Rows are [shared prefix | left padding | the row's own rest]: the prefix is prefilled once and its
            # KV cache repeated over the rows; positions come from the attention mask, so they are the same as
            # without the padding (a padded position is never attended to).
            rest_ids, rest_mask = pad_rows([r.prompt_ids[shared:] for r in batch], pad)
            prefix = torch.tensor([batch[0].prompt_ids[:shared]] * len(batch), dtype=torch.long).view(len(batch), shared)
            ids = torch.cat([prefix, rest_ids], dim=1)
            mask = torch.cat([torch.ones_like(prefix), rest_mask], dim=1)
            rows = _Rows(batch, tok, self.stats)
            extra = {}
            with torch.no_grad():
                if shared:
                    keep = {"logits_to_keep": 1} if _takes(model, "logits_to_keep") else {}
                    out = model(input_ids=ids[:1, :shared].to(device), use_cache=True, **keep)
                    cache = out.cache
                    cache.batch_repeat_interleave(len(batch))
                    extra["cache"] = cache
                    self.stats["prefix_tokens_shared"] += shared * (len(batch) - 1)
                model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                               max_new_tokens=max(r.max_tokens for r in batch), do_sample=False, num_beams=1,
                               pad_token_id=pad, eos_token_id=tok.eos_token_id,
                               stopping_criteria=StoppingCriteriaList([_Stop(rows)]),
                               logits_processor=LogitsProcessorList([_Sample(rows)]), **extra)
            for r in batch:  # generate stopped at max_new_tokens or the model's own limit
                if not r.done:
                    rows._flush(r, final=True)
                    rows._finish(r, "length")
        except Exception as err:  # one bad batch fails its requests; the server keeps serving
            for r in batch:
                if not r.done:
                    r.finish_reason = "error"
                    self.stats["failed"] += 1
                    r.emit(("error", f"generation failed: {type(err).__name__}: {err}"))
