"""Chat Vector arithmetic streamed over safetensors: θ_out = θ_target + Σ_i w_i (θ_chat_i − θ_base).

Chat Vector (Huang et al., ACL 2024) gives a continually pre-trained model (the target, e.g. a Korean CP of
Llama) the chat ability of an instruction-tuned sibling without training: add w × (chat − base). Here the sum
runs one chunk of one tensor at a time (float32, or float64 for float64 tensors), so peak memory is a few
chunk buffers whatever the model size, and each result is cast back to the target tensor's dtype.

Rules per target tensor, in order:
1. it matches a `skip` pattern, or is not floating point: copied from the target unchanged;
2. it is an embedding or LM head (`VOCAB_PATTERNS`) and the vocabularies differ, or a token map is given:
   copied from the target, except the rows of the token map (target id -> chat id), which get
   w × (chat[chat id] − base[chat id]), the row-wise form of the paper code's special-token handling;
3. otherwise every vector must have the tensor with the same shape; all problems are listed at once, before
   anything is written.

This module is the arithmetic and the plan (which tensor gets what, `_Job`) and the YAML recipe; reading chunks,
the inf / nan check and the threaded shard writing are stream.py's, which any merge method can reuse.
"""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from groundtune.fileio import atomic_folder
from groundtune.merge.checkpoint import Checkpoint, MergeError, TensorEntry
from groundtune.merge.files import adopt_chat_format, copy_model_files, eos_ids
from groundtune.merge.stream import CHUNK_ELEMENTS, Stream, TensorJob, prepare_output, write_checkpoint
from groundtune.merge.writer import TensorSpec
from groundtune.errors import GroundtuneError

VOCAB_PATTERNS = ("*embed_tokens.*", "*embed_in.*", "*embed_out.*", "*wte.*", "*word_embeddings.*", "*lm_head.*")
VECTOR_PREFIX = "vector"  # a saved vector's shards are vector*.safetensors, so nothing loads it as a model
VECTOR_META = "chat_vector.json"
RECIPE = "groundtune_merge.json"
_MAX_LISTED = 20


@dataclass
class Vector:
    """One term of the sum: `ratio` × (chat − base), or `ratio` × a vector saved by `extract_vector`."""

    ratio: float
    chat: str | os.PathLike | None = None
    base: str | os.PathLike | None = None
    saved: str | os.PathLike | None = None

    def __post_init__(self):
        if not isinstance(self.ratio, (int, float)) or not math.isfinite(self.ratio):
            raise MergeError(f"ratio must be a finite number, not {self.ratio!r}")
        if (self.saved is None) == (self.chat is None):
            raise MergeError("a vector is a chat model (with its base) or a saved vector folder: give exactly one")
        if self.chat is not None and self.base is None:
            raise MergeError(f"the chat model {self.chat} needs a base model to subtract")

    def describe(self) -> dict:
        if self.saved is not None:
            return {"vector": str(self.saved), "ratio": self.ratio}
        return {"chat": str(self.chat), "base": str(self.base), "ratio": self.ratio}


