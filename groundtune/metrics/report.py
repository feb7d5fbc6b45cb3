"""What `score` returns: each metric x100 with the signature of the settings that produced it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from groundtune.metrics.base import MetricScore


@dataclass
class Report:
    lang: str
    n: int
    metrics: dict[str, MetricScore]
    # Per-example scores (x100) for the metrics that have them (all but corpus-level SacreBLEU).
    per_example: dict[str, list[float]] = field(default_factory=dict, repr=False)
    ids: list[str] | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> float | None:
        return self.metrics[name].value

    @property
    def scores(self) -> dict[str, float | None]:
        return {name: m.value for name, m in self.metrics.items()}

    @property
    def signatures(self) -> list[str]:
        return [m.signature for m in self.metrics.values()]

    @property
    def notes(self) -> list[str]:
        return [f"{m.name}: {m.note}" for m in self.metrics.values() if m.note]

    def as_dict(self, per_example: bool = False) -> dict:
        out = {"lang": self.lang, "n": self.n, "scores": self.scores, "signatures": self.signatures,
               "metrics": {name: {k: v for k, v in asdict(m).items() if k != "per_example"}
                           for name, m in self.metrics.items()}}
        if self.notes:
            out["notes"] = self.notes
        if per_example:
            out["per_example"] = self.per_example
            if self.ids is not None:
                out["ids"] = self.ids
        return out

    def to_json(self, per_example: bool = False) -> str:
        return json.dumps(self.as_dict(per_example), ensure_ascii=False, indent=2) + "\n"

    def table(self) -> str:
        """A plain-text table: metric, score, signature; then any notes."""
        rows = [(m.name, "n/a" if m.value is None else f"{m.value:.2f}", m.signature) for m in self.metrics.values()]
        widths = [max(len(r[i]) for r in [("metric", "score", "signature"), *rows]) for i in range(2)]
        lines = [f"{'metric':<{widths[0]}}  {'score':>{widths[1]}}  signature"]
        lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}" for a, b, c in rows]
        lines.append(f"({self.n} examples, lang={self.lang})")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"
