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


# --- the output guard -----------------------------------------------------------------------------------------
#
# Every file or folder a command writes is first approved here, before any work starts. A folder output gets a
# marker file naming the command that made it and the top-level entries it wrote; only such a folder counts as
# "this command's own earlier output", and --overwrite may replace only that, never a file the command did not
# make. The approvals of the current run are kept (approved_outputs) so that a test can check every write.

MARKER = "groundtune-output.json"
_active: dict[Path, str] = {}  # resolved approved output -> the command it belongs to (reentrant checks skip)
_history: list[Path] = []  # every output approved since begin_run (what the write audit compares against)


def begin_run() -> None:
    """Forget earlier approvals: the `groundtune` command calls this as each command starts."""
    _active.clear()
    _history.clear()


def approved_outputs() -> list[Path]:
    """The outputs approved since begin_run, resolved."""
    return list(_history)


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder groundtune made ({"command", "made"}), or None (no marker, or one unreadable)."""
    import json

    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str) or not isinstance(data.get("made"), list):
        return None
    return data


def _write_marker(folder: Path, command: str, made) -> None:
    import json

    _write_bytes(folder / MARKER, (json.dumps({"command": command, "made": sorted(set(made))}, indent=2) + "\n").encode())


def _owner(path: Path) -> Path | None:
    """The nearest approved output strictly above `path`, if any."""
    for parent in path.parents:
        if parent in _active:
            return parent
    return None


def _claim(path: Path) -> None:
    """Record in the marker of the approved folder above `path` that its top-level entry is this command's own.
    Done before the entry is written, so a run killed midway leaves a folder its next run recognises."""
    path = Path(path).resolve()
    folder = _owner(path)
    if folder is None:
        # an approved file inside another command's folder (eval's predictions in a training run): that folder's
        # marker takes it in, so the run's own --overwrite does not count it as someone else's file
        marker = read_marker(path.parent) if path in _active else None
        if marker and path.name not in marker["made"]:
            _write_marker(path.parent, marker["command"], [*marker["made"], path.name])
        return
    name = path.relative_to(folder).parts[0]
    marker = read_marker(folder)
    made = set(marker["made"]) if marker else set()
    if marker is None or name not in made:
        folder.mkdir(parents=True, exist_ok=True)
        _write_marker(folder, _active[folder], made | {name})


def _temp_of(name: str) -> str | None:
    """The entry a temporary sibling (.NAME.tmp.PID.X / .NAME.old.PID.X) belongs to, else None."""
    for kind in _KINDS:
        head, sep, _ = name.partition(f".{kind}.")
        if sep and head.startswith("."):
            return head[1:]
    return None


def _overlaps(out: Path, source: Path) -> str | None:
    if source == out:
        return "is also an input"
    if out in source.parents:
        return "holds an input"
    if source in out.parents:
        return "lies inside an input"
    return None


def guard_output(out: str | os.PathLike, *, command: str, inputs=(), overwrite: bool = False, resume: bool = False,
                 file: bool = False, flag: str = "--overwrite", error: type[Exception] = OutputError) -> Path:
    """Approve `out` as an output of `command` (a file when `file`, else a folder), before any work starts.

    Refused: an output equal to, holding, or inside one of `inputs`; a file output that is a folder; a folder
    that is not empty and was not made by `command` (its marker says so), with or without `overwrite`; a folder
    of `command`'s that holds entries the command did not make; and, unless `overwrite` (or `resume`: the
    command continues its own output), any earlier output of `command`. An existing file output is replaced
    (as a shell's `>` would). `flag` is how the caller's users ask for overwriting; `error` the exception type
    they expect. Returns `out` as a Path."""
    out = Path(out)
    resolved = out.resolve()
    if resolved in _active:  # approved earlier in this run (a command calling another's machinery)
        return out
    for item in inputs:
        if item is None:
            continue
        how = _overlaps(resolved, Path(item).resolve())
        if how:
            raise error(f"the output {out} {how} ({item}): write the result to a new path")
    if file:
        if out.is_dir():
            raise error(f"the output {out} is a folder; give a file name, e.g. {out / 'report.json'}")
    elif out.is_symlink() or out.exists():
        if not out.is_dir() or out.is_symlink():
            raise error(f"the output {out} is a file; give a folder (a new or empty one)")
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            _check_own_folder(out, entries, command, overwrite or resume, flag, error)
    _active[resolved] = command
    _history.append(resolved)
    _claim(resolved)
    return out


def _check_own_folder(out: Path, entries: list[str], command: str, replace: bool, flag: str, error) -> None:
    marker = read_marker(out)
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    if marker is None or marker["command"] != command:
        made_by = (f"`groundtune {marker['command']}` made it, not `groundtune {command}`" if marker
                   else f"no groundtune command made it (it has no {MARKER})")
        raise error(f"{out} already exists and is not empty ({shown}), and {made_by}: choose a new or empty folder "
                    f"({flag} replaces only a folder `groundtune {command}` made itself, so nothing else is ever "
                    "deleted)")
    own = {MARKER, *marker["made"]}
    foreign = [name for name in entries if name not in own and _temp_of(name) not in own]
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise error(f"{out} holds {listed}, which `groundtune {command}` did not write: move it out of the folder, or "
                    f"choose another output (even {flag} deletes only what the command made)")
    if not replace:
        raise error(f"{out} already exists and is not empty (an earlier `groundtune {command}` output): choose "
                    f"another path, or pass {flag} to replace it")


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike):
    """Yield a temporary folder; on success it replaces `folder` (an old one is removed only afterwards).
    Temporary siblings of earlier runs that died are removed first. A folder approved by guard_output gets its
    marker, listing what is in it, before the rename."""
    folder = Path(folder)
    _claim(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(folder)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(folder, "tmp"), dir=folder.parent))
    except OSError as err:
        raise OutputError(f"cannot write {folder}: {err.strerror or err}") from None
    try:
        yield tmp
        key = folder.resolve()
        if key in _active:
            _write_marker(tmp, _active[key], [p.name for p in tmp.iterdir() if p.name != MARKER])
        old = None
        if folder.exists() or folder.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_prefix(folder, "old"), dir=folder.parent))
            try:
                os.replace(folder, old / folder.name)
            except OSError as err:
                shutil.rmtree(old, ignore_errors=True)
                raise OutputError(f"cannot replace {folder}: {err.strerror or err}; it is left as it was") from None
        os.replace(tmp, folder)
        _active.pop(key, None)  # complete: a later call in this process is checked afresh
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a whole file via a temporary sibling and rename (stale siblings of dead runs are removed first)."""
    _claim(Path(path))
    return _write_bytes(Path(path), data.encode() if isinstance(data, str) else data)


def _write_bytes(path: Path, data: bytes) -> Path:
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
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """A matplotlib figure as PNG through atomic_write (savefig on a path would write in place, unguarded)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())


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
        raise error(f"{path}, {not_utf8(data, err)}") from None


def not_utf8(data: bytes, err: UnicodeDecodeError) -> str:
    """Where bytes stop being UTF-8 and the fix, for a message that starts with the file's name."""
    line = data[:err.start].count(b"\n") + 1
    return (f"line {line} (byte {err.start}): not UTF-8 text ({err.reason}); save the file as UTF-8 "
            f"(e.g. iconv -f cp949 -t utf-8)")


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
