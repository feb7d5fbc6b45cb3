"""groundtune.metrics against the MultiDoc2Dial official recipe run with the libraries directly, and Korean."""

import json
import re
import shutil
import string
from collections import Counter

import pytest

from groundtune.metrics import METRICS, read_predictions, resolve_lang, score, write_predictions
from groundtune.metrics import meteor as meteor_mod
from groundtune.metrics.tokenize import _PUNKT_EN, word_tokenize

# Agent-style turns written for these tests: several sentences, abbreviations, contractions, numbers, an
# empty prediction and one with nothing in common with its reference.
PREDICTIONS = [
    "You can renew your license online. It takes about 10 minutes.",
    "Yes, you'll need a U.S. passport or a birth certificate, e.g. a certified copy.",
    "The fee is $25. Do you want to know how to pay it?",
    "Sorry, I don't know.",
    "",
    "Please phone the office at 1-800-772-1213 before visiting. Mr. Smith can help you.",  # phone~call (WordNet)
    "Benefits are paid monthly to retired workers",
    "Apply at least 3 months before you turn 65; you may apply online.",
]
REFERENCES = [
    "You may renew your driver's license online, which usually takes 10 minutes or less.",
    "You will need proof of U.S. citizenship, e.g. a passport or a certified birth certificate.",
    "The renewal fee is $25 and you can pay it by card. Would you like more details?",
    "Bring two proofs of residency to the DMV office.",
    "Is there anything else I can help you with?",
    "Call 1-800-772-1213 and ask for Mr. Smith at the local office.",
    "A monthly benefit is paid to each retiring worker and their families.",  # stems differ
    "You can apply online up to 4 months before you turn 65.",
]


def official_f1(prediction, truth):
    """The SQuAD v1.1 script's normalize_answer + f1_score, which the official MultiDoc2Dial scoring imports."""

    def normalize(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    p, t = normalize(prediction).split(), normalize(truth).split()
    same = sum((Counter(p) & Counter(t)).values())
    if same == 0:
        return 0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


@pytest.fixture
def nltk_punkt(tmp_path, monkeypatch):
    """Let nltk.word_tokenize itself find the bundled Punkt English model, as it would after nltk.download."""
    import nltk

    shutil.copytree(_PUNKT_EN, tmp_path / "tokenizers" / "punkt_tab" / "english")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])
    return nltk


@pytest.fixture(scope="module")
def wordnet():
    reader, _ = meteor_mod.load_wordnet()
    if reader is None:
        pytest.skip("WordNet not installed (apt-get install wordnet-base)")
    return reader


def test_word_tokenize_is_nltk_word_tokenize(nltk_punkt):
    texts = PREDICTIONS + REFERENCES + ['He said "no." Then he left... Dr. Who? It\'s 3.5 p.m. in the U.K. Ok!']
    for text in texts:
        assert word_tokenize(text) == nltk_punkt.word_tokenize(text)


def test_english_matches_official_recipe(nltk_punkt, wordnet):
    import sacrebleu
    from nltk.translate.meteor_score import single_meteor_score
    from rouge_score import rouge_scorer

    report = score(PREDICTIONS, REFERENCES, lang="en")
    assert report.lang == "en" and report.n == len(PREDICTIONS)

    f1 = 100 * sum(official_f1(p, r) for p, r in zip(PREDICTIONS, REFERENCES)) / len(REFERENCES)
    bleu = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    meteor = 100 * sum(single_meteor_score(nltk_punkt.word_tokenize(r), nltk_punkt.word_tokenize(p), wordnet=wordnet)
                       for p, r in zip(PREDICTIONS, REFERENCES)) / len(REFERENCES)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    scores = [scorer.score(r, p) for p, r in zip(PREDICTIONS, REFERENCES)]
    rouge_l = 100 * sum(s["rougeL"].fmeasure for s in scores) / len(scores)
    rouge_1 = 100 * sum(s["rouge1"].fmeasure for s in scores) / len(scores)

    expected = {"F1": f1, "SacreBLEU": bleu, "METEOR": meteor, "ROUGE-L": rouge_l, "ROUGE-1": rouge_1}
    for name, value in expected.items():
        assert report[name] == pytest.approx(value, abs=1e-9), name
    assert 0 < min(expected.values()) and max(expected.values()) < 100  # a meaningful, non-degenerate check
    # Per-example scores average to the corpus figure for all but corpus-level BLEU.
    assert sum(report.per_example["METEOR"]) / report.n == pytest.approx(report["METEOR"])


