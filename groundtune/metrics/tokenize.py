"""The tokenisations behind each metric, per language.

English reproduces the MultiDoc2Dial official scoring exactly: SQuAD's `normalize_answer` for F1 and
`nltk.word_tokenize` (Punkt English sentences, then NLTK's Treebank words) for METEOR. ROUGE and BLEU use
their libraries' own defaults, so they need nothing here.

Korean uses Kiwi morphemes: whitespace words glue particles and endings onto stems, and rouge_score's default
tokenizer deletes Hangul altogether. Each text is analysed once (`korean_analysis`) and every metric takes its
own view of that analysis: METEOR all morphemes (punctuation too, as word_tokenize keeps it), ROUGE lower-cased
morphemes without punctuation, F1 the same passed through normalize_answer.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from groundtune.korean import PUNCT_TAGS, analyse_batch

_PUNKT_EN = Path(__file__).resolve().parent.parent / "assets" / "punkt_tab" / "english"
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

KoreanAnalysis = dict[str, list[tuple[str, str]]]  # text -> Kiwi (form, tag) per morpheme


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, drop ASCII punctuation and English articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def korean_analysis(texts: Iterable[str], known: KoreanAnalysis | None = None) -> KoreanAnalysis:
    """Kiwi analyses of the distinct texts (one Kiwi call), added to `known` when given."""
    known = {} if known is None else known
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    known.update(zip(todo, analyse_batch(todo)))
    return known


def _korean_view(kind: str, tokens: list[tuple[str, str]]) -> list[str]:
    if kind == "meteor":
        return [form for form, _ in tokens]
    words = [form.lower() for form, tag in tokens if tag not in PUNCT_TAGS]
    return words if kind == "rouge" else [w for form in words for w in normalize_answer(form).split()]


def _table(kind: str, texts: Iterable[str], lang: str, analysis: KoreanAnalysis | None, english) -> dict[str, list[str]]:
    texts = list(dict.fromkeys(texts))
    if lang == "ko":
        analysis = korean_analysis(texts, analysis)
        return {t: _korean_view(kind, analysis[t]) for t in texts}
    return {t: english(t) for t in texts}


def f1_tokens(texts: Iterable[str], lang: str = "en", analysis: KoreanAnalysis | None = None) -> dict[str, list[str]]:
    """{text: tokens SQuAD-style F1 compares}: normalize_answer words (en) or normalised Kiwi morphemes (ko)."""
    return _table("f1", texts, lang, analysis, lambda t: normalize_answer(t).split())


def meteor_tokens(texts: Iterable[str], lang: str = "en", analysis: KoreanAnalysis | None = None) -> dict[str, list[str]]:
    """{text: tokens METEOR aligns}: nltk.word_tokenize (en) or Kiwi morphemes, punctuation kept (ko)."""
    return _table("meteor", texts, lang, analysis, word_tokenize)


def rouge_tokens(texts: Iterable[str], analysis: KoreanAnalysis | None = None) -> dict[str, list[str]]:
    """{text: lower-cased Kiwi morphemes without punctuation}: Korean ROUGE tokens (English ROUGE keeps
    rouge_score's own tokenizer, which likewise keeps only letters and digits)."""
    return _table("rouge", texts, "ko", analysis, None)


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


class TableTokenizer:
    """A rouge_score tokenizer that answers from a precomputed {text: tokens} table."""

    def __init__(self, table: dict[str, list[str]], fallback):
        self.table, self.fallback = table, fallback

    def tokenize(self, text: str) -> list[str]:
        tokens = self.table.get(text)
        return self.fallback(text) if tokens is None else tokens
