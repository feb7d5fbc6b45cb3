"""Speed and agreement of `groundtune.metrics.score` against the MultiDoc2Dial official recipe run directly.

The official script (IBM/multidoc2dial scripts/sharedtask_eval.py) calls HF metrics that wrap: sacrebleu
corpus_bleu (defaults), nltk single_meteor_score on nltk.word_tokenize tokens (mean over examples), and
rouge_score rougeL without stemming, aggregated by an unseeded 1,000-sample bootstrap (median); F1 is the
SQuAD v1.1 script. The peer below is that recipe, written out with the libraries themselves.

    python bench/metrics_speed.py                      # synthetic English, 4,056 examples
    python bench/metrics_speed.py --data-dir DIR       # agent turns of doc2dial / MultiDoc2Dial JSON under DIR
    python bench/metrics_speed.py --smoke              # seconds: 60 synthetic examples, same code path

Last line: one JSON object. Without the official recipe's libraries (nltk, sacrebleu, rouge_score, numpy), or
with --skip-official, the official figures are null and `skipped` says why.

JSON keys: n, words_per_reference, wordnet_load_s, ours_s, ours_s_with_wordnet_load, ours, official_s,
speedup_vs_official, abs_diff_vs_official, rougeL_bootstrap_mid_minus_mean, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import string
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import _smoke


def PUNKT_EN() -> Path:
    """The English Punkt model shipped in groundtune/assets (what groundtune's tokenizer reads)."""
    from groundtune.data import asset_path

    return asset_path("punkt_tab/english")


def agent_turns(data_dir: Path) -> list[list[str]]:
    """Agent utterances of every dialogue in the doc2dial / MultiDoc2Dial JSON files under data_dir."""
    dialogues = []

    def walk(node):
        if isinstance(node, dict):
            turns = node.get("turns")
            if isinstance(turns, list):
                agent = [t["utterance"] for t in turns if isinstance(t, dict) and t.get("role") == "agent"
                         and isinstance(t.get("utterance"), str)]
                if agent:
                    dialogues.append(agent)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(data_dir.rglob("*.json")):
        try:
            walk(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return dialogues


def synthetic_turns(n_dialogues: int, rng: random.Random) -> list[list[str]]:
    """Zipf-distributed sentences over the ~20k English words of the bundled Punkt model's vocabulary."""
    words = [line.split("\t")[0] for line in (PUNKT_EN() / "ortho_context.tab").read_text().splitlines()]
    words = [w for w in words if w.isalpha()]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    out = []
    for _ in range(n_dialogues):
        turns = []
        for _ in range(rng.randint(2, 6)):
            sentence = rng.choices(words, weights, k=max(3, int(rng.gauss(18, 7))))
            turns.append(" ".join(sentence).capitalize() + rng.choice([".", "?", ".", "!"]))
        out.append(turns)
    return out


def make_pairs(dialogues: list[list[str]], n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """(predictions, references): each reference an agent turn; its prediction a model-like near miss (the
    turn with words dropped and a neighbouring turn's words mixed in)."""
    preds, refs = [], []
    while len(refs) < n:
        for turns in dialogues:
            for i, ref in enumerate(turns):
                if len(refs) == n:
                    break
                words = [w for w in ref.split() if rng.random() > 0.3]
                other = turns[i - 1].split() if i else []
                words[rng.randint(0, len(words)):0] = other[: rng.randint(0, min(8, len(other)))]
                preds.append(" ".join(words))
                refs.append(ref)
    return preds, refs


def official(preds: list[str], refs: list[str], wordnet) -> dict:
    """The official recipe with the libraries directly (one reference per example)."""
    import nltk
    import numpy as np
    import sacrebleu
    from nltk.translate.meteor_score import single_meteor_score
    from rouge_score import rouge_scorer, scoring

    def normalize_answer(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    def f1_score(prediction, truth):
        p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
        same = sum((Counter(p) & Counter(t)).values())
        if same == 0:
            return 0
        precision, recall = same / len(p), same / len(t)
        return 2 * precision * recall / (precision + recall)

    times, out = {}, {}
    t = time.perf_counter()
    out["F1"] = 100 * sum(f1_score(p, r) for p, r in zip(preds, refs)) / len(refs)
    times["F1"] = time.perf_counter() - t
    t = time.perf_counter()
    out["SacreBLEU"] = sacrebleu.corpus_bleu(preds, [refs]).score
    times["SacreBLEU"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = [single_meteor_score(nltk.word_tokenize(r), nltk.word_tokenize(p), wordnet=wordnet) for p, r in zip(preds, refs)]
    out["METEOR"] = 100 * float(np.mean(scores))
    times["METEOR"] = time.perf_counter() - t
    t = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    plain = []
    for p, r in zip(preds, refs):
        s = scorer.score(r, p)
        aggregator.add_scores(s)
        plain.append(s["rougeL"].fmeasure)
    out["ROUGE-L (bootstrap mid)"] = 100 * aggregator.aggregate()["rougeL"].mid.fmeasure
    out["ROUGE-L"] = 100 * float(np.mean(plain))
    times["ROUGE-L"] = time.perf_counter() - t
    return {"scores": out, "seconds": times, "total_s": sum(times.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="folder with doc2dial / MultiDoc2Dial dialogue JSON")
    parser.add_argument("--n", type=int, default=4056, help="examples (the paper's eval set: 4,056)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-official", action="store_true", help="time only groundtune")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run on 60 synthetic examples")
    args = parser.parse_args()
    if args.smoke:
        args.n = 60

    from groundtune.metrics import score
    from groundtune.metrics.meteor import load_wordnet

    skipped: dict[str, str] = {}
    if args.skip_official:
        skipped["official"] = "--skip-official"
    else:
        for module in ("nltk", "numpy", "sacrebleu", "rouge_score"):
            _smoke.peer(module, skipped)
        if skipped:
            args.skip_official = True

    rng = random.Random(args.seed)
    dialogues = agent_turns(args.data_dir) if args.data_dir else synthetic_turns(40 if args.smoke else 400, rng)
    if not dialogues:
        sys.exit(f"no agent turns found under {args.data_dir}")
    preds, refs = make_pairs(dialogues, args.n, rng)
    words = sum(len(r.split()) for r in refs) / len(refs)
    print(f"{len(refs)} examples ({'data: ' + str(args.data_dir) if args.data_dir else 'synthetic'}), "
          f"{words:.1f} words per reference", flush=True)

    # Loading WordNet (seconds) is paid once per process by either side; time it apart.
    t = time.perf_counter()
    reader, source = load_wordnet()
    load_s = time.perf_counter() - t
    if reader is None:
        sys.exit("WordNet missing: apt-get install wordnet-base")
    print(f"WordNet from {source}: loaded in {load_s:.1f} s", flush=True)

    t = time.perf_counter()
    report = score(preds, refs, lang="en")
    ours_s = time.perf_counter() - t
    print(report.table(), end="")
    print(f"groundtune.metrics.score: {ours_s:.1f} s (F1, SacreBLEU, METEOR, ROUGE-L, ROUGE-1)", flush=True)

    result = {"n": len(refs), "words_per_reference": round(words, 1), "wordnet_load_s": round(load_s, 2),
              "ours_s": round(ours_s, 2), "ours_s_with_wordnet_load": round(ours_s + load_s, 2),
              "ours": {k: round(v, 4) for k, v in report.scores.items()},
              "official_s": None, "speedup_vs_official": None, "abs_diff_vs_official": None,
              "rougeL_bootstrap_mid_minus_mean": None}
    if not args.skip_official:
        import nltk

        # nltk.word_tokenize looks for punkt_tab in nltk's data folders: stage the bundled copy in one.
        staged = Path(tempfile.mkdtemp())
        shutil.copytree(PUNKT_EN(), staged / "tokenizers" / "punkt_tab" / "english")
        # nltk refuses data that others may write to; the copy keeps the checkout's modes (group-writable under
        # umask 002), so make it private
        for path in [staged, *staged.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)
        nltk.data.path.insert(0, str(staged))
        try:
            peer = official(preds, refs, reader)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        print("official recipe: " + ", ".join(f"{k} {v:.4f}" for k, v in peer["scores"].items()))
        print("official recipe seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in peer["seconds"].items()))
        diffs = {k: round(abs(report[k] - peer["scores"][k]), 6) for k in ("F1", "SacreBLEU", "METEOR", "ROUGE-L")}
        print(f"|ours - official|: {diffs}; ROUGE-L bootstrap mid vs mean: "
              f"{peer['scores']['ROUGE-L (bootstrap mid)'] - peer['scores']['ROUGE-L']:+.4f}")
        print(f"speed-up vs official recipe: {peer['total_s'] / ours_s:.2f}x")
        result.update({"official_s": round(peer["total_s"], 2), "speedup_vs_official": round(peer["total_s"] / ours_s, 2),
                       "abs_diff_vs_official": diffs,
                       "rougeL_bootstrap_mid_minus_mean": round(peer["scores"]["ROUGE-L (bootstrap mid)"] - peer["scores"]["ROUGE-L"], 4)})
    result.update({"smoke": args.smoke, "skipped": skipped})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
