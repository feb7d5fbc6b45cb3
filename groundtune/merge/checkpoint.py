"""Read safetensors checkpoints (one file, or shards with an index) range by range, in bounded memory.

Every file is checked by safetensors' own parser first (header, offsets, file size), so a truncated or corrupt
file fails before anything is written. Data is then read with positional reads into buffers the caller owns:
`safe_open` maps whole shards, and every page it touches counts toward the process's RSS until the handle
closes, which would make peak memory grow with the shard size instead of the chunk size.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from groundtune.errors import GroundtuneError

# safetensors dtype codes -> torch dtypes (the ones torch can hold on CPU).
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class MergeError(GroundtuneError):
    """Bad input for a merge: the message names the file or tensors and says what to do."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live."""

    name: str
    path: Path
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    offset: int  # absolute offset of the first byte in `path`
    nbytes: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.torch_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES


def read_header(path: Path) -> list[TensorEntry]:
    """The tensors of one safetensors file, in file order; a clear error when the file is damaged."""
    try:
        with safe_open(path, framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise MergeError(
            f"{path} is not a readable safetensors file ({err}): it is truncated or corrupt. "
            "Download or copy it again (compare its size with the source)."
        ) from None
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    start = 8 + size
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise MergeError(f"{path}: tensor {name} has dtype {info['dtype']}, which torch cannot hold on CPU")
        begin, end = info["data_offsets"]
        entries.append(TensorEntry(name, path, info["dtype"], tuple(info["shape"]), start + begin, end - begin))
    return sorted(entries, key=lambda e: e.offset)


def weight_files(folder: Path, prefix: str = "model") -> list[Path]:
    """The shard files of a checkpoint folder: from `{prefix}.safetensors.index.json`, else `{prefix}.safetensors`."""
    index = folder / f"{prefix}.safetensors.index.json"
    single = folder / f"{prefix}.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise MergeError(f"{index} is not a valid shard index ({type(err).__name__}: {err}); restore it "
                             "from the model's source") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise MergeError(f"{index} names shard file(s) that are missing: {', '.join(missing)}; the download "
                             "is incomplete")
        return [folder / f for f in files]
    if single.is_file():
        return [single]
    if not folder.is_dir():
        raise MergeError(f"{folder} does not exist or is not a folder")
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    hint = f" (it has {', '.join(found[:3])}{'...' if len(found) > 3 else ''})" if found else ""
    other = " It holds PyTorch .bin weights: convert them to safetensors first." if any(folder.glob("*.bin")) else ""
    raise MergeError(f"{folder} has neither {index.name} nor {single.name}{hint}.{other}")


class Checkpoint:
    """The tensors of one checkpoint folder, read by element range. Use as a context manager (closes files)."""

    def __init__(self, folder: str | os.PathLike, prefix: str = "model"):
        self.folder = Path(folder)
        self.prefix = prefix
        self.tensors: dict[str, TensorEntry] = {}
        for path in weight_files(self.folder, prefix):
            for entry in read_header(path):
                if entry.name in self.tensors:
                    raise MergeError(f"tensor {entry.name} appears in both {self.tensors[entry.name].path.name} "
                                     f"and {path.name} of {self.folder}")
                self.tensors[entry.name] = entry
        index = self.folder / f"{prefix}.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            wrong = [n for n, f in weight_map.items() if n not in self.tensors or self.tensors[n].path.name != f]
            if wrong:
                raise MergeError(f"{index} places {len(wrong)} tensor(s) in files that do not hold them "
                                 f"(first: {wrong[0]}); the index and the shards come from different versions")
        self.config = _read_json(self.folder / "config.json")
        self._fds: dict[Path, int] = {}

    @property
    def vocab_size(self) -> int | None:
        config = self.config.get("text_config") or self.config
        return config.get("vocab_size") or self.config.get("vocab_size")

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.tensors.values())

    def read_into(self, entry: TensorEntry, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor into `out` (1-D, contiguous, of the entry's dtype)."""
        view = memoryview(out.view(torch.uint8).numpy())
        fd = self._fds.get(entry.path)
        if fd is None:
            fd = self._fds[entry.path] = os.open(entry.path, os.O_RDONLY)
        offset, done, size = entry.offset + start * entry.itemsize, 0, (stop - start) * entry.itemsize
        while done < size:
            n = os.preadv(fd, [view[done:size]], offset + done)
            if n == 0:
                raise MergeError(f"{entry.path} ended while reading {entry.name}: the file shrank during the merge")
            done += n
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MergeError(f"{path} is not valid JSON ({err}); restore it from the model's source") from None