def test_signatures_name_the_settings(wordnet):
    report = score(PREDICTIONS[:2], REFERENCES[:2], lang="en")
    sig = dict(zip(report.metrics, report.signatures))
    # One format for every metric, sacrebleu's: NAME|key:value|...|version:library-x.y (version last).
    assert re.fullmatch(r"F1\|tok:squad\|lang:en\|agg:mean\|ci:bootstrap-1000-95\|version:groundtune-[\d.]+", sig["F1"])
    assert re.fullmatch(r"SacreBLEU\|nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|ci:bootstrap-1000-95\|version:[\d.]+", sig["SacreBLEU"])
    assert re.fullmatch(r"METEOR\|tok:nltk-punkt-en\|stem:porter\|wordnet:wn-3\.0-(system|nltk)\|a:0\.9\|b:3\|g:0\.5\|"
                        r"cap:2000\|ci:bootstrap-1000-95\|version:nltk-[\d.]+", sig["METEOR"])
    assert re.fullmatch(r"ROUGE-L\|tok:default\|stem:no\|agg:mean\|lcs_cap:2000\|ci:bootstrap-1000-95\|version:rouge-score-[\d.]+", sig["ROUGE-L"])
    assert re.fullmatch(r"ROUGE-1\|tok:default\|stem:no\|agg:mean\|ci:bootstrap-1000-95\|version:rouge-score-[\d.]+", sig["ROUGE-1"])
    assert all("=" not in s for s in report.signatures)
    table = report.table()
    assert all(s in table for s in report.signatures)


def test_multiple_references_take_the_best(wordnet):
    import sacrebleu
    from nltk.translate.meteor_score import meteor_score

    preds = ["you can renew it online", "the fee is 25 dollars"]
    refs = [["you must visit an office", "you can renew it online today"], ["it costs 25 dollars"]]
    report = score(preds, refs, lang="en")
    f1 = (max(official_f1(preds[0], r) for r in refs[0]) + official_f1(preds[1], refs[1][0])) / 2
    assert report["F1"] == pytest.approx(100 * f1)
    bleu = sacrebleu.corpus_bleu(preds, [[refs[0][0], refs[1][0]], [refs[0][1], None]]).score
    assert report["SacreBLEU"] == pytest.approx(bleu)
    best = meteor_score([word_tokenize(r) for r in refs[0]], word_tokenize(preds[0]), wordnet=wordnet)
    assert report.per_example["METEOR"][0] == pytest.approx(100 * best)
    # The best reference of example 0 is the second; scoring against it alone gives the same ROUGE-L.
    alone = score([preds[0]], [refs[0][1]], lang="en", metrics=["ROUGE-L"])
    assert report.per_example["ROUGE-L"][0] == pytest.approx(alone["ROUGE-L"])


def test_meteor_without_wordnet_says_so(monkeypatch):
    monkeypatch.setattr(meteor_mod, "load_wordnet", lambda: (None, None))
    report = score(PREDICTIONS[:2], REFERENCES[:2], lang="en")
    assert report["METEOR"] is None
    assert "wordnet:missing" in report.metrics["METEOR"].signature
    assert "wordnet-base" in report.metrics["METEOR"].note
    assert "n/a" in report.table() and "wordnet-base" in report.table()
    assert report["F1"] is not None  # the other metrics are unaffected
    # Korean METEOR does not use English WordNet, so it stays available.
    assert score(["서울은 수도이다"], ["서울은 수도이다"], lang="ko")["METEOR"] is not None


def test_wordnet_layout_from_system_dictionary(tmp_path):
    system = meteor_mod._system_wordnet_dir()
    if system is None:
        pytest.skip("no system WordNet dictionary (apt-get install wordnet-base)")
    target = meteor_mod._lay_out(system, tmp_path)
    lexnames = (target / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0] == "00\tadj.all\t3" and lexnames[-1] == "44\tadj.ppl\t3"
    assert (target / "data.noun").stat().st_size == (system / "data.noun").stat().st_size
    before = (target / "data.noun").stat().st_mtime_ns
    assert meteor_mod._lay_out(system, tmp_path) == target  # already there: not copied again
    assert (target / "data.noun").stat().st_mtime_ns == before
    assert meteor_mod.wordnet_available() is True


KO = "서울은 대한민국의 수도이며 가장 큰 도시이다."


def test_identical_korean_strings_score_100():
    from groundtune.metrics.tokenize import meteor_tokens

    report = score([KO, "부산은 항구 도시입니다."], [KO, "부산은 항구 도시입니다."], lang="ko")
    for name in ("F1", "SacreBLEU", "ROUGE-L", "ROUGE-1"):
        assert report[name] == pytest.approx(100.0), name
    # METEOR's fragmentation penalty never reaches zero: for n matched tokens in one chunk the best possible
    # score is 1 - 0.5 / n**3, which is what identical strings get.
    for text, value in zip([KO, "부산은 항구 도시입니다."], report.per_example["METEOR"]):
        n = len(meteor_tokens([text], "ko")[text])
        assert value == pytest.approx(100 * (1 - 0.5 / n**3))
    assert report["METEOR"] > 99.0


