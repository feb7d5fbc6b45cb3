"""Write safetensors shards chunk by chunk, with the header known up front.

`safetensors.torch.save_file` serializes a whole dict of tensors held in memory, so a 5 GB shard would need
5 GB of RAM. Every tensor's name, dtype and shape is known before the merge starts, so the header can be
written first and the data streamed after it in the header's order; the result is byte-for-byte the layout
safetensors reads (8-byte little-endian header size, JSON header padded with spaces, contiguous data).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from groundtune.merge.checkpoint import DTYPE_CODES, DTYPES, MergeError
from groundtune.errors import GroundtuneError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


def parse_size(size: int | str) -> int:
    """Bytes from 5000000, "5GB", "500MB" or "2GiB" (GB = 10^9, as Hugging Face's max_shard_size)."""
    if isinstance(size, int):
        return size
    match = _SIZE.match(str(size))
    if not match:
        raise MergeError(f"cannot read the size {size!r}: write it as 5GB, 500MB or a number of bytes")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit.upper() or " "))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize


def plan_shards(specs: list[TensorSpec], max_shard_size: int) -> list[list[TensorSpec]]:
    """Group tensors, in order, into shards of at most `max_shard_size` bytes (a bigger tensor gets its own)."""
    shards, current, size = [], [], 0
    for spec in specs:
        if current and size + spec.nbytes > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(spec)
        size += spec.nbytes
    if current or not shards:
        shards.append(current)
    return shards


def shard_names(prefix: str, count: int) -> list[str]:
    if count == 1:
        return [f"{prefix}.safetensors"]
    return [f"{prefix}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_index(folder: Path, prefix: str, shards: list[list[TensorSpec]], names: list[str]) -> None:
    """The Hugging Face shard index; a single-file checkpoint has none."""
    if len(shards) == 1:
        return
    weight_map = {spec.name: name for shard, name in zip(shards, names) for spec in shard}
    total = sum(spec.nbytes for shard in shards for spec in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


class ShardWriter:
    """One safetensors file: the header at open, then each tensor's data in order, in as many chunks as wanted."""

    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None):
        self.path, self.specs = path, specs
        header, offset = {"__metadata__": {"format": "pt", **(metadata or {})}}, 0
        for spec in specs:
            header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape),
                                 "data_offsets": [offset, offset + spec.nbytes]}
            offset += spec.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(blob)) + blob)
        self._index, self._written = 0, 0  # current tensor, bytes of it written so far

    def write(self, chunk: torch.Tensor) -> None:
        """The next elements of the current tensor (flat, in the tensor's dtype)."""
        self._skip_empty()
        spec = self.specs[self._index]
        if DTYPE_CODES[chunk.dtype] != spec.dtype:
            raise TypeError(f"{spec.name} is {spec.dtype}, got a {chunk.dtype} chunk")
        self.write_bytes(memoryview(chunk.contiguous().view(torch.uint8).numpy()))

    def write_bytes(self, data: memoryview) -> None:
        """Raw bytes of the current tensor (also how a tensor is copied unchanged)."""
        self._skip_empty()
        spec = self.specs[self._index]
        if self._written + len(data) > spec.nbytes:
            raise GroundtuneError(f"{spec.name}: more data than its shape {spec.shape} holds")
        self._file.write(data)
        self._written += len(data)
        if self._written == spec.nbytes:
            self._index, self._written = self._index + 1, 0

    def _skip_empty(self) -> None:
        while self._index < len(self.specs) and self.specs[self._index].nbytes == 0:
            self._index += 1

    def close(self) -> None:
        self._file.close()
        self._skip_empty()
        if self._index != len(self.specs):
            raise RuntimeError(f"{self.path.name}: closed after {self._index} of {len(self.specs)} tensors")

    def abort(self) -> None:
        self._file.close()
