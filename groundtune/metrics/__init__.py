"""Generation metrics x100 with signatures: SQuAD F1, SacreBLEU, METEOR, ROUGE-L and ROUGE-1.

On English they reproduce the MultiDoc2Dial official scoring; on Korean they tokenise into Kiwi morphemes
(ko-mecab for SacreBLEU) so that particles and endings do not turn matches into misses.

    from groundtune.metrics import score
    report = score(predictions, references, lang="auto")
    print(report.table()); report["F1"]; report.signatures
"""

from __future__ import annotations

from typing import Iterable, Sequence

from groundtune.metrics.base import Metric, MetricScore
from groundtune.metrics.predictions import Predictions, read_predictions, write_predictions
from groundtune.metrics.registry import METRICS
from groundtune.metrics.report import Report
from groundtune.errors import GroundtuneError
LANGS = ("en", "ko", "auto")

__all__ = ["METRICS", "Metric", "MetricScore", "Predictions", "Report", "read_predictions", "resolve_lang",
           "score", "write_predictions"]


def resolve_lang(lang: str, references: Sequence[Sequence[str]]) -> str:
    """"auto" becomes "ko" when the references are mostly Hangul (groundtune.korean.is_korean), else "en"."""
    if lang not in LANGS:
        raise GroundtuneError(f"lang must be one of {LANGS}, not {lang!r}")
    if lang != "auto":
        return lang
    from groundtune.korean import is_korean

    return "ko" if is_korean(" ".join(r for refs in references for r in refs)) else "en"


def _check(predictions, references) -> tuple[list[str], list[list[str]]]:
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise GroundtuneError(f"{len(predictions)} predictions but {len(references)} references: pass one reference "
                         "(or a list of references) per prediction")
    if not predictions:
        raise GroundtuneError("nothing to score: no predictions")
    refs_out = []
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise GroundtuneError(f"predictions[{i}] is {type(pred).__name__}, not a string")
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise GroundtuneError(f"references[{i}] must be a string or a non-empty list of strings, not {refs!r}")
        refs_out.append(refs)
    return predictions, refs_out


def score(predictions: Iterable[str], references: Iterable[str | Sequence[str]], lang: str = "auto",
          metrics: Iterable[str] | None = None, ids: Sequence[str] | None = None, ci: bool = True) -> Report:
    """Score predictions against references (each a string or a list of strings; the best reference counts).

    lang: "en" (the MultiDoc2Dial official scoring), "ko" (Kiwi morphemes; ko-mecab for SacreBLEU) or "auto"
    (by the share of Hangul in the references). metrics: names from METRICS (default all); only those are computed. METEOR on English
    needs WordNet; without it, its value is None and its signature says wordnet:missing.
    ci: also a 95% percentile bootstrap interval per metric (1,000 resamples of the examples, a fixed seed;
    groundtune.metrics.bootstrap), and each signature then says ci:bootstrap-1000-95. The scores do not change.
    """
    from groundtune.metrics.tokenize import korean_analysis

    predictions, references = _check(predictions, references)
    wanted = list(METRICS if metrics is None else metrics)
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise GroundtuneError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    lang = resolve_lang(lang, references)
    # Korean: one Kiwi analysis per distinct text, shared by every metric.
    analysis = korean_analysis([*predictions, *(r for refs in references for r in refs)]) if lang == "ko" else None
    results = {name: METRICS[name].score(predictions, references, lang, analysis) for name in wanted}
    per_example = {name: r.per_example for name, r in results.items() if r.per_example is not None}
    report = Report(lang=lang, n=len(predictions), metrics=results, per_example=per_example,
                    ids=list(ids) if ids is not None else None)
    if ci:
        from groundtune.metrics.bootstrap import SIGNATURE, intervals

        report.intervals = intervals(report)
        for result in results.values():  # sacrebleu's manner: the bootstrap is part of the signature, version last
            head, sep, version = result.signature.rpartition("|version:")
            result.signature = f"{head}|{SIGNATURE}{sep}{version}" if sep else f"{result.signature}|{SIGNATURE}"
    return report
