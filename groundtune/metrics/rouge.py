"""ROUGE-1 and ROUGE-L F-measure with Google's rouge_score, as the MultiDoc2Dial official scoring computes
ROUGE-L (HF `evaluate`'s rouge: default tokenizer, no stemming, best over references).

Aggregation: the official script reports the median of a 1,000-sample bootstrap of the mean (rouge_score's
BootstrapAggregator, unseeded), a random estimate of the plain mean; we report the plain mean.
Korean: rouge_score's tokenizer keeps only [a-z0-9] and so deletes Hangul; Kiwi morphemes take its place.
"""

from __future__ import annotations

from groundtune.metrics.base import Metric, MetricScore, library_version
from groundtune.metrics.tokenize import KoreanAnalysis, TableTokenizer, rouge_tokens

ROUGE_TYPES = ("rouge1", "rougeL")
# ROUGE-L's longest common subsequence fills a table of len(prediction) x len(reference) cells (rouge_score
# keeps it as Python lists: ~420 MB at 5k words each, and quadratic time). Each side is cut to its first
# MAX_LCS_TOKENS tokens for ROUGE-L only, and the signature says so (lcs_cap=, and capped=N when any was cut).
MAX_LCS_TOKENS = 2000


class _Capped:
    """A rouge_score tokenizer that keeps the first `cap` tokens of each text, counting the texts it cut."""

    def __init__(self, inner, cap: int):
        self.inner, self.cap, self.cut = inner, cap, set()

    def tokenize(self, text):
        tokens = self.inner.tokenize(text)
        if len(tokens) > self.cap:
            self.cut.add(text)
        return tokens[:self.cap]


def rouge_per_example(predictions: list[str], references: list[list[str]], lang: str = "en",
                      analysis: KoreanAnalysis | None = None, types=ROUGE_TYPES,
                      max_lcs_tokens: int = MAX_LCS_TOKENS) -> dict[str, list[float]]:
    """{"rouge1": [...], "rougeL": [...]} for the requested `types`: F-measure per example in 0..1, plus
    "capped": how many examples had a text cut to `max_lcs_tokens` for ROUGE-L."""
    from rouge_score import rouge_scorer, tokenizers

    if lang == "ko":
        table = rouge_tokens([*predictions, *(r for refs in references for r in refs)], analysis)
        tokenizer = TableTokenizer(table, lambda text: rouge_tokens([text])[text])
    else:
        tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
    capped = _Capped(tokenizer, max_lcs_tokens)
    scorers = {t: rouge_scorer.RougeScorer([t], use_stemmer=False, tokenizer=capped if t == "rougeL" else tokenizer)
               for t in types}
    out: dict = {t: [] for t in types}
    examples_cut = 0
    for pred, refs in zip(predictions, references):
        for t, scorer in scorers.items():
            scores = scorer.score(refs[0], pred) if len(refs) == 1 else scorer.score_multi(refs, pred)
            out[t].append(scores[t].fmeasure)
        if capped.cut:
            examples_cut += 1
            capped.cut.clear()
    out["capped"] = examples_cut
    return out


class Rouge(Metric):
    """One ROUGE type; only the requested types are built."""

    def __init__(self, name: str, rouge_type: str):
        self.name, self.rouge_type = name, rouge_type

    def settings(self, lang: str, capped: int = 0, **found) -> dict[str, object]:
        out: dict[str, object] = {"tok": "kiwi" if lang == "ko" else "default", "stem": "no", "agg": "mean"}
        if self.rouge_type == "rougeL":
            out["lcs_cap"] = MAX_LCS_TOKENS
            if capped:
                out["capped"] = capped
        out["version"] = library_version("rouge-score")
        return out

    def score(self, predictions, references, lang, analysis=None) -> MetricScore:
        values = rouge_per_example(predictions, references, lang, analysis, types=[self.rouge_type])
        return self.mean_x100(values[self.rouge_type], lang, capped=values["capped"])
