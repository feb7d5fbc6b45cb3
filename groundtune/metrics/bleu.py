"""Corpus SacreBLEU, as the MultiDoc2Dial official scoring computes it (HF `evaluate`'s sacrebleu with its
defaults: 13a tokens, exp smoothing, mixed case). Korean uses sacrebleu's ko-mecab morphemes, or characters
when mecab-ko is not installed; the signature says which."""

from __future__ import annotations

from functools import lru_cache


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


def corpus_bleu(predictions: list[str], references: list[list[str]], lang: str = "en") -> tuple[float, str]:
    """(BLEU x100, sacrebleu signature). Examples may have different numbers of references."""
    bleu = _bleu(lang)
    depth = max(map(len, references))
    # sacrebleu takes one stream per reference position; None pads examples with fewer references.
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]
    result = bleu.corpus_score(predictions, streams)
    return result.score, f"sacrebleu:{bleu.get_signature()}"
