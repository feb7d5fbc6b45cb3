"""groundtune: adapt a frozen LLM to grounded dialogue and Korean instructions, cheaply, and measure it honestly."""

from groundtune._lazy import lazy_getattr

__version__ = "0.1.0"

# Public names -> module that defines them. Imported lazily so `groundtune --help` stays fast.
_EXPORTS = {
    "load_model": "groundtune.models",
    "attach": "groundtune.methods",
    "detach": "groundtune.methods",
    "save_adapter": "groundtune.methods.io",
    "load_adapter": "groundtune.methods.io",
}

_exported = lazy_getattr(__name__, _EXPORTS)


def __getattr__(name: str):
    # Every registered method's config class is public under its own name (gt.LoraConfig, gt.AcceptConfig, ...):
    # a new method file needs no line here.
    if name.endswith("Config") and name not in _EXPORTS:
        from groundtune.methods import registry

        for method in registry().values():
            if method.config.__name__ == name:
                return method.config
    return _exported(name)


def __dir__():
    from groundtune.methods import registry

    return sorted({*globals(), *_EXPORTS, *(m.config.__name__ for m in registry().values())})
