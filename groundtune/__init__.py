"""groundtune: adapt a frozen LLM to grounded dialogue and Korean instructions, cheaply, and measure it honestly."""

from groundtune.version import __version__  # noqa: F401  (the package version, at the root as usual)


def __getattr__(name: str):
    """The public API (groundtune.api) at the package root, imported on first use so `groundtune --help` stays
    fast; and every registered method's config class under its own name (gt.LoraConfig, gt.AcceptConfig, ...),
    so a new method file needs no line here."""
    if name.endswith("Config"):
        from groundtune.methods import registry

        for method in registry().values():
            if method.config.__name__ == name:
                return method.config
    from importlib import import_module

    api = import_module("groundtune.api")  # not `from groundtune import api`: that would ask this function again
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    from importlib import import_module

    from groundtune.methods import registry

    api = import_module("groundtune.api")
    return sorted({*globals(), *api.__all__, *(m.config.__name__ for m in registry().values())})
