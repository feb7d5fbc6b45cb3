"""Synthetic supervision bench: a reranker trained on questions a teacher wrote, with no human question in training.

On doc2dial reading-comprehension data (--data-dir: documents JSON + question JSONL, as bench/rag.py reads it):

1. Index the 100-word passages (BM25 + dense; the fusion keeps its default weight, since choosing it on dev
   questions would use human questions).
2. `groundtune synth` with the embedded SmolLM2-135M-Instruct as teacher, on passages drawn at random, for
   --synth-minutes (or --synth-passages): throughput (kept questions per minute) and the share each filter keeps.
3. Train the late-interaction reranker (`train_reranker`'s defaults) on the kept synthetic questions.
4. Passage recall on the human questions of the test half, split by dialogue exactly as bench/rag.py splits
   (a hash of the dialogue id): hybrid alone against hybrid + the synthetic reranker; with --human-reranker,
   also the reranker trained on the human questions of the train half (bench/rag.py's), for the share of its
   gain that synthetic supervision recovers.

    python bench/synth.py --data-dir DIR --synth-minutes 30
    python bench/synth.py --smoke        # seconds: shipped fixtures, a tiny random teacher

The last line printed is one JSON object:

JSON keys: data, passages, test_questions, synth_passages, synth_kept, synth_dropped, filter_keep_share,
synth_kept_per_min, synth_s, reranker_examples, reranker_train_s, recall, gain_over_hybrid_r1,
human_gain_recovered, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _smoke import json_keys  # noqa: E402

JSON_KEYS = json_keys(__doc__)


def keep_shares(report) -> dict[str, float | None]:
    """For each filter in order, the share of the questions reaching it that it keeps."""
    from groundtune.retrieval.synth import REASONS

    reached, out = report.generated, {}
    for reason in REASONS:
        passed = reached - report.dropped[reason]
        out[reason] = round(passed / reached, 4) if reached else None
        reached = passed
    return out


def passage_recall(retriever, queries, pipeline: str) -> dict:
    from groundtune.retrieval import evaluate_rankings

    ranked = retriever.rank_pipelines([q.query for q in queries], 10, [pipeline])[pipeline]
    p = evaluate_rankings([[i for i, _ in r] for r in ranked], queries, retriever.passages)["passage"]
    return {k: round(100 * p[k], 1) for k in ("recall@1", "recall@5", "recall@10", "mrr")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="doc2dial reading-comprehension folder")
    parser.add_argument("--synth-minutes", type=float, default=30.0, help="teacher time budget")
    parser.add_argument("--synth-passages", type=int, default=None, help="at most this many passages asked")
    parser.add_argument("--eval-queries", type=int, default=None, help="test questions scored (default: all)")
    parser.add_argument("--human-reranker", action="store_true", help="also train on the human train half")
    parser.add_argument("--keep", type=Path, default=None, help="keep the synthetic questions (jsonl) here")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()

    from rag import _half, load_data

    from groundtune.retrieval import Retriever, build_index
    from groundtune.retrieval.queries import load_rc_queries
    from groundtune.retrieval.pipelines import reranker as reranker_stage
    from groundtune.retrieval.rerank import mine_examples, train_reranker
    from groundtune.retrieval.synth import LocalTeacher, SynthConfig, synthesize

    if args.smoke:
        args.data_dir, args.synth_passages, args.eval_queries = None, 8, 8
    documents, passages, queries, what = load_data(args.data_dir)
    if args.smoke:  # the fixtures' dialogues are few: a split by turn, as bench/rag.py's smoke does
        train_q, test_q = queries[::2], queries[1::2]
    else:
        train_q = [q for q in queries if _half(q.qid) == 0]
        test_q = [q for q in queries if _half(q.qid) == 1]
    test_q = test_q[: args.eval_queries]
    print(f"[synth] {what}; {len(passages):,} passages; test {len(test_q)} human questions", flush=True)
    if args.smoke:
        from _smoke import tiny_llama, tiny_tokenizer

        tokenizer = tiny_tokenizer([p.text for p in passages[:50]])
        # untied: a tied random head repeats the last prompt token ("::::"), which no filter would pass
        teacher = LocalTeacher(tiny_llama(vocab_size=len(tokenizer), tie_word_embeddings=False), tokenizer,
                               max_new_tokens=12)
    else:
        teacher = LocalTeacher.load()
    small = dict(batch_size=4, max_length=64, epochs=1) if args.smoke else {}
    result = {"data": what, "passages": len(passages), "test_questions": len(test_q), "smoke": args.smoke,
              "skipped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = build_index(passages, tmp / "index", show_progress=False)
        retriever = Retriever.load(folder)
        ids = list(range(len(passages)))
        random.Random(0).shuffle(ids)
        out = args.keep or tmp / "synth.jsonl"
        report = synthesize(retriever, teacher, out, passage_ids=ids[: args.synth_passages],
                            # the tiny random teacher writes word salad: the smoke run lets it through the length
                            # and round-trip filters so the reranker is trained on something
                            config=SynthConfig(max_new_tokens=teacher.max_new_tokens,
                                               **(dict(min_words=1, round_trip_k=len(passages)) if args.smoke else {})),
                            max_seconds=None if args.smoke else args.synth_minutes * 60, show_progress=False)
        print(f"[synth] {report.summary()} in {report.seconds:.0f}s", flush=True)
        result.update(synth_passages=report.generated, synth_kept=report.kept, synth_dropped=dict(report.dropped),
                      filter_keep_share=keep_shares(report), synth_kept_per_min=report.to_dict()["kept_per_min"],
                      synth_s=round(report.seconds, 1))
        recall = {"hybrid": passage_recall(retriever, test_q, "hybrid")}
        synthetic = load_rc_queries(out) if report.kept else []
        examples, _ = mine_examples(retriever, synthetic, negatives=reranker_stage("late-interaction").defaults["negatives"],
                                    method="default", show_progress=False) if synthetic else ([], {})
        result["reranker_examples"] = len(examples)
        result["reranker_train_s"] = None
        if examples:
            start = time.perf_counter()
            reranker = train_reranker(examples, tmp / "synthetic_reranker", show_progress=False, **small)
            result["reranker_train_s"] = round(time.perf_counter() - start, 1)
            recall["hybrid+synthetic_rerank"] = passage_recall(Retriever.load(folder, reranker=reranker), test_q,
                                                               "hybrid+rerank")
        else:
            result["skipped"]["synthetic_reranker"] = "no synthetic question was kept"
        if args.human_reranker:
            human, _ = mine_examples(retriever, train_q, negatives=reranker_stage("late-interaction").defaults["negatives"],
                                     method="default", show_progress=False)
            reranker = train_reranker(human, tmp / "human_reranker", show_progress=False, **small)
            recall["hybrid+human_rerank"] = passage_recall(Retriever.load(folder, reranker=reranker), test_q,
                                                           "hybrid+rerank")
    r1 = {k: v["recall@1"] for k, v in recall.items()}
    synth_r1 = r1.get("hybrid+synthetic_rerank")
    result["recall"] = recall
    result["gain_over_hybrid_r1"] = round(synth_r1 - r1["hybrid"], 1) if synth_r1 is not None else None
    human_gain = r1["hybrid+human_rerank"] - r1["hybrid"] if "hybrid+human_rerank" in r1 else None
    result["human_gain_recovered"] = (round((synth_r1 - r1["hybrid"]) / human_gain, 3)
                                      if human_gain and synth_r1 is not None else None)
    for name, r in recall.items():
        print(f"[synth] {name:26s} R@1 {r['recall@1']:5.1f}  R@5 {r['recall@5']:5.1f}  MRR {r['mrr']:5.1f}", flush=True)
    assert set(result) == set(JSON_KEYS), set(result) ^ set(JSON_KEYS)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
