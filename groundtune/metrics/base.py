"""A metric is an object, in sacrebleu's manner: a name, its settings, and `score()`. Its signature is made from
those settings (the library version last), so that every reported number says how it was computed and two
numbers with the same signature are comparable:

    ROUGE-L|tok:default|stem:no|agg:mean|lcs_cap:2000|version:rouge_score-0.1.2
"""

from __future__ import annotations

from dataclasses import dataclass, field

from groundtune.metrics.tokenize import KoreanAnalysis


@dataclass
class MetricScore:
    name: str  # F1, SacreBLEU, METEOR, ROUGE-L, ROUGE-1
    value: float | None  # x100; None when the metric could not be computed (see note)
    signature: str
    note: str | None = None
    per_example: list[float] | None = field(default=None, repr=False)  # x100; None for corpus-level metrics
    # Corpus-level metrics only: per-example sufficient statistics whose sums give the corpus score (from_stats)
    corpus_stats: list[list[float]] | None = field(default=None, repr=False)

    @property
    def stats(self) -> list | None:
        """What the bootstrap resamples: the corpus statistics, else the per-example scores."""
        return self.corpus_stats if self.corpus_stats is not None else self.per_example


class Metric:
    """Subclasses set `name` and implement `settings(lang, **found)` and `compute(...)`."""

    name: str = ""

    def settings(self, lang: str, **found) -> dict[str, object]:
        """What the score depends on, in signature order, ending with the implementing library's version.
        `found` carries what scoring found out (e.g. how many texts were capped)."""
        raise NotImplementedError

    def signature(self, lang: str, **found) -> str:
        return "|".join([self.name, *(f"{k}:{v}" for k, v in self.settings(lang, **found).items())])

    def score(self, predictions: list[str], references: list[list[str]], lang: str,
              analysis: KoreanAnalysis | None = None) -> MetricScore:
        raise NotImplementedError

    def from_stats(self, totals, counts):
        """Scores (x100) from summed statistics: `totals` (resamples, k) sums of `MetricScore.stats` rows, each
        resample holding `counts` examples. For a mean metric that is the mean of the per-example scores."""
        return totals[:, 0] / counts

    def mean_x100(self, values: list[float], lang: str, **found) -> MetricScore:
        """The usual result: the plain mean of per-example values in 0..1, each x100."""
        per_example = [100 * v for v in values]
        return MetricScore(self.name, sum(per_example) / len(per_example), self.signature(lang, **found),
                           per_example=per_example)


def library_version(distribution: str) -> str:
    from importlib.metadata import version

    return f"{distribution}-{version(distribution)}"
