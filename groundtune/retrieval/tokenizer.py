"""Text -> BM25 terms, chosen by language.

English goes through bm25s's own tokenizer (scikit-learn's word pattern, lowercase, English stopwords,
Snowball stemming when PyStemmer is installed). Korean glues particles and endings onto words, so
whitespace or regex tokens make "수도이다" and "수도" unrelated terms; Korean text is therefore cut into
Kiwi morphemes and only content morphemes are kept (nouns, verb/adjective stems, adverbs, roots,
foreign words, numbers): particles, endings and the copula are dropped, so "수도이다" -> ["수도"].
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from groundtune.errors import GroundtuneError

LANGUAGES = ("auto", "en", "ko")

# Kiwi tags that carry content. Bound nouns (수, 것), pronouns, determiners, auxiliaries, particles (J*),
# endings (E*), suffixes (XS*) and the copula (VCP, 이다) behave like stopwords and are dropped.
KOREAN_CONTENT_TAGS = frozenset(
    {"NNG", "NNP", "NR", "VV", "VA", "MAG", "XR", "SL", "SH", "SN", "W_URL", "W_EMAIL", "W_HASHTAG"}
)
_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s's (and scikit-learn's) default token pattern


@lru_cache(maxsize=1)
def _stemmer():
    """The English Snowball stemmer from PyStemmer, or None when it is not installed (then no stemming)."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _english_stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@dataclass(frozen=True)
class Tokenizer:
    """Language-aware BM25 tokenizer; its settings are saved with an index so queries are cut the same way.

    language: "en", "ko", or "auto" (each text on its own: Korean when `groundtune.korean.is_korean`).
    stem: stem English words (PyStemmer); None = when PyStemmer is installed. Fixed at build time.
    """

    language: str = "auto"
    stem: bool | None = None

    def __post_init__(self):
        if self.language not in LANGUAGES:
            raise GroundtuneError(f"language must be one of {LANGUAGES}, got {self.language!r}")
        if self.stem is None:
            object.__setattr__(self, "stem", _stemmer() is not None)
        elif self.stem and _stemmer() is None:
            raise ImportError("stem=True needs PyStemmer: pip install PyStemmer (or build with stem=False)")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, texts: list[str]) -> list[list[str]]:
        """Terms of each text, in order (repeats kept: BM25 counts them)."""
        from groundtune.korean import is_korean

        texts = list(texts)
        if self.language == "ko":
            korean = list(range(len(texts)))
        elif self.language == "en":
            korean = []
        else:
            korean = [i for i, t in enumerate(texts) if is_korean(t)]
        out: list[list[str]] = [None] * len(texts)  # type: ignore[list-item]
        for i, terms in zip(korean, self._korean([texts[i] for i in korean])):
            out[i] = terms
        for i, text in enumerate(texts):
            if out[i] is None:
                out[i] = self._english_words(_WORD.findall(text.lower()))
        return out

    def _english_words(self, words: list[str]) -> list[str]:
        stop = _english_stopwords()
        words = [w for w in words if w not in stop]
        return _stemmer().stemWords(words) if self.stem and words else words

    def _korean(self, texts: list[str]) -> list[list[str]]:
        from groundtune.korean import get_kiwi

        if not texts:
            return []
        out = []
        # One batched Kiwi call: much faster than a call per text.
        for tokens in get_kiwi().tokenize(texts):
            terms = []
            for t in tokens:
                tag = t.tag.split("-")[0]  # "VA-I" (irregular conjugation) -> "VA"
                if tag not in KOREAN_CONTENT_TAGS:
                    continue
                if tag == "SL":  # Latin words inside Korean text: same treatment as in English text
                    terms.extend(self._english_words(_WORD.findall(t.form.lower())))
                else:
                    terms.append(t.form)
            out.append(terms)
        return out
