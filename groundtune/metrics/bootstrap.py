"""Bootstrap confidence intervals and the paired bootstrap test, over examples, for every metric.

A metric keeps per-example sufficient statistics (`MetricScore.stats`, one row per example): its per-example
score for the metrics that are means (F1, METEOR, ROUGE), and sacrebleu's n-gram counts for corpus-level
SacreBLEU, so that a resample is scored as a corpus again (as sacrebleu's own bootstrap does) rather than as
a mean of sentence BLEUs. Resampling is done by example counts: resample r weights example i by how many times
it was drawn, and its corpus statistics are `weights @ stats`.

    intervals(report)                 -> {"F1": (lo, hi), ...}   95% percentile interval, 1,000 resamples
    paired_bootstrap(report_a, report_b) -> {"F1": p, ...}       as sacrebleu --paired-bs (ties: see below)

The resamples are drawn from numpy's default_rng(SEED) with `rng.choice(n, (resamples, n))`, as sacrebleu's
paired bootstrap draws them, so two runs over the same number of examples use the same resamples.
"""

from __future__ import annotations

import numpy as np
from groundtune.errors import GroundtuneError

RESAMPLES = 1000
LEVEL = 95  # percent
SEED = 12345  # sacrebleu's default SACREBLEU_SEED
SIGNATURE = f"ci:bootstrap-{RESAMPLES}-{LEVEL}"


def resample_weights(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) counts: how often each example is drawn in each resample (rows sum to n)."""
    if n < 1:
        raise GroundtuneError("bootstrap needs at least one example")
    rng = np.random.default_rng(seed)
    drawn = rng.choice(n, size=(resamples, n), replace=True)
    weights = np.zeros((resamples, n), dtype=np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], drawn), 1.0)
    return weights


def resampled_scores(metric, stats, weights: np.ndarray) -> np.ndarray:
    """The metric's score (x100) on every resample described by `weights`."""
    rows = np.asarray(stats, dtype=np.float64).reshape(weights.shape[1], -1)
    return np.asarray(metric.from_stats(weights @ rows, weights.sum(axis=1)), dtype=np.float64)


def percentile_interval(scores: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile method: the (100-level)/2 and (100+level)/2 percentiles of the resampled scores."""
    tail = (100 - level) / 2
    lo, hi = np.percentile(scores, [tail, 100 - tail])
    return float(lo), float(hi)


def intervals(report, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, tuple[float, float] | None]:
    """95% percentile bootstrap interval of every metric of `report` (None where the metric has no value)."""
    from groundtune.metrics.registry import METRICS

    weights = resample_weights(report.n, resamples, seed)
    out = {}
    for name, result in report.metrics.items():
        stats = result.stats
        out[name] = None if result.value is None or stats is None else percentile_interval(
            resampled_scores(METRICS[name], stats, weights))
    return out


def p_value(scores_a: np.ndarray, scores_b: np.ndarray, observed: float) -> float:
    """sacrebleu's paired bootstrap p-value (significance._paired_bs_test): the resampled absolute differences,
    centred on their mean, against the observed absolute difference, with the +1 correction.

    One change: a resampled difference that *ties* the observed one counts as at least as extreme (>=, where
    sacrebleu counts only >). sacrebleu's strict > gives a system compared with itself p = 1/1001, "significant";
    with >= it gets p = 1, and any difference that is not a tie is counted exactly as sacrebleu counts it."""
    diffs = np.abs(scores_a - scores_b)
    centred = diffs - diffs.mean()
    # a tolerance for the float noise of summing the same statistics in a different order
    extreme = int(np.sum(centred >= abs(observed) - 1e-9))
    return (extreme + 1) / (len(diffs) + 1)


def paired_bootstrap(report_a, report_b, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, float | None]:
    """p-value per metric that systems a and b, scored on the same examples in the same order, differ by chance.

    Raises ValueError when the two reports are not over the same examples (their ids, when both have them)."""
    from groundtune.metrics.registry import METRICS

    if report_a.n != report_b.n:
        raise GroundtuneError(f"a paired test needs the same examples: {report_a.n} vs {report_b.n} examples")
    if report_a.ids is not None and report_b.ids is not None and list(report_a.ids) != list(report_b.ids):
        raise GroundtuneError("a paired test needs the same examples in the same order: the two reports' ids differ")
    weights = resample_weights(report_a.n, resamples, seed)
    out = {}
    for name in report_a.metrics:
        a, b = report_a.metrics[name], report_b.metrics.get(name)
        if b is None or a.value is None or b.value is None or a.stats is None or b.stats is None:
            out[name] = None
            continue
        metric = METRICS[name]
        out[name] = p_value(resampled_scores(metric, a.stats, weights), resampled_scores(metric, b.stats, weights),
                            a.value - b.value)
    return out
