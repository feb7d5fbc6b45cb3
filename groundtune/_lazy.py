"""Lazy public names: packages list where each name lives, and import it on first use (PEP 562), so that
`import groundtune` and `groundtune --help` never load torch, transformers or faiss."""

from __future__ import annotations

from importlib import import_module


def lazy_getattr(package: str, exports: dict[str, str]):
    """A module-level __getattr__ that imports `exports[name]` (a module path) and returns its `name`."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
