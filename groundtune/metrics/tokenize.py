"""The tokenisations behind each metric, per language.

English reproduces the MultiDoc2Dial official scoring exactly: SQuAD's `normalize_answer` for F1 and
`nltk.word_tokenize` (Punkt English sentences, then NLTK's Treebank words) for METEOR. ROUGE and BLEU use
their libraries' own defaults, so they need nothing here.

Korean uses Kiwi morphemes: whitespace words glue particles and endings onto stems, and rouge_score's default
tokenizer deletes Hangul altogether.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from pathlib import Path

from groundtune.korean import morphemes, morphemes_batch

_PUNKT_EN = Path(__file__).resolve().parent.parent / "assets" / "punkt_tab" / "english"
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, drop ASCII punctuation and English articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1_tokens(text: str, lang: str = "en") -> list[str]:
    """Tokens that SQuAD-style F1 compares: normalised words (en) or normalised Kiwi morphemes (ko)."""
    if lang == "ko":
        return morphemes(normalize_answer(text), drop_punct=True)
    return normalize_answer(text).split()


def f1_tokens_batch(texts, lang: str = "en") -> dict[str, list[str]]:
    """{text: f1_tokens(text)} for many texts (Kiwi analyses them in one call)."""
    texts = list(dict.fromkeys(texts))
    if lang == "ko":
        return dict(zip(texts, morphemes_batch([normalize_answer(t) for t in texts], drop_punct=True)))
    return {text: normalize_answer(text).split() for text in texts}


@lru_cache(maxsize=1)
def _punkt_english():
    # nltk.word_tokenize needs the `punkt_tab` data, which is not on PyPI; the English model ships with
    # groundtune (assets/punkt_tab/SOURCE.md), so METEOR's tokens never depend on a download. Read here as
    # nltk's load_punkt_params does: nltk's path sandbox refuses files outside its nltk_data folders.
    from nltk.tabdata import PunktDecoder
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    decode, params = PunktDecoder(), PunktParameters()
    with open(_PUNKT_EN / "collocations.tab", encoding="utf-8") as f:
        params.collocations = set(decode.tab2tups(f))
    with open(_PUNKT_EN / "sent_starters.txt", encoding="utf-8") as f:
        params.sent_starters = decode.txt2set(f)
    with open(_PUNKT_EN / "abbrev_types.txt", encoding="utf-8") as f:
        params.abbrev_types = decode.txt2set(f)
    with open(_PUNKT_EN / "ortho_context.tab", encoding="utf-8") as f:
        params.ortho_context = decode.tab2intdict(f)
    return PunktSentenceTokenizer(params)


@lru_cache(maxsize=1)
def _treebank():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """Exactly `nltk.word_tokenize(text)` (language="english"), with the bundled Punkt English model."""
    words = _treebank()
    return [token for sentence in _punkt_english().tokenize(text) for token in words.tokenize(sentence)]


def meteor_tokens(text: str, lang: str = "en") -> list[str]:
    """Tokens METEOR aligns: nltk.word_tokenize (en) or Kiwi morphemes with punctuation kept, as in English."""
    return morphemes(text) if lang == "ko" else word_tokenize(text)


def meteor_tokens_batch(texts, lang: str = "en") -> dict[str, list[str]]:
    """{text: meteor_tokens(text)} for many texts (Kiwi analyses them in one call)."""
    texts = list(dict.fromkeys(texts))
    if lang == "ko":
        return dict(zip(texts, morphemes_batch(texts)))
    return {text: word_tokenize(text) for text in texts}


class KiwiRougeTokenizer:
    """rouge_score tokenizer for Korean: lower-cased Kiwi morphemes without punctuation (rouge_score's own
    tokenizer likewise keeps only letters and digits). `warm` analyses many texts in one Kiwi call."""

    def __init__(self):
        self._known: dict[str, list[str]] = {}

    def warm(self, texts) -> None:
        texts = [t for t in dict.fromkeys(texts) if t not in self._known]
        self._known.update(zip(texts, morphemes_batch([t.lower() for t in texts], drop_punct=True)))

    def tokenize(self, text: str) -> list[str]:
        if text not in self._known:
            self._known[text] = morphemes(text.lower(), drop_punct=True)
        return self._known[text]
