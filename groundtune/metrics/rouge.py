"""ROUGE-1 and ROUGE-L F-measure with Google's rouge_score, as the MultiDoc2Dial official scoring computes
ROUGE-L (HF `evaluate`'s rouge: default tokenizer, no stemming, best over references).

Aggregation: the official script reports the median of a 1,000-sample bootstrap of the mean (rouge_score's
BootstrapAggregator, unseeded), a random estimate of the plain mean; we report the plain mean.
Korean: rouge_score's tokenizer keeps only [a-z0-9] and so deletes Hangul; Kiwi morphemes take its place.
"""

from __future__ import annotations

from groundtune.metrics.tokenize import KoreanAnalysis, TableTokenizer, rouge_tokens

ROUGE_TYPES = ("rouge1", "rougeL")


def rouge_per_example(predictions: list[str], references: list[list[str]], lang: str = "en",
                      analysis: KoreanAnalysis | None = None) -> dict[str, list[float]]:
    """{"rouge1": [...], "rougeL": [...]}: F-measure per example in 0..1."""
    from rouge_score import rouge_scorer

    tokenizer = None
    if lang == "ko":
        table = rouge_tokens([*predictions, *(r for refs in references for r in refs)], analysis)
        tokenizer = TableTokenizer(table, lambda text: rouge_tokens([text])[text])
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=tokenizer)
    out = {t: [] for t in ROUGE_TYPES}
    for pred, refs in zip(predictions, references):
        scores = scorer.score(refs[0], pred) if len(refs) == 1 else scorer.score_multi(refs, pred)
        for t in ROUGE_TYPES:
            out[t].append(scores[t].fmeasure)
    return out


def signature(rouge_type: str, lang: str) -> str:
    from importlib.metadata import version

    tok = "kiwi" if lang == "ko" else "default"
    return f"{rouge_type}:rouge_score-{version('rouge-score')}|tok={tok}|stem=no|agg=mean"
