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
    # 95% percentile bootstrap interval per metric (groundtune.metrics.bootstrap); empty when not computed
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)

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
               "intervals": {k: None if v is None else list(v) for k, v in self.intervals.items()},
               "metrics": {name: {k: v for k, v in asdict(m).items() if k not in ("per_example", "corpus_stats")}
                           for name, m in self.metrics.items()}}
        if self.notes:
            out["notes"] = self.notes
        if per_example:
            out["per_example"] = self.per_example
            out["corpus_stats"] = {name: m.corpus_stats for name, m in self.metrics.items()
                                   if m.corpus_stats is not None}
            if self.ids is not None:
                out["ids"] = self.ids
        return out

    def to_json(self, per_example: bool = False) -> str:
        return json.dumps(self.as_dict(per_example), ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        """The report `as_dict(per_example=True)` wrote (results.json, eval --out): what a paired test needs."""
        per_example = data.get("per_example") or {}
        corpus = data.get("corpus_stats") or {}
        metrics = {name: MetricScore(name, value, signature, per_example=per_example.get(name),
                                     corpus_stats=corpus.get(name))
                   for (name, value), signature in zip(data["scores"].items(), data["signatures"])}
        intervals = {k: None if v is None else tuple(v) for k, v in (data.get("intervals") or {}).items()}
        return cls(data.get("lang", "en"), data["n"], metrics, per_example, data.get("ids"), intervals)

    def table(self) -> str:
        """A plain-text table: metric, score, its 95% interval, signature; then any notes."""
        rows = [(m.name, "n/a" if m.value is None else f"{m.value:.2f}", format_interval(self.intervals.get(m.name)),
                 m.signature) for m in self.metrics.values()]
        head = ("metric", "score", "95% CI", "signature")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
        lines = [f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  signature"]
        lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
        lines.append(f"({self.n} examples, lang={self.lang})")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def format_interval(interval) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"
