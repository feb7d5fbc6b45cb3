"""The KV cache under whichever name transformers uses for it.

transformers 5 renamed the cache argument and output field of every model from ``past_key_values`` to
``cache`` (the old name warns and goes away in 5.40). groundtune reads and passes the cache only through
these helpers, so the next rename is one edit here, and either name works while both exist.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

NAMES = ("cache", "past_key_values")  # newest first


def cache_from(source):
    """The cache in forward kwargs (a dict) or in a model output, whichever name it arrived under; else None."""
    for name in NAMES:
        value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
        if value is not None:
            return value
    return None


@lru_cache(maxsize=None)
def _forward_name(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return next((name for name in NAMES if name in parameters), NAMES[-1])


def cache_kwargs(model, cache) -> dict:
    """``{name: cache}`` for the name `model.forward` takes, to pass as ``model(..., **cache_kwargs(model, c))``."""
    # A wrapper such as peft's PeftModel forwards **kwargs: the wrapped model's signature decides.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_forward_name(type(base)): cache}


def past_length(cache) -> int:
    """How many positions the cache already holds (0 for none)."""
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2])  # legacy tuple caches
