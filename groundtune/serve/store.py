"""Where uploaded adapters are kept: `serve --adapter-dir DIR` keeps each in DIR/NAME, so a restart serves them
again; without it nothing is kept on disk, since the engine holds a loaded adapter's tensors in memory.

An upload is written to a scratch folder (a hidden .upload-* folder in DIR, or one in the system's temporary
folder) and, once it has loaded, renamed to DIR/NAME in one step; the scratch folder is removed whatever
happened, so no upload folder outlives its request. Scratch folders of a server that was killed are removed at
the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

SCRATCH_PREFIX = ".upload-"
DELETED_PREFIX = ".deleted-"


class AdapterStore:
    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in [*self.folder.glob(SCRATCH_PREFIX + "*"), *self.folder.glob(DELETED_PREFIX + "*")]:
                shutil.rmtree(stale, ignore_errors=True)

    def saved(self) -> dict[str, Path]:
        """The adapters kept by earlier runs, by name (their folder's name)."""
        if self.folder is None:
            return {}
        return {p.name: p for p in sorted(self.folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}

    @contextlib.contextmanager
    def scratch(self):
        """A fresh folder for one upload's files, removed when the block ends (kept only through `keep`)."""
        kept = self.folder is not None  # in DIR itself, so that keeping it is one rename on one file system
        path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX if kept else "groundtune-upload-", dir=self.folder))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def keep(self, scratch: Path, name: str) -> None:
        """Move a loaded upload's scratch folder to DIR/NAME (nothing to do without --adapter-dir)."""
        if self.folder is not None:
            os.rename(scratch, self.folder / name)  # same file system: one step, never half there

    def remove(self, name: str) -> None:
        """Forget a kept adapter: renamed aside first, so a crash never leaves half a folder under its name."""
        if self.folder is None or not (self.folder / name).is_dir():
            return
        aside = self.folder / f"{DELETED_PREFIX}{uuid.uuid4().hex}"
        os.rename(self.folder / name, aside)
        shutil.rmtree(aside, ignore_errors=True)
