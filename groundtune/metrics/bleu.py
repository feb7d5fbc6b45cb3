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


def _bleu(lang: str):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=korean_tokenizer()) if lang == "ko" else BLEU()


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
        return MetricScore(self.name, result.score, self.signature(lang, bleu=bleu))
