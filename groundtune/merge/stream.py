"""Stream computed tensors into safetensors shards in bounded memory: the I/O side of every merge method.

A merge method says, for each output tensor, what it is (`TensorJob`): either a tensor copied byte for byte from
a checkpoint, or a computation that fills one chunk of the flattened result at a time. `write_checkpoint` runs the
jobs chunk by chunk with buffers allocated once, checks every chunk for inf / nan, and hands the bytes to a writer
thread that appends them to the shard files (writer.py) while the next chunk is read and computed. Peak memory is
a few chunk buffers whatever the model size. Chat Vector (chat_vector.py) is one such method; as in mergekit,
the arithmetic knows nothing of files and the writer nothing of the arithmetic.
"""

from __future__ import annotations

import functools
import math
import queue
import shutil
import threading
from pathlib import Path
from typing import Iterable

import torch

from groundtune.fileio import guard_output
from groundtune.merge.checkpoint import DTYPES, Checkpoint, MergeError, TensorEntry
from groundtune.merge.writer import ShardWriter, TensorSpec, parse_size, plan_shards, shard_names, write_index

CHUNK_ELEMENTS = 1 << 20  # per read: 4 MB float32 buffers stay in cache and keep memory flat


class TensorJob:
    """One output tensor. A subclass sets `spec` and either returns a source from `unchanged_source` (the bytes go
    straight through) or fills chunks in `compute`."""

    spec: TensorSpec

    def unchanged_source(self) -> tuple[Checkpoint, TensorEntry] | None:
        return None

    def compute(self, stream: "Stream", start: int, stop: int, out: torch.Tensor) -> None:
        """Elements [start, stop) of the flattened result into `out` (float32, or float64 for a float64 tensor);
        scratch space comes from `stream.buffer`, inputs from `stream.load`."""
        raise NotImplementedError