@dataclass
class MergeReport:
    """What a merge or an extraction did, tensor by tensor."""

    out: Path
    merged: int = 0  # tensors that got the full arithmetic
    rows: dict[str, int] = field(default_factory=dict)  # tensor -> rows changed through the token map
    copied: dict[str, str] = field(default_factory=dict)  # tensor -> why it is the target's (or left out)
    ignored: dict[str, list[str]] = field(default_factory=dict)  # source -> tensors the target does not have
    warnings: list[str] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0
    extraction: bool = False  # copied = left out of the vector, rather than kept from the target

    def summary(self) -> str:
        kept = "left out" if self.extraction else "kept from the target"
        lines = [f"wrote {self.out} ({self.bytes_written / 1e9:.2f} GB in {self.seconds:.1f} s): "
                 f"{self.merged} tensors {'extracted' if self.extraction else 'merged'}, "
                 f"{len(self.rows)} row-mapped, {len(self.copied)} {kept}"]
        reasons: dict[str, list[str]] = {}
        for name, why in self.copied.items():
            reasons.setdefault(why, []).append(name)
        for why, names in reasons.items():
            lines.append(f"  {len(names)} {kept} ({why}): {_listing(names, 5)}")
        for name, n in self.rows.items():
            lines.append(f"  {name}: {n} rows from the token map")
        for source, names in self.ignored.items():
            lines.append(f"  {len(names)} tensors of {source} are not in the target and were ignored: "
                         f"{_listing(names, 5)}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _listing(names: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _matches(name: str, patterns: Iterable[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def _check_skip(skip: Sequence[str], names: Iterable[str], where) -> None:
    """A --skip pattern that matches no tensor is a typo, not a choice: refused, with some names to match."""
    names = list(names)
    unmatched = [p for p in skip if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise MergeError(f"--skip {', '.join(map(repr, unmatched))} matches no tensor of {where}; its tensors are "
                         f"named like {', '.join(names[:4])} (patterns are case-sensitive globs, e.g. '*norm*')")


def _folder_vocab(folder: Path) -> int | None:
    for name, key in (("config.json", "vocab_size"), (VECTOR_META, "chat_vocab_size")):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text())
            value = (data.get("text_config") or {}).get(key) or data.get(key)
            if value:
                return value
    return None


class _Term:
    """One vector's source: two checkpoints (chat − base) or a saved vector (one checkpoint)."""

    def __init__(self, sources: list[Checkpoint], ratio: float = 1.0, *, label: str = "", chat_side: Path | None = None,
                 vocab_sizes: set[int] | None = None, skipped: dict[str, str] | None = None):
        self.sources, self.ratio, self.label, self.chat_side = sources, ratio, label, chat_side
        self.vocab_sizes = (vocab_sizes or set()) - {None}
        self.skipped = skipped or {}  # tensors a saved vector left out on purpose, with the reason

    @classmethod
    def open(cls, vector: Vector) -> "_Term":
        if vector.chat is not None:
            chat, base = Checkpoint(vector.chat), Checkpoint(vector.base)
            return cls([chat, base], vector.ratio, label=f"{vector.chat} − {vector.base}", chat_side=Path(vector.chat),
                       vocab_sizes={chat.vocab_size, base.vocab_size})
        folder = Path(vector.saved)
        if not (folder / VECTOR_META).is_file():
            raise MergeError(f"{folder} is not a saved chat vector (no {VECTOR_META}); write one with "
                             "`groundtune merge extract`")
        try:
            meta = json.loads((folder / VECTOR_META).read_text())
            if not isinstance(meta, dict):
                raise GroundtuneError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            raise MergeError(f"{folder / VECTOR_META} is corrupt ({err}); extract the vector again with "
                             "`groundtune merge extract`") from None
        return cls([Checkpoint(folder, VECTOR_PREFIX)], vector.ratio, label=str(folder), chat_side=folder,
                   vocab_sizes={meta.get("base_vocab_size"), meta.get("chat_vocab_size")},
                   skipped=meta.get("skipped", {}))

    def entries(self, name: str) -> list[TensorEntry | None]:
        return [s.tensors.get(name) for s in self.sources]

    def diff_into(self, stream: Stream, name: str, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """(chat − base)[start:stop] of the flattened tensor, or the saved vector's, into `out`."""
        first = self.sources[0]
        stream.load(first, first.tensors[name], start, stop, out)
        if len(self.sources) == 2:
            base = self.sources[1]
            out.sub_(stream.load(base, base.tensors[name], start, stop, stream.buffer("base", out.dtype, stop - start)))
        return out

    def close(self) -> None:
        for source in self.sources:
            source.close()


@dataclass
class _Job(TensorJob):
    """One output tensor and how to make it: the target's tensor plus each term's, only some rows of it (`rows`),
    the target's unchanged (no terms), or, extracting, the one term's difference alone (no target)."""

    spec: TensorSpec
    target: TensorEntry | None  # None when extracting a vector
    terms: list[_Term]
    rows: dict[int, int] | None = None  # row mode: target row -> chat row
    checkpoint: Checkpoint | None = None  # the target's, which `target` is read from

    def unchanged_source(self) -> tuple[Checkpoint, TensorEntry] | None:
        return None if self.terms else (self.checkpoint, self.target)

    def compute(self, stream: Stream, start: int, stop: int, acc: torch.Tensor) -> None:
        if self.target is None:  # extraction: the vector itself
            self.terms[0].diff_into(stream, self.spec.name, start, stop, acc)
            return
        stream.load(self.checkpoint, self.target, start, stop, acc)
        if self.rows is None:
            _add(stream, self.terms, self.spec.name, start, stop, acc)
        else:
            self._add_rows(stream, start, stop, acc)

    def _add_rows(self, stream: Stream, start: int, stop: int, acc: torch.Tensor) -> None:
        """Each mapped target row of this chunk gets the terms' chat row, the rest stays the target's."""
        width = math.prod(self.spec.shape[1:])
        keys = sorted(self.rows)
        i = bisect.bisect_left(keys, start // width)
        while i < len(keys) and keys[i] * width < stop:
            row, src = keys[i], self.rows[keys[i]]
            lo, hi = max(start, row * width), min(stop, (row + 1) * width)
            src_lo = src * width + lo - row * width
            _add(stream, self.terms, self.spec.name, src_lo, src_lo + hi - lo, acc[lo - start:hi - start])
            i += 1


def _add(stream: Stream, terms: list[_Term], name: str, start: int, stop: int, acc: torch.Tensor) -> None:
    """acc += Σ ratio × term, over elements [start, stop) of the flattened tensor `name`."""
    for term in terms:
        diff = term.diff_into(stream, name, start, stop, stream.buffer("diff", acc.dtype, stop - start))
        # mul then add, not add(alpha=): the fused form rounds differently in vectorized and tail loops,
        # so results would depend on where a chunk starts.
        if term.ratio != 1:
            diff.mul_(term.ratio)
        acc.add_(diff)


def load_token_map(token_map) -> dict[int, int] | None:
    """Target token id -> chat token id, from a dict, a JSON file ({"32000": 2}) or "32000:2,32001:32002"."""
    if token_map is None or token_map == {} or token_map == "":
        return None
    where = "token map"
    if isinstance(token_map, (str, os.PathLike)) and Path(token_map).is_file():
        where = str(token_map)
        try:
            token_map = json.loads(Path(token_map).read_text())
        except json.JSONDecodeError as err:
            raise MergeError(f"{where} is not valid JSON ({err}): write {{\"target id\": chat id, ...}}") from None
    elif isinstance(token_map, str):
        try:
            token_map = dict(pair.split(":") for pair in token_map.replace(" ", "").split(",") if pair)
        except ValueError:
            raise MergeError(f"cannot read the token map {token_map!r}: write it as 32000:2,32001:32002 or "
                             "give a JSON file") from None
    if not isinstance(token_map, dict):
        raise MergeError(f"{where}: expected a mapping of target token id to chat token id")
    try:
        return {int(k): int(v) for k, v in token_map.items()}
    except (TypeError, ValueError):
        raise MergeError(f"{where}: token ids must be integers (target id -> chat id)") from None


def _plan_merge(target: Checkpoint, terms: list[_Term], skip: Sequence[str], token_map: dict[int, int] | None,
                report: MergeReport) -> list[_Job]:
    """Decide how to make each output tensor; raise one error listing every problem before anything is written."""
    vocab_sizes = {target.vocab_size} | set().union(*(t.vocab_sizes for t in terms))
    vocab_differs = len(vocab_sizes - {None}) > 1
    for term in terms:  # shapes tell even where a config does not
        for name, entry in target.tensors.items():
            if _matches(name, VOCAB_PATTERNS):
                vocab_differs |= any(e is not None and e.shape[0] != entry.shape[0] for e in term.entries(name))
    _check_skip(skip, target.tensors, target.folder)
    jobs, problems = [], []
    for name, entry in target.tensors.items():
        spec = TensorSpec(name, entry.dtype, entry.shape)
        pattern = _matches(name, skip)
        if pattern or not entry.is_float:
            report.copied[name] = f"matches skip pattern {pattern!r}" if pattern else "not floating point"
            jobs.append(_Job(spec, entry, [], checkpoint=target))
            continue
        terms_here = [t for t in terms if name not in t.skipped]
        if not terms_here:
            report.copied[name] = "no vector has it"
            jobs.append(_Job(spec, entry, [], checkpoint=target))
            continue
        is_vocab = _matches(name, VOCAB_PATTERNS) is not None
        if is_vocab and (vocab_differs or token_map):
            if not token_map:
                report.copied[name] = (f"vocabulary sizes differ ({', '.join(map(str, sorted(vocab_sizes - {None})))})"
                                       "; give a token map to carry special-token rows")
                jobs.append(_Job(spec, entry, [], checkpoint=target))
                continue
            problems += _check_rows(name, entry, terms_here, token_map)
            jobs.append(_Job(spec, entry, terms_here, rows=token_map, checkpoint=target))
            report.rows[name] = len(token_map)
            continue
        for term in terms_here:
            for source, other in zip(term.sources, term.entries(name)):
                if other is None:
                    problems.append(f"{name}: missing from {source.folder}")
                elif other.shape != entry.shape:
                    problems.append(f"{name}: {list(other.shape)} in {source.folder}, {list(entry.shape)} in the target")
        jobs.append(_Job(spec, entry, terms_here, checkpoint=target))
        report.merged += 1
    if problems:
        raise MergeError(f"{len({p.split(':')[0] for p in problems})} tensor(s) cannot be merged, nothing was "
                         "written:\n  "
                         + "\n  ".join(problems[:_MAX_LISTED])
                         + (f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else "")
                         + "\nSkip them with a pattern (e.g. --skip '*norm*') if the target should keep its own.")
    for term in terms:
        left_out = [n for n in target.tensors if n in term.skipped and n not in report.copied]
        if left_out:
            report.warnings.append(f"{term.label} left out {len(left_out)} tensor(s) at extraction, so it adds "
                                   f"nothing to them: {_listing(left_out, 5)}")
        for source in term.sources:
            extra = [n for n in source.tensors if n not in target.tensors]
            if extra:
                report.ignored[str(source.folder)] = extra
    return jobs


def _check_rows(name: str, entry: TensorEntry, terms: list[_Term], token_map: dict[int, int]) -> list[str]:
    problems = []
    bad_targets = sorted(k for k in token_map if not 0 <= k < entry.shape[0])
    if bad_targets:
        problems.append(f"{name}: token map target id(s) {bad_targets[:10]} outside the target's {entry.shape[0]} rows")
    for term in terms:
        for source, other in zip(term.sources, term.entries(name)):
            if other is None:
                problems.append(f"{name}: missing from {source.folder}, so the token map cannot be applied")
            elif other.shape[1:] != entry.shape[1:]:
                problems.append(f"{name}: rows of {list(other.shape[1:])} in {source.folder}, "
                                f"{list(entry.shape[1:])} in the target")
            else:
                bad = sorted(v for v in token_map.values() if not 0 <= v < other.shape[0])
                if bad:
                    problems.append(f"{name}: token map chat id(s) {bad[:10]} outside the {other.shape[0]} rows of "
                                    f"{source.folder}")
    return problems


def merge(target: str | os.PathLike, vectors: Sequence[Vector | dict], out: str | os.PathLike, *,
          skip: Sequence[str] = (), token_map=None, template_from: str | os.PathLike | None = None,
          max_shard_size: int | str = "5GB", overwrite: bool = False, progress: bool = True,
          chunk_elements: int = CHUNK_ELEMENTS) -> MergeReport:
    """Write θ_target + Σ_i ratio_i × vector_i to `out` (safetensors shards, config, tokenizer).

    `vectors`: `Vector`s (or dicts of their fields). `skip`: glob patterns of tensors the target keeps.
    `token_map`: target token id -> chat token id (dict, JSON file or "32000:2,..."), for embedding and LM-head
    rows when vocabularies differ. `template_from`: where the chat template and eos come from: the first
    vector's chat model (None), "target" to keep the target's, or a model folder.
    """
    started = time.perf_counter()
    out, target = Path(out), Path(target)
    vectors = [v if isinstance(v, Vector) else Vector(**v) for v in vectors]
    if not vectors:
        raise MergeError("nothing to add: give at least one chat model or saved vector")
    token_map = load_token_map(token_map)
    report = MergeReport(out)
    with contextlib.ExitStack() as stack:
        target_ckpt = stack.enter_context(Checkpoint(target))
        terms = []
        for vector in vectors:
            terms.append(_Term.open(vector))
            stack.callback(terms[-1].close)
        jobs = _plan_merge(target_ckpt, terms, skip, token_map, report)
        inputs = [target] + [s.folder for t in terms for s in t.sources]
        prepare_output(out, inputs, overwrite, target_ckpt.total_bytes, "merge")
        with atomic_folder(out) as tmp:
            report.bytes_written = write_checkpoint(tmp, "model", jobs, max_shard_size,
                                                     chunk_elements, progress, "merge")
            copy_model_files(target, tmp)
            if template_from != "target":
                chat_side = Path(template_from) if template_from is not None else terms[0].chat_side
                target_vocab = target_ckpt.vocab_size
                same_vocab = target_vocab is not None and _folder_vocab(chat_side) == target_vocab
                if template_from is None:
                    same_vocab = same_vocab and terms[0].vocab_sizes == {target_vocab}
                report.warnings += adopt_chat_format(tmp, chat_side, same_vocab=same_vocab, token_map=token_map)
            recipe = {"formula": "target + sum(ratio * (chat - base))", "target": str(target),
                      "vectors": [v.describe() for v in vectors], "skip": list(skip),
                      "token_map": {str(k): v for k, v in (token_map or {}).items()},
                      "template_from": None if template_from is None else str(template_from),
                      "merged": report.merged, "rows": report.rows, "copied": report.copied}
            (tmp / RECIPE).write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n")
    report.seconds = time.perf_counter() - started
    return report


def chat_vector(base: str | os.PathLike, chat: str | os.PathLike, target: str | os.PathLike,
                out: str | os.PathLike, ratio: float = 1.0, **kwargs) -> MergeReport:
    """θ_target + ratio × (θ_chat − θ_base) into `out`; keyword arguments as in `merge`."""
    return merge(target, [Vector(ratio, chat=chat, base=base)], out, **kwargs)


def extract_vector(base: str | os.PathLike, chat: str | os.PathLike, out: str | os.PathLike, *,
                   skip: Sequence[str] = (), dtype: str = "float32", max_shard_size: int | str = "5GB",
                   overwrite: bool = False, progress: bool = True,
                   chunk_elements: int = CHUNK_ELEMENTS) -> MergeReport:
    """Save θ_chat − θ_base to `out` to add to targets later with `merge(target, [Vector(r, saved=out)])`.

    Stored in float32 by default, so applying it gives bit for bit what the one-shot merge gives; a 16-bit
    `dtype` halves the size at the cost of that. The chat model's tokenizer files come along (chat template, eos).
    """
    started = time.perf_counter()
    out = Path(out)
    dtypes = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
    if dtype not in dtypes:
        raise MergeError(f"unknown vector dtype {dtype!r}; choose one of {', '.join(dtypes)}")
    report = MergeReport(out, extraction=True)
    if Path(base).resolve() == Path(chat).resolve():
        raise MergeError(f"--base and --chat are the same model ({base}): the vector would be all zeros; give the "
                         "model the chat model was tuned from as --base")
    with Checkpoint(chat) as chat_ckpt, Checkpoint(base) as base_ckpt:
        _check_skip(skip, chat_ckpt.tensors, chat)
        term = _Term([chat_ckpt, base_ckpt])
        jobs, problems, cut = [], [], []
        for name, entry in chat_ckpt.tensors.items():
            other = base_ckpt.tensors.get(name)
            pattern = _matches(name, skip)
            if pattern or not entry.is_float:
                report.copied[name] = f"matches skip pattern {pattern!r}" if pattern else "not floating point"
            elif other is None:
                problems.append(f"{name}: in {chat} but missing from {base}")
            elif other.shape == entry.shape:
                jobs.append(_Job(TensorSpec(name, dtypes[dtype], entry.shape), None, [term]))
                report.merged += 1
            elif _matches(name, VOCAB_PATTERNS) and other.shape[1:] == entry.shape[1:]:
                # the vocabularies differ: the rows both share are what a token map can use later
                rows = min(entry.shape[0], other.shape[0])
                jobs.append(_Job(TensorSpec(name, dtypes[dtype], (rows, *entry.shape[1:])), None, [term]))
                report.merged += 1
                cut.append(name)
            else:
                problems.append(f"{name}: {list(entry.shape)} in {chat}, {list(other.shape)} in {base}")
        problems += [f"{n}: in {base} but missing from {chat}" for n in base_ckpt.tensors if n not in chat_ckpt.tensors]
        if problems:
            raise MergeError(f"{len(problems)} tensor(s) cannot be extracted, nothing was written:\n  "
                             + "\n  ".join(problems[:_MAX_LISTED])
                             + "\nSkip them with a pattern (e.g. --skip '*norm*').")
        needed = sum(j.spec.nbytes for j in jobs)
        prepare_output(out, [Path(base), Path(chat)], overwrite, needed, "merge extract")
        with atomic_folder(out) as tmp:
            report.bytes_written = write_checkpoint(tmp, VECTOR_PREFIX, jobs, max_shard_size,
                                                     chunk_elements, progress, "extract")
            copy_model_files(Path(chat), tmp, exclude=("config.json",))
            if not (tmp / "generation_config.json").is_file() and eos_ids(Path(chat)):
                ids = eos_ids(Path(chat))
                (tmp / "generation_config.json").write_text(
                    json.dumps({"eos_token_id": ids[0] if len(ids) == 1 else ids}) + "\n")
            meta = {"format": "groundtune-chat-vector", "version": 1, "formula": "chat - base",
                    "base": str(base), "chat": str(chat), "dtype": dtype,
                    "base_vocab_size": base_ckpt.vocab_size, "chat_vocab_size": chat_ckpt.vocab_size,
                    "skipped": report.copied, "cut_to_shared_rows": cut}
            (tmp / VECTOR_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if cut:
        report.warnings.append(f"base and chat vocabularies differ: {', '.join(cut)} keep only the rows both share")
    report.seconds = time.perf_counter() - started
    return report


_CONFIG_KEYS = {"target", "out", "base", "vectors", "skip", "token_map", "template_from", "max_shard_size",
                "overwrite"}


def load_merge_config(path: str | os.PathLike) -> dict:
    """Read a YAML merge recipe into keyword arguments for `merge`. Paths are as written (relative to the
    working directory). Each entry of `vectors` is {chat, ratio[, base]} or {vector, ratio}."""
    from groundtune.config import read_yaml

    data = read_yaml(path, error=MergeError)
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise MergeError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(_CONFIG_KEYS)}")
    if not isinstance(data.get("vectors"), list) or not data["vectors"]:
        raise MergeError(f"{path}: `vectors` must be a list of {{chat, ratio}} or {{vector, ratio}} entries")
    vectors = []
    for i, item in enumerate(data.pop("vectors")):
        where = f"{path}: vectors[{i}]"
        if not isinstance(item, dict) or "ratio" not in item or not ({"chat", "vector"} & set(item)):
            raise MergeError(f"{where}: write {{chat: PATH, ratio: W}} (base from the top level) or "
                             "{vector: PATH, ratio: W}")
        extra = sorted(set(item) - {"chat", "base", "vector", "ratio"})
        if extra:
            raise MergeError(f"{where}: unknown key(s) {extra}")
        try:
            if "vector" in item:
                vectors.append(Vector(float(item["ratio"]), saved=item["vector"]))
            else:
                vectors.append(Vector(float(item["ratio"]), chat=item["chat"], base=item.get("base", data.get("base"))))
        except (MergeError, TypeError, ValueError) as err:
            raise MergeError(f"{where}: {err}") from None
    data.pop("base", None)
    data["vectors"] = vectors
    if isinstance(data.get("skip"), str):
        data["skip"] = [data["skip"]]
    return data