def test_rouge_on_korean_needs_morphemes():
    from rouge_score import rouge_scorer

    # rouge_score's own tokenizer keeps only [a-z0-9]: Hangul vanishes and even identical strings score 0.
    assert rouge_scorer.RougeScorer(["rougeL"]).score(KO, KO)["rougeL"].fmeasure == 0.0
    assert score([KO], [KO], lang="ko", metrics=["ROUGE-L"])["ROUGE-L"] == pytest.approx(100.0)


def test_korean_particle_difference_gets_partial_credit():
    pred, ref = "서울은 한국의 수도", "서울은 한국의 수도이다"
    report = score([pred], [ref], lang="ko")
    for name in METRICS:
        assert 0 < report[name] < 100, name
    # Whitespace words see 수도 and 수도이다 as different words (F1 2/3); morphemes see the match.
    whitespace_f1 = 100 * official_f1(pred, ref)
    assert report["F1"] > whitespace_f1 + 10
    assert report["F1"] == pytest.approx(100 * 2 * 5 / (5 + 7))  # 5 of 7 morphemes: 서울 은 한국 의 수도 (이 다)


def test_korean_bleu_uses_morphemes():
    report = score([KO], [KO], lang="ko", metrics=["SacreBLEU"])
    assert "tok:ko-mecab" in report.signatures[0] or "tok:char" in report.signatures[0]


def test_auto_language():
    assert resolve_lang("auto", [["You can renew it online."]]) == "en"
    assert resolve_lang("auto", [[KO]]) == "ko"
    assert resolve_lang("auto", [["서울은 capital이다"]]) == "ko"  # mixed text, mostly Hangul letters
    assert resolve_lang("en", [[KO]]) == "en"  # an explicit choice wins
    assert score([KO], [KO]).lang == "ko"
    with pytest.raises(ValueError, match="lang must be one of"):
        resolve_lang("fr", [["x"]])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"predictions\[1\] is NoneType"):
        score(["a", None], ["a", "b"])
    with pytest.raises(ValueError, match=r"references\[0\] must be a string or a non-empty list"):
        score(["a"], [[]])
    with pytest.raises(ValueError, match="unknown metric"):
        score(["a"], ["a"], metrics=["BLEU"])
    with pytest.raises(ValueError, match="nothing to score"):
        score([], [])


def test_predictions_file_round_trip_and_errors(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", ["a b", "c"], ["a b", ["c", "d"]], ids=["x", "y"])
    records = read_predictions(path)
    assert records.predictions == ["a b", "c"] and records.references == [["a b"], ["c", "d"]] and records.ids == ["x", "y"]

    bad = tmp_path / "bad.jsonl"
    for content, message in [
        ('{"prediction": "a", "reference": "a"}\n{oops\n', "bad.jsonl, line 2: not valid JSON"),
        ('{"prediction": null, "reference": "a"}\n', "line 1: 'prediction' must be a string"),
        ('{"prediction": "a"}\n', "line 1: 'reference' must be a string or a non-empty list"),
        ('{"id": 1, "prediction": "a", "reference": "a"}\n{"id": 1, "prediction": "b", "reference": "b"}\n',
         "line 2: id '1' repeats line 1"),
        ("\n", "no records"),
    ]:
        bad.write_text(content)
        with pytest.raises(ValueError, match=re.escape(message)):
            read_predictions(bad)


def test_eval_command(tmp_path):
    from typer.testing import CliRunner

    from groundtune.cli import app

    path = write_predictions(tmp_path / "p.jsonl", PREDICTIONS[:3], REFERENCES[:3])
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "--predictions", str(path), "--metrics", "F1,ROUGE-L", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "F1|tok:squad|lang:en" in result.output and "ROUGE-L|tok:default" in result.output
    saved = json.loads(out.read_text())
    expected = score(PREDICTIONS[:3], REFERENCES[:3], lang="en", metrics=["F1", "ROUGE-L"])
    assert saved["scores"] == pytest.approx(expected.scores)
    assert saved["ids"] == ["0", "1", "2"] and len(saved["per_example"]["F1"]) == 3

    result = CliRunner().invoke(app, ["eval", "--predictions", str(path), "--lang", "fr"])
    assert result.exit_code == 2 and "lang must be one of" in result.output