class WriteThread:
    """Runs file writes on one thread, so the disk works while the next chunk is read and computed."""

    def __init__(self, depth: int):
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._loop, name="groundtune-merge-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            try:
                if task is None:
                    return
                if self._error is None and not self._cancelled:
                    task()
            except BaseException as err:  # handed to the main thread at its next submit or drain
                self._error = err
            finally:
                self._queue.task_done()

    def submit(self, task) -> None:
        self._raise()
        self._queue.put(task)

    def drain(self) -> None:
        self._queue.join()
        self._raise()

    def stop(self, cancel: bool = False) -> None:
        """End the thread; with `cancel`, writes still queued are dropped (the output is being discarded)."""
        self._cancelled |= cancel
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class Stream:
    """Runs jobs chunk by chunk with buffers allocated once, so memory stays flat across tensors.

    Results go to a ring of output buffers that the writer thread drains; the ring has two more slots than the
    queue holds, so a slot is never refilled while its write is pending.
    """

    def __init__(self, chunk_elements: int, total_bytes: int, progress: bool, desc: str, depth: int = 8):
        from tqdm.auto import tqdm

        self.chunk = chunk_elements
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._zeros: dict[torch.dtype, torch.Tensor] = {}
        self._ring = [torch.empty(chunk_elements * 8, dtype=torch.uint8) for _ in range(depth + 2)]
        self._next = 0
        self.writes = WriteThread(depth)
        self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=not progress)

    def buffer(self, role: str, dtype: torch.dtype, n: int) -> torch.Tensor:
        """A scratch buffer of `n` elements, one per (role, dtype), reused for every chunk."""
        buf = self._buffers.get((role, dtype))
        if buf is None:
            buf = self._buffers[(role, dtype)] = torch.empty(self.chunk, dtype=dtype)
        return buf[:n]

    def _slot(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        slot = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        return slot[: n * dtype.itemsize].view(dtype)

    def _emit(self, writer: ShardWriter, out: torch.Tensor) -> None:
        self.writes.submit(functools.partial(writer.write, out))
        self.bar.update(out.numel() * out.element_size())

    def load(self, ckpt: Checkpoint, entry: TensorEntry, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Elements [start, stop) into `out`, converting from the stored dtype when they differ."""
        if entry.torch_dtype == out.dtype:
            return ckpt.read_into(entry, start, stop, out)
        return out.copy_(ckpt.read_into(entry, start, stop, self.buffer("raw", entry.torch_dtype, stop - start)))

    def run(self, job: TensorJob, writer: ShardWriter) -> None:
        spec, numel = job.spec, math.prod(job.spec.shape)
        stored = DTYPES[spec.dtype]
        compute = torch.float64 if stored == torch.float64 else torch.float32
        source = job.unchanged_source()
        for start in range(0, numel, self.chunk):
            stop = min(numel, start + self.chunk)
            n = stop - start
            if source is not None:  # kept unchanged: bytes straight through
                ckpt, entry = source
                self._emit(writer, ckpt.read_into(entry, start, stop, self._slot(stored, n)))
                continue
            acc = self._slot(stored, n) if stored == compute else self.buffer("acc", compute, n)
            job.compute(self, start, stop, acc)
            result = acc if stored == compute else self._slot(stored, n).copy_(acc)
            bad = self.non_finite(result)
            if bad:
                raise MergeError(f"{spec.name}: the result holds {bad} inf or nan value(s) in elements {start}-{stop} "
                                 f"(in {spec.dtype}), so nothing was written; a ratio is too large, or an input holds "
                                 "non-finite values")
            self._emit(writer, result)

    def non_finite(self, x: torch.Tensor) -> int:
        """How many elements of the 1-D chunk `x` are inf or nan. isfinite().all() costs ten times the merge's own
        arithmetic, so a cheap exact test comes first: x · 0 is nan exactly when an element is inf or nan; a
        16-bit chunk's float32 sum can only overflow for bfloat16 values near its limit, so a non-finite sum is
        confirmed element by element."""
        if x.dtype in (torch.float32, torch.float64):
            zeros = self._zeros.get(x.dtype)
            if zeros is None:
                zeros = self._zeros[x.dtype] = torch.zeros(self.chunk, dtype=x.dtype)
            quick = torch.dot(x, zeros[: x.numel()])
        else:
            quick = x.sum(dtype=torch.float32)
        if bool(torch.isfinite(quick)):
            return 0
        return int((~torch.isfinite(x)).sum())


def write_checkpoint(folder: Path, prefix: str, jobs: list[TensorJob], max_shard_size: int | str,
                     chunk_elements: int = CHUNK_ELEMENTS, progress: bool = True, desc: str = "merge") -> int:
    """Stream every job into shards `prefix`*.safetensors (and their index) inside `folder`, in the jobs' order;
    returns the bytes of tensor data. On any error the shard files are closed and the writes still queued dropped
    (the caller writes into a temporary folder, which it then discards)."""
    specs = [job.spec for job in jobs]
    shards = plan_shards(specs, parse_size(max_shard_size))
    names = shard_names(prefix, len(shards))
    total = sum(s.nbytes for s in specs)
    stream = Stream(chunk_elements, total, progress, desc)
    jobs_left, writers = iter(jobs), []
    # Elementwise work on cache-sized chunks is memory-bound: more OpenMP threads only add barrier waits, which
    # stall badly (tens of times slower) when the cores are shared with other work, such as our own writer.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for shard, name in zip(shards, names):
            writers.append(ShardWriter(folder / name, shard))
            for _ in shard:
                stream.run(next(jobs_left), writers[-1])
            stream.writes.submit(writers[-1].close)
        stream.writes.drain()
    except BaseException:
        stream.writes.stop(cancel=True)
        for writer in writers:
            writer.abort()
        raise
    finally:
        torch.set_num_threads(threads)
        stream.writes.stop()
        stream.bar.close()
    write_index(folder, prefix, shards, names)
    return total


def prepare_output(out: Path, inputs: Iterable[Path], overwrite: bool, needed: int, command: str) -> None:
    """The output guard (refuses an input, or a folder this command did not write) and the free disk space, both
    checked before any tensor is computed."""
    guard_output(out, command=command, inputs=inputs, overwrite=overwrite, flag="--overwrite", error=MergeError)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise MergeError(f"{parent} has {free / 1e9:.1f} GB free but the result needs {needed / 1e9:.1f} GB")
