"""Parameter-efficient methods. Each lives in one file of this package and registers itself, as peft's tuners do.

A method file holds its config dataclass (a class attribute ``method`` names it in adapter folders and YAML;
the fields are plain JSON-able values), ``attach``/``detach``, and whatever else it needs, and ends with
``register(Method(...))``. Adding a method means adding that file and its tests: the registry finds every
module of this package (files starting with ``_`` are shared helpers), and the package root, the YAML checks,
adapter folders and sweep tables all read the registry.

The contract:
- ``attach(model, config) -> model``: the base is already frozen; add the trainable parts and return the model
  to use (the same object, or a wrapper such as peft's);
- ``detach(model) -> model``: remove what attach added and return the bare base model, weights as they were;
- optional ``optimizer_groups(model, config, lr) -> list[dict]`` when parts train at different rates;
- optional ``save(model, folder)`` / ``load(model, folder, meta) -> model`` for a folder layout of the method's
  own (LoRA writes peft's); ``peft_types`` names the peft folder types that ``load`` reads;
- optional ``describe(config) -> {"layer": ..., "length": ...}``: the cells of a sweep table;
- optional ``parameter_count(model, config) -> int``: how many trainable parameters attach would create, from
  the config and the model's shapes alone (nothing allocated), so a server can refuse an adapter too large
  for it before loading it; ``read_peft_config(meta)`` builds the config from a peft folder's
  adapter_config.json (for methods that load peft folders).

Capabilities, declared on the registry entry so that no other module keeps lists of method names:
- ``virtual_tokens(config) -> int``: tokens the method puts before the text (the server counts them against the
  context length); default none;
- ``prefix_safe``: the forward over a prompt prefix does not depend on what follows it, so a prefix shared by
  a batch's rows can be prefilled once (the base, LoRA, BitFit);
- ``mixable``: requests for different adapters of this method can share one batch, row by row (False for a
  method that changes weights every row shares, such as BitFit and full fine-tuning); a method that implements
  it gives ``attach_mixed(model, [(name, config, tensors), ...]) -> model`` (several adapters at once, each under
  `name`, its trained tensors, named as a plain attach names them, copied in), ``detach_mixed(model) -> model``
  and ``select_rows(model, names) -> dict`` (each row's adapter name, None for a row it does not serve; returns
  the forward arguments that pick them); `register` refuses a mixable method without them;
- ``mergeable``: the trained parameters fold into the base weights, so the result is a plain model any engine
  loads.
"""

from __future__ import annotations

import dataclasses
import pkgutil
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable

import torch
from groundtune.errors import ConfigError


@dataclass(frozen=True)
class Method:
    config: type
    attach: Callable
    detach: Callable
    optimizer_groups: Callable | None = None
    save: Callable | None = None
    load: Callable | None = None
    peft_types: tuple[str, ...] = ()
    describe: Callable | None = None
    parameter_count: Callable | None = None
    read_peft_config: Callable | None = None
    virtual_tokens: Callable | None = None
    prefix_safe: bool = False
    mixable: bool = False
    attach_mixed: Callable | None = None
    detach_mixed: Callable | None = None
    select_rows: Callable | None = None
    mergeable: bool = False

    @property
    def name(self) -> str:
        return self.config.method


_REGISTRY: dict[str, Method] = {}
_ATTACHED = "groundtune_method"  # the attached config is kept on the model under this name


def register(method: Method) -> Method:
    """Make a method known by its config's ``method`` name (called at the end of the method's own file)."""
    known = _REGISTRY.get(method.name)
    if known is not None and known.config is not method.config:
        raise ConfigError(f"two methods are called {method.name!r}: {known.config} and {method.config}")
    if method.mixable and None in (method.attach_mixed, method.detach_mixed, method.select_rows):
        raise ConfigError(f"{method.name} says it is mixable but gives no attach_mixed / detach_mixed / select_rows")
    _REGISTRY[method.name] = method
    return method


