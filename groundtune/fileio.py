"""Writes that are never half-done: build in a temporary sibling, rename into place when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from groundtune.errors import OutputError

# Temporary siblings are named .NAME.tmp.PID.RANDOM (being built) and .NAME.old.PID.RANDOM (the folder being
# replaced), so the next run can tell those of a dead run from those of a live one.
_KINDS = ("tmp", "old")
STALE_AFTER_S = 7 * 24 * 3600  # a sibling whose owner cannot be told (older naming) goes after a week


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of `path` left by runs that died (their process is gone, or they are older
    than STALE_AFTER_S when the owner cannot be told). A run killed between moving the old `path` aside and
    renaming the new one in gets the old one back. Returns what was removed."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    removed = []
    for kind in _KINDS:
        for sibling in parent.glob(f".{path.name}.{kind}.*"):
            owner = sibling.name[len(f".{path.name}.{kind}."):].split(".", 1)[0]
            if owner.isdigit():
                dead = not _pid_alive(int(owner))
            else:
                with contextlib.suppress(FileNotFoundError):
                    dead = time.time() - sibling.stat().st_mtime > STALE_AFTER_S
            if not dead:
                continue
            kept = sibling / path.name
            if kind == "old" and not path.exists() and (kept.exists() or kept.is_symlink()):
                os.replace(kept, path)
            _remove(sibling)
            removed.append(sibling)
    return removed


def _prefix(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}.{os.getpid()}."


def check_output(out: str | os.PathLike, *, inputs=(), overwrite: bool = False, flag: str = "--overwrite",
                 error: type[Exception] = OutputError) -> Path:
    """Refuse to write `out` when that would destroy something: it is (or holds) one of `inputs`, or it
    exists and is not empty while `overwrite` is off. Returns `out` as a Path. `flag` is how the caller's
    users ask for overwriting; `error` the exception type they expect."""
    out = Path(out)
    resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if source == resolved or resolved in source.parents:
            raise error(f"the output {out} is also an input ({item}): write the result to a new path")
    if out.is_symlink() or out.exists():
        empty = out.is_dir() and not out.is_symlink() and not any(out.iterdir())
        if not empty and not overwrite:
            what = "a folder that is not empty" if out.is_dir() else "a file"
            raise error(f"{out} already exists and is {what}: choose another path, or pass {flag} to replace it")
    return out


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike):
    """Yield a temporary folder; on success it replaces `folder` (an old one is removed only afterwards).
    Temporary siblings of earlier runs that died are removed first."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(folder)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(folder, "tmp"), dir=folder.parent))
    except OSError as err:
        raise OutputError(f"cannot write {folder}: {err.strerror or err}") from None
    try:
        yield tmp
        old = None
        if folder.exists() or folder.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_prefix(folder, "old"), dir=folder.parent))
            try:
                os.replace(folder, old / folder.name)
            except OSError as err:
                shutil.rmtree(old, ignore_errors=True)
                raise OutputError(f"cannot replace {folder}: {err.strerror or err}; it is left as it was") from None
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a whole file via a temporary sibling and rename (stale siblings of dead runs are removed first)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder; give a file name")
        clean_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path, "tmp"), dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_text(path: str | os.PathLike, *, error: type[Exception] | None = None, what: str = "file") -> str:
    """The whole of a UTF-8 text file. A missing file, a folder, or bytes that are not UTF-8 raise `error`
    (default DataError) naming the file, and for bad bytes the line and byte where they are."""
    if error is None:
        from groundtune.errors import DataError as error
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder; give a {what}") from None
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise error(f"{path}, line {line} (byte {err.start}): not UTF-8 text ({err.reason}); save the file as UTF-8 "
                    f"(e.g. iconv -f cp949 -t utf-8)") from None


@contextlib.contextmanager
def text_lines(path: str | os.PathLike, *, error: type[Exception] | None = None, what: str = "file"):
    """`with text_lines(path) as lines:` in place of `with open(path) as f:`, for UTF-8 text read whole through
    read_text, so bytes that are not UTF-8 name the file and line instead of failing mid-iteration."""
    yield read_text(path, error=error, what=what).splitlines(keepends=True)


def jsonl_lines(lines, path: str | os.PathLike, shape: str, error: type[Exception] = ValueError):
    """(line number, parsed value) for each non-blank line of a JSON Lines file; a line that is not JSON raises
    `error` naming the file, the line and `shape`, the object each line should hold."""
    import json

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); each line must be "
                        f"one {shape} object") from None
