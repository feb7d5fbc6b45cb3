"""Allowed ranges of numeric settings, declared on the config dataclass field they belong to.

Low in the house on purpose: a method file imports this (not ``groundtune.config``) to declare its ranges, so
the config layer and the methods never import each other. A field declares its range as

    length: int = ranged(60, COUNT)

which is ``dataclasses.field(default=60, metadata={"range": COUNT})``; the config checker
(``groundtune.config.check_value`` / ``validate`` / ``check_method``) reads it back with ``range_of``. A field
that declares none may hold any number of its type.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple


class Range(NamedTuple):
    """Allowed values of a numeric setting: lo < x (lo <= x when closed) and x < hi (x <= hi when closed)."""

    lo: float | None = None
    hi: float | None = None
    lo_closed: bool = True
    hi_closed: bool = True

    def __contains__(self, x) -> bool:
        if self.lo is not None and (x < self.lo if self.lo_closed else x <= self.lo):
            return False
        return not (self.hi is not None and (x > self.hi if self.hi_closed else x >= self.hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return ("[" if self.lo_closed and self.lo is not None else "(") + f"{lo}, {hi}" + (
            "]" if self.hi_closed and self.hi is not None else ")")


ANY = Range()
POSITIVE = Range(0, None, lo_closed=False)  # learning rates, scales: > 0
COUNT = Range(1)  # sizes and step counts: >= 1
NONNEG = Range(0)  # seeds, turns, ranks that may be switched off: >= 0
SHARE = Range(0, 1, hi_closed=False)  # a fraction that must leave something: [0, 1)
FRACTION = Range(0, 1)  # [0, 1]

_KEY = "range"


def ranged(default: Any = dataclasses.MISSING, allowed: Range = ANY, **field_options) -> Any:
    """A dataclass field whose numeric value must lie in `allowed` (checked when a config is read)."""
    metadata = {**field_options.pop("metadata", {}), _KEY: allowed}
    return dataclasses.field(default=default, metadata=metadata, **field_options)


def range_of(field: dataclasses.Field) -> Range:
    """The range a dataclass field declares (any number when it declares none)."""
    return field.metadata.get(_KEY, ANY)