_discovered = False


def registry() -> dict[str, Method]:
    """Every method, by name: the modules of this package are imported once, and each registers itself."""
    global _discovered
    if not _discovered:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_") and info.name != "io":
                import_module(f"{__name__}.{info.name}")
        _discovered = True
    return _REGISTRY


def names() -> list[str]:
    return list(registry())


def get(name: str) -> Method:
    methods = registry()
    if name not in methods:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(methods)}")
    return methods[name]


def config_class(name: str) -> type:
    return get(name).config


def config_from_dict(d: dict[str, Any]):
    """Build a method config from a dict such as a YAML block: {method: lora, r: 8, ...}."""
    d = dict(d)
    name = d.pop("method", None)
    if name is None:
        raise ConfigError(f"method config {d} has no 'method' key; add one of {', '.join(names())}")
    cls = config_class(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


def config_to_dict(config) -> dict[str, Any]:
    return {"method": config.method, **dataclasses.asdict(config)}


def attached_config(model):
    """The config of the method attached to `model`, or None for a bare model."""
    return getattr(model, _ATTACHED, None)


def mark_attached(model, config) -> None:
    """Record `config` as the method attached to `model` (for methods whose loader builds the model itself)."""
    setattr(model, _ATTACHED, config)


def clear_attached(model) -> None:
    if hasattr(model, _ATTACHED):
        delattr(model, _ATTACHED)


def attach(model, config):
    """Freeze `model` and attach the method described by `config`. Returns the model to train."""
    if attached_config(model) is not None:
        raise ConfigError(
            f"a {attached_config(model).method} adapter is already attached; call groundtune.detach(model) first"
        )
    method = get(config.method)
    for p in model.parameters():
        p.requires_grad_(False)
    model = method.attach(model, config)
    mark_attached(model, config)
    return model


def detach(model):
    """Remove the attached method; returns the bare base model (weights untouched)."""
    config = attached_config(model)
    if config is None:
        return model
    base = get(config.method).detach(model)
    clear_attached(base)
    clear_attached(model)
    return base


def describe(config) -> dict[str, Any]:
    """A method's sweep-table cells: which layers it adapts and its length (or rank)."""
    method = get(config.method)
    return method.describe(config) if method.describe else {"layer": "-", "length": "-"}


def virtual_tokens(config) -> int:
    """How many virtual tokens the method of `config` puts before the text (0 for most methods)."""
    method = get(config.method)
    return int(method.virtual_tokens(config)) if method.virtual_tokens else 0


def parameter_count(model, config) -> int | None:
    """The trainable parameters `attach(model, config)` would create, computed without allocating them (None for
    a method that cannot tell). ValueError for a config whose numbers are not whole numbers >= 0."""
    method = get(config.method)
    if method.parameter_count is None:
        return None
    check_counts(type(config), dataclasses.asdict(config))
    return int(method.parameter_count(model, config))


def check_counts(config_class: type, settings: dict[str, Any]) -> None:
    """ValueError naming the setting when one whose default is a whole number holds anything else (a config read
    from JSON may hold a string or a float where a count belongs)."""
    for f in dataclasses.fields(config_class):
        value, default = settings.get(f.name, f.default), f.default
        counted = isinstance(default, int) and not isinstance(default, bool)
        if counted and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{config_class.method}: {f.name} is {value!r}; it must be a whole number >= 0")


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    """Exactly the parameters that train: what an adapter file holds."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_trainable(model) -> int:
    return sum(p.numel() for p in trainable_state_dict(model).values())


def optimizer_groups(model, lr: float) -> list[dict]:
    """Parameter groups for the optimizer; a method may ask for several learning rates."""
    config = attached_config(model)
    method = get(config.method) if config is not None else None
    if method is not None and method.optimizer_groups is not None:
        return method.optimizer_groups(model, config, lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
