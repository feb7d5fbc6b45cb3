"""SQuAD-style token F1, as the MultiDoc2Dial official scoring computes it (the SQuAD v1.1 script):
normalize_answer tokens, bag-of-tokens overlap, best over references, mean over examples."""

from __future__ import annotations

from collections import Counter

from groundtune.metrics.base import Metric, MetricScore
from groundtune.metrics.tokenize import KoreanAnalysis, f1_tokens


def token_f1(prediction: list[str], reference: list[str]) -> float:
    """F1 of two token lists, 0..1. No overlap (including two empty lists) is 0, as in the official script."""
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def f1_per_example(predictions: list[str], references: list[list[str]], lang: str = "en",
                   analysis: KoreanAnalysis | None = None) -> list[float]:
    """F1 of each example (best over its references), 0..1."""
    tokens = f1_tokens([*predictions, *(r for refs in references for r in refs)], lang, analysis)
    return [max(token_f1(tokens[pred], tokens[r]) for r in refs) for pred, refs in zip(predictions, references)]


class F1(Metric):
    name = "F1"

    def settings(self, lang: str, **found) -> dict[str, object]:
        from groundtune.version import __version__

        # The SQuAD v1.1 script's logic, written out here: it is a script, not a library to call.
        return {"tok": "squad+kiwi" if lang == "ko" else "squad", "lang": lang, "agg": "mean",
                "version": f"groundtune-{__version__}"}

    def score(self, predictions, references, lang, analysis=None) -> MetricScore:
        return self.mean_x100(f1_per_example(predictions, references, lang, analysis), lang)
