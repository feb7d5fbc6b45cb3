"""Corpus SacreBLEU, as the MultiDoc2Dial official scoring computes it (HF `evaluate`'s sacrebleu with its
defaults: 13a tokens, exp smoothing, mixed case). Korean uses sacrebleu's ko-mecab morphemes, or characters
when mecab-ko is not installed; the signature says which."""

from __future__ import annotations

from functools import lru_cache

from groundtune.metrics.base import Metric, MetricScore


@lru_cache(maxsize=1)
def korean_tokenizer() -> str:
    try:
        from sacrebleu.tokenizers.tokenizer_ko_mecab import TokenizerKoMecab

        TokenizerKoMecab()  # needs mecab-ko and its dictionary (sacrebleu[ko])
        return "ko-mecab"
    except Exception:  # ImportError, or mecab's RuntimeError when its dictionary is missing
        return "char"


def _bleu(lang: str, **options):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=korean_tokenizer(), **options) if lang == "ko" else BLEU(**options)


def _stats_row(score) -> list[float]:
    """sacrebleu's sufficient statistics of one sentence: sys_len, ref_len, matches and totals per n-gram order."""
    return [score.sys_len, score.ref_len, *score.counts, *score.totals]


class SacreBLEU(Metric):
    """Corpus-level: no per-example values. The settings are sacrebleu's own signature fields."""

    name = "SacreBLEU"

    def settings(self, lang: str, **found) -> dict[str, object]:
        # sacrebleu's own signature ("nrefs:1|case:mixed|...|version:2.6.0"), field by field
        return dict(field.split(":", 1) for field in str(found["bleu"].get_signature()).split("|"))

    def score(self, predictions, references, lang, analysis=None) -> MetricScore:
        bleu = _bleu(lang)
        depth = max(map(len, references))
        # sacrebleu takes one stream per reference position; None pads examples with fewer references.
        streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]
        result = bleu.corpus_score(predictions, streams)
        # Per-sentence statistics for the bootstrap, through sacrebleu's public sentence_score. Their sums are
        # exactly corpus_score's statistics; effective_order only changes a sentence's score, not its counts
        # (and silences sacrebleu's warning that sentence BLEU wants it).
        sentence = _bleu(lang, effective_order=True)
        stats = [_stats_row(sentence.sentence_score(p, refs)) for p, refs in zip(predictions, references)]
        return MetricScore(self.name, result.score, self.signature(lang, bleu=bleu), corpus_stats=stats)

    def from_stats(self, totals, counts):
        """Corpus BLEU of each resample from its summed statistics, with the corpus scorer's settings."""
        from sacrebleu.metrics import BLEU

        bleu = _bleu("en")  # smoothing and n-gram order: the same for every tokenizer
        order = bleu.max_ngram_order
        return [BLEU.compute_bleu(correct=[int(c) for c in row[2:2 + order]],
                                  total=[int(t) for t in row[2 + order:2 + 2 * order]],
                                  sys_len=int(row[0]), ref_len=int(row[1]), smooth_method=bleu.smooth_method,
                                  smooth_value=bleu.smooth_value, max_ngram_order=order).score for row in totals]
