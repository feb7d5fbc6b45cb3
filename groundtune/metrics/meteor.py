"""METEOR as the MultiDoc2Dial official scoring computes it: HF `evaluate`'s meteor, i.e. nltk's
`meteor_score` on `nltk.word_tokenize` tokens (alpha=0.9, beta=3, gamma=0.5), averaged over examples.

nltk's synonym stage needs WordNet, which is not on PyPI. We use nltk's own `wordnet` corpus when it is
installed, else the WordNet 3.0 dictionary of the Debian/Ubuntu package `wordnet-base` (the WordNet version
nltk's corpus holds), copied once into an nltk_data layout in the user's cache. The signature says which. Without either, METEOR is
reported as n/a with `wordnet:missing` in its signature rather than silently scored without synonyms.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path

from groundtune.metrics.base import Metric, MetricScore
from groundtune.metrics.tokenize import KoreanAnalysis, meteor_tokens

ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5
# nltk's alignment compares every prediction token with every reference token (quadratic time): each side is
# cut to its first MAX_TOKENS tokens, and the signature says so (cap=, and capped=N when any text was cut).
MAX_TOKENS = 2000
INSTALL_HINT = "METEOR needs WordNet: install the Debian/Ubuntu package `wordnet-base` (apt-get install wordnet-base)"

# Where WordNet 3.0 dictionaries live when installed from system packages. WNSEARCHDIR is WordNet's own
# variable for it.
SYSTEM_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/local/WordNet-3.0/dict",
                       "/opt/homebrew/share/wordnet", "/usr/share/wordnet/dict")
_WORDNET_FILES = ("index.noun", "index.verb", "index.adj", "index.adv", "data.noun", "data.verb", "data.adj",
                  "data.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc", "cntlist.rev")

# WordNet 3.0's lexicographer files (lexnames(5WN)); nltk's reader needs the file, wordnet-base omits it.
_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1",
    "noun.feeling 1", "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1",
    "noun.person 1", "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1",
    "verb.body 2", "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2",
    "verb.consumption 2", "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2",
    "verb.perception 2", "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)


def _system_wordnet_dir() -> Path | None:
    candidates = [os.environ.get("WNSEARCHDIR"), *SYSTEM_WORDNET_DIRS]
    for folder in filter(None, candidates):
        if all((Path(folder) / name).is_file() for name in ("index.noun", "data.noun", "data.adj")):
            return Path(folder)
    return None


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "groundtune" / "nltk_data"


def _lay_out(source: Path, root: Path) -> Path:
    """Copy a system WordNet dictionary into `root`/corpora/wordnet-system (once), where nltk may read it.

    A copy, not symlinks: nltk refuses files that resolve outside its data folders. Not named `wordnet`, so
    that `nltk.corpus.wordnet` elsewhere in the process does not pick up this partial copy (no index.sense)."""
    from groundtune.fileio import atomic_folder

    target = root / "corpora" / "wordnet-system"
    stamp = f"{source.resolve()} {(source / 'data.noun').stat().st_size}\n"
    if (target / "SOURCE").is_file() and (target / "SOURCE").read_text() == stamp:
        return target
    with atomic_folder(target) as tmp:
        for name in _WORDNET_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        (tmp / "lexnames").write_text("".join(f"{i:02d}\t{line.replace(' ', chr(9))}\n"
                                              for i, line in enumerate(_LEXNAMES)))
        # WordNet's licence asks for its notice on every copy.
        for notice in ("/usr/share/doc/wordnet-base/copyright", source / "LICENSE"):
            if Path(notice).is_file():
                shutil.copyfile(notice, tmp / "LICENSE")
                break
        (tmp / "SOURCE").write_text(stamp)
    return target


@functools.lru_cache(maxsize=1)
def load_wordnet():
    """(reader, source) for the WordNet METEOR uses, or (None, None) when none is installed."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30(WordNetCorpusReader):
        # nltk maps synsets of other WordNet versions onto 3.0 for the Open Multilingual Wordnet, reading
        # index.sense (which wordnet-base lacks). METEOR never uses it and this data already is 3.0.
        def map_wn(self, version="wordnet"):
            return None

    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()  # nltk.download("wordnet") done by the user: exactly what the official uses
        return wordnet, "nltk_data"
    except LookupError:
        pass
    system = _system_wordnet_dir()
    if system is None:
        return None, None
    root = _cache_root()
    folder = _lay_out(system, root)
    if str(root) not in map(str, nltk.data.path):
        nltk.data.path.append(str(root))  # nltk's sanctioned way to trust a data folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        return WordNet30(str(folder), None), str(system)


