"""Korean text helpers shared by the metrics and retrieval: one cached Kiwi analyser, morphemes, detection.

Korean glues particles and endings onto words (수도이다 = 수도 + 이 + 다), so whitespace tokens make
"수도이다" and "수도" two unrelated words. Scoring and BM25 on Kiwi morphemes gives such pairs the
partial credit they deserve.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

# Kiwi tags for punctuation and symbols. SL (Latin), SH (hanja) and SN (numbers) carry content and stay.
PUNCT_TAGS = frozenset({"SF", "SP", "SS", "SSO", "SSC", "SE", "SO", "SW", "W_EMOJI"})


@lru_cache(maxsize=1)
def get_kiwi():
    """The process-wide Kiwi analyser (loading its model takes about a second, so it is built once)."""
    from kiwipiepy import Kiwi

    return Kiwi()


def morphemes(text: str, *, drop_punct: bool = False) -> list[str]:
    """Kiwi morpheme surface forms of `text`, e.g. "서울은 수도이다." -> [서울, 은, 수도, 이, 다, .]."""
    if not text or text.isspace():
        return []
    return [t.form for t in get_kiwi().tokenize(text) if not (drop_punct and t.tag in PUNCT_TAGS)]


def analyse_batch(texts: Iterable[str]) -> list[list[tuple[str, str]]]:
    """(form, tag) of each morpheme of each text, in one Kiwi call; empty texts give []."""
    texts = list(texts)
    out: list[list[tuple[str, str]]] = [[] for _ in texts]
    todo = [i for i, t in enumerate(texts) if t and not t.isspace()]
    for i, tokens in zip(todo, get_kiwi().tokenize([texts[i] for i in todo])):
        out[i] = [(t.form, t.tag) for t in tokens]
    return out


def _is_hangul(ch: str) -> bool:
    code = ord(ch)
    return (
        0xAC00 <= code <= 0xD7A3  # syllables
        or 0x1100 <= code <= 0x11FF  # jamo
        or 0x3130 <= code <= 0x318F  # compatibility jamo
        or 0xA960 <= code <= 0xA97F  # jamo extended-A
        or 0xD7B0 <= code <= 0xD7FF  # jamo extended-B
    )


def hangul_ratio(text: str) -> float:
    """Share of Hangul among the letters of `text` (digits, spaces and punctuation do not count)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(map(_is_hangul, letters)) / len(letters)


def is_korean(text: str, threshold: float = 0.3) -> bool:
    """True when at least `threshold` of the letters are Hangul (Korean text often mixes in Latin terms)."""
    return hangul_ratio(text) >= threshold
