"""One worker thread owns the model: a bounded queue of requests, batched continuously, adapters swapped in place.

Adapters are loaded once (through `groundtune.methods.io.load_adapter`, which checks them against the base),
their trained tensors kept on the CPU, and detached again. To serve a batch, the worker detaches whatever is on
the model and attaches the batch's adapter through the method registry, copying its tensors in: the base model is
never reloaded, LoRA stays unmerged, and BitFit's biases are put back exactly by its own detach.

Mixed adapters. Rows of one batch may use different adapters of mixable methods (`Method.mixable` with
`attach_mixed`): LoRA through peft's mixed-batch inference (`adapter_names`), LLaMA-Adapter through attention
that adds each row's own prompts and gates, and the bare base; such a batch attaches all its rows' adapters at
once, and a newcomer with another adapter re-attaches the set between two steps (the KV cache stays). BitFit
and full fine-tuning change weights that every row shares, so they stay one adapter per batch; so do the prompt
methods (prompt tuning, DePT, ACCEPT) for now: their virtual tokens are per row, but rows with prompts of
different lengths would need per-row cache layouts that `RunningBatch` does not keep.

Continuous batching (the decoding itself is groundtune.serve.batch's `RunningBatch`, the engine's own loop over a
KV cache). Requests join the running batch at a decoding-step boundary: the newcomer is prefilled, then decodes
with the others; a row that is done leaves at once. A request joins only a batch on its own adapter, and only
while no older request for another adapter is waiting: that one's turn comes when the batch drains, so no adapter
starves. When nothing runs, the worker waits until `max_batch` requests of the oldest one's adapter are waiting
or the oldest one has waited `batch_wait_s` (the gather window; a lone request is delayed by at most that), so
that requests arriving together start together. On a CPU prefill is compute-bound, so batching does not amortize
it: newcomers are prefilled one by one, except that a prompt prefix they all share (grounded prompts on one
document) is prefilled once and its KV cache repeated over the rows (only for prefix-safe methods,
`Method.prefix_safe`: prompt methods put virtual tokens first). Each row has its own `max_tokens`, stop strings,
cancellation, streaming and seeded sampler; a greedy row takes the float32 argmax, as offline `generate` does,
so a greedy answer is exactly offline `generate`'s.
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

from groundtune.data.collate import pad_token_id
from groundtune.errors import GroundtuneError
from groundtune.serve.batch import Rows, RunningBatch


MIXED = "mixed"  # the key of a batch whose rows may each use another mixable adapter


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
    decoded: str = ""  # the text of tokens[:read_offset], decoded incrementally (serve/batch.py: Rows.text_of)
    prefix_offset: int = 0
    read_offset: int = 0
    finish_reason: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class Engine:
    """The model, its adapters and the worker thread that serves them."""

    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_queue: int = 64, batch_wait_s: float = 0.1,
                 base_name: str | None = None, min_shared_prefix: int = 16, max_adapter_parameters: int | None = None,
                 dtype=None, mix_adapters: bool = True):
        """dtype: "auto" (bfloat16 where the hardware has it, see `groundtune.models.serving_dtype`), a dtype or
        its name, or None to serve the model in the dtype it was loaded in; `dtype_note` says which and why.
        mix_adapters: False batches one adapter at a time even where methods can mix (a benchmark's baseline)."""
        if max_batch < 1 or max_queue < 1:
            raise GroundtuneError(f"max_batch and max_queue must be >= 1 (got {max_batch}, {max_queue})")
        from groundtune.methods import detach

        self.model = detach(model)
        if dtype is not None:
            from groundtune.models import serving_dtype

            dtype, why = serving_dtype(dtype, next(self.model.parameters()).device)
            self.model.to(dtype)
        else:
            why = "as loaded"
        self.dtype = next(self.model.parameters()).dtype
        self.dtype_note = f"{str(self.dtype).removeprefix('torch.')} ({why})"
        self.model.eval()
        self.tokenizer = tokenizer
        self.base_name = base_name or str(getattr(model, "name_or_path", "base"))
        self.max_batch, self.max_queue, self.batch_wait_s = max_batch, max_queue, batch_wait_s
        self.min_shared_prefix = min_shared_prefix
        self.mix_adapters = mix_adapters
        self.adapters: dict[str, AdapterState] = {}
        self.current: AdapterState | None = None
        self._mixed: dict[int, tuple[str, AdapterState]] | None = None  # a mixed batch's adapters: slot names
        self._mixed_methods: list[str] = []
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        # An adapter larger than the model it adapts is refused before anything is allocated (full fine-tuning,
        # the largest method, is exactly the model's size).
        self.max_adapter_parameters = max_adapter_parameters or sum(p.numel() for p in self.model.parameters())
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0, "rejected": 0, "batches": 0, "tokens": 0,
                      "swaps": 0, "max_batch_seen": 0, "batch_sizes": {}, "prefix_tokens_shared": 0, "joined": 0,
                      "steps": 0}
        self._rows = Rows(tokenizer, self.stats)
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
            raise GroundtuneError(f"adapter_config.json asks for {planned:,} trainable parameters; this server takes "
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
        if self._mixed is None and self.current is state:
            return self.model
        from groundtune.methods import attach, trainable_state_dict

        self._detach_all()
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

    def _mixes(self, adapter: AdapterState | None) -> bool:
        """Whether requests for `adapter` can share a batch with other adapters' (the base always can)."""
        if adapter is None or not self.mix_adapters:
            return self.mix_adapters
        from groundtune.methods import get

        method = get(adapter.method)
        return method.mixable

    def _use_mixed(self, adapters: list[AdapterState]):
        """Put every adapter of `adapters` on the model at once (a mixed batch). Returns the model."""
        if self._mixed is not None and {id(a) for a in adapters} <= set(self._mixed):
            return self.model
        from groundtune.methods import get

        self._detach_all()
        slots = {id(a): (f"a{i}", a) for i, a in enumerate(adapters)}
        groups: dict[str, list] = {}
        for name, a in slots.values():
            groups.setdefault(a.method, []).append((name, a.config, a.tensors))
        # peft-backed methods last: they wrap the model, and the others find its modules by their bare names
        order = sorted(groups, key=lambda m: (bool(get(m).peft_types), m))
        for method in order:
            self.model = get(method).attach_mixed(self.model, groups[method])
            self.stats["swaps"] += 1
        self._mixed, self._mixed_methods = slots, order
        self.model.eval()
        return self.model

    def _detach_all(self) -> None:
        from groundtune.methods import detach, get

        if self._mixed is not None:
            for method in reversed(self._mixed_methods):
                self.model = get(method).detach_mixed(self.model)
            self._mixed, self._mixed_methods = None, []
        self.model = detach(self.model)
        self.current = None

    def _row_kwargs(self, requests: list[GenRequest]) -> dict:
        """The forward arguments that give each row of a mixed batch its own adapter ({} otherwise)."""
        if self._mixed is None:
            return {}
        from groundtune.methods import get

        kwargs = {}
        for method in self._mixed_methods:
            names = [self._mixed[id(r.adapter)][0] if r.adapter is not None and r.adapter.method == method else None
                     for r in requests]
            kwargs.update(get(method).select_rows(self.model, names))
        return kwargs

    def _model_for(self, batch: RunningBatch, newcomers: list[GenRequest] = ()):
        if batch.key is not MIXED:
            return self._use(batch.key)
        needed = {id(r.adapter): r.adapter for r in [*batch.requests, *newcomers] if r.adapter is not None}
        if not needed and self._mixed is None:
            return self._use(None)
        return self._use_mixed(list(needed.values()))

    def _take_waiting(self, batch: RunningBatch | None) -> list[GenRequest]:
        """Waiting requests, oldest first, that can share `batch` (None: start one for the oldest request's
        adapter), up to the batch's free rows. Joining a running batch stops at the first request that cannot
        join, so an adapter that has to wait for the batch to drain is not passed over by younger requests (the
        batch then drains, and the next one starts with it)."""
        with self._cond:
            while self._pending and self._pending[0].cancelled.is_set():
                self._cancel_waiting(self._pending.popleft())
            if not self._pending:
                return []
            key = batch.key if batch is not None else self._key(self._pending[0].adapter)
            room = self.max_batch - (len(batch) if batch is not None else 0)
            taken, rest = [], deque()
            blocked = False
            while self._pending:
                r = self._pending.popleft()
                fits = self._key(r.adapter) is key
                if r.cancelled.is_set():
                    self._cancel_waiting(r)
                elif not blocked and fits and len(taken) < room:
                    taken.append(r)
                else:
                    # joining a running batch stops at the first request that cannot join; a new batch takes
                    # every waiting request of its kind (the oldest request's turn has come already)
                    blocked = blocked or (not fits and batch is not None)
                    rest.append(r)
            self._pending = rest
            return taken

    def _key(self, adapter: AdapterState | None):
        """What a batch is for: MIXED (any mixable adapter, row by row), or one adapter that cannot mix."""
        return MIXED if self._mixes(adapter) else adapter

    def _cancel_waiting(self, r: GenRequest) -> None:
        r.finish_reason = "cancelled"
        self.stats["cancelled"] += 1
        r.emit(("done", "cancelled"))

    def _loop(self) -> None:
        batch: RunningBatch | None = None
        while True:
            with self._cond:
                while not self._stop and not self._control and not batch \
                        and not (self._pending and self._running.is_set()):
                    self._cond.wait(timeout=0.5)
                if self._stop:
                    break
                control = self._control.popleft() if self._control else None
            if control is not None:  # between two decoding steps; the batch's adapter is put back below
                fn, future = control
                try:
                    future.set_result(fn())
                except BaseException as err:  # the caller gets it; the worker goes on
                    future.set_exception(err)
                continue
            try:
                batch = self._advance(batch)
            except Exception as err:  # one bad batch fails its requests; the server keeps serving
                if batch is not None:
                    batch.fail(err)
                batch = None
        if batch is not None:
            batch.fail(GroundtuneError("the server is shutting down"))

    def _advance(self, batch: RunningBatch | None) -> RunningBatch | None:
        """Admit newcomers at this step boundary, then run one decoding step. Returns the batch (None: empty)."""
        if not batch and self._running.is_set():
            self._gather()
            batch = None
        newcomers = self._take_waiting(batch) if self._running.is_set() else []
        if newcomers:
            if batch is None:
                batch = self._new_batch(self._key(newcomers[0].adapter))
            else:
                self.stats["joined"] += len(newcomers)
            model = self._model_for(batch, newcomers)
            batch.admit(model, self._groups(newcomers))
        if not batch:
            return None
        batch.drop_cancelled()
        if batch:
            model = self._model_for(batch)
            self.stats["steps"] += 1
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
            sizes = self.stats["batch_sizes"]
            sizes[len(batch)] = sizes.get(len(batch), 0) + 1
            batch.step(model)
        return batch if batch else None

    def _new_batch(self, key) -> RunningBatch:
        self.stats["batches"] += 1
        # a mixed batch holds no prompt method (none mixes yet), so no row has virtual tokens
        virtual = key.virtual_tokens if key is not MIXED and key is not None else 0
        batch = RunningBatch(self._rows, pad_token_id(self.tokenizer), self.model.config, virtual=virtual,
                             model_kwargs=self._row_kwargs)
        batch.key = key
        return batch

    def _groups(self, newcomers: list[GenRequest]) -> list[tuple[list[GenRequest], int]]:
        """How newcomers are prefilled: together, when they share a prompt prefix worth prefilling once; else one
        by one (on a CPU prefill is compute-bound, and a padded batch would compute its padding too)."""
        shared = self._shared_prefix(newcomers)
        if shared:
            self.stats["prefix_tokens_shared"] += shared * (len(newcomers) - 1)
            return [(newcomers, shared)]
        return [([r], 0) for r in newcomers]

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
        if len(batch) < 2 or self.min_shared_prefix <= 0 or any(r.adapter is not batch[0].adapter for r in batch):
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