def wordnet_available() -> bool:
    """True when METEOR can use WordNet synonyms (install.sh asks this before offering wordnet-base)."""
    try:
        return load_wordnet()[0] is not None
    except (OSError, LookupError, ValueError):
        return False


class _NoWordNet:
    """Synonym stage switched off (Korean: English WordNet has nothing to say about Hangul morphemes)."""

    def synsets(self, word):
        return []


class _CachedWordNet:
    """The only WordNet call METEOR makes is `synsets(word)`; answering repeats from memory is what makes
    thousands of examples fast (agent utterances reuse a small vocabulary)."""

    def __init__(self, reader):
        self.synsets = functools.lru_cache(maxsize=None)(reader.synsets)


class _CachedStemmer:
    def __init__(self):
        from nltk.stem.porter import PorterStemmer

        self.stem = functools.lru_cache(maxsize=None)(PorterStemmer().stem)


class Meteor(Metric):
    name = "METEOR"

    def settings(self, lang: str, capped: int = 0, **found) -> dict[str, object]:
        import nltk

        if lang == "ko":
            wordnet = "off"
        else:
            reader, source = load_wordnet()
            origin = "nltk" if source == "nltk_data" else "system"
            wordnet = f"wn-{reader.get_version()}-{origin}" if reader is not None else "missing"
        out: dict[str, object] = {"tok": "kiwi" if lang == "ko" else "nltk-punkt-en", "stem": "porter",
                                  "wordnet": wordnet, "a": f"{ALPHA:g}", "b": f"{BETA:g}", "g": f"{GAMMA:g}",
                                  "cap": MAX_TOKENS}
        if capped:
            out["capped"] = capped
        out["version"] = f"nltk-{nltk.__version__}"
        return out

    def score(self, predictions, references, lang, analysis=None) -> MetricScore:
        counts: dict = {}
        values = meteor_per_example(predictions, references, lang, analysis, counts)
        if values is None:
            return MetricScore(self.name, None, self.signature(lang), INSTALL_HINT)
        return self.mean_x100(values, lang, capped=counts.get("capped", 0))


def meteor_per_example(predictions: list[str], references: list[list[str]], lang: str = "en",
                       analysis: KoreanAnalysis | None = None, counts: dict | None = None) -> list[float] | None:
    """nltk METEOR for each example (best over its references), in 0..1; None when WordNet is missing for
    English. Tokens are computed once per distinct text, and cut to MAX_TOKENS (`counts["capped"]` gets how
    many examples had a text cut)."""
    from nltk.translate.meteor_score import meteor_score

    if lang == "ko":
        wordnet = _NoWordNet()
    else:
        reader, _ = load_wordnet()
        if reader is None:
            return None
        wordnet = _CachedWordNet(reader)
    tokens = meteor_tokens([*predictions, *(r for refs in references for r in refs)], lang, analysis)
    cut = {text for text, toks in tokens.items() if len(toks) > MAX_TOKENS}
    tokens = {text: toks[:MAX_TOKENS] for text, toks in tokens.items()}
    if counts is not None:
        counts["capped"] = sum(1 for pred, refs in zip(predictions, references) if {pred, *refs} & cut)
    stemmer = _CachedStemmer()
    return [
        meteor_score([tokens[r] for r in refs], tokens[pred], stemmer=stemmer, wordnet=wordnet,
                     alpha=ALPHA, beta=BETA, gamma=GAMMA)
        for pred, refs in zip(predictions, references)
    ]
