"""Retrieval-augmented samples: the top-k retrieved passages replace the gold document in the prompt.

The passages carry no <h> highlight (retrieval does not know the grounding), so a model trained on these
samples learns to answer from what a retriever really returns, wrong passages included.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from groundtune.retrieval.queries import build_query
from groundtune.errors import GroundtuneError


def retriever_for(block: dict):
    """The `Retriever` a data.retrieval block names (its reranker loaded when it has one)."""
    from groundtune.retrieval.index import Retriever

    return Retriever.load(block["index"], reranker=block.get("reranker"))


def rag_samples(
    dialogues: Iterable,
    retriever,
    *,
    k: int = 3,
    method: str | None = None,
    rerank: bool | None = None,
    pipeline: str | None = None,
    rerank_depth: int = 20,
    history_turns: int = 2,
    separator: str = "\n",
    open_end: bool = False,
    batch_size: int = 64,
    show_progress: bool = True,
    source: str = "",
):
    """One sample per agent turn, its document part the top-`k` passages `retriever` finds for the turn's
    MultiDoc2Dial query (question + history, newest first). Returns (samples, DropReport).

    The turns kept are those `grounded_samples` keeps (a question, references into one document, an answer),
    so gold and RAG training see the same turns; with `open_end`, unanswered turns (shared-task test inputs)
    are kept too. Each sample's meta records the passages retrieved and whether one covers the gold spans
    ("gold_retrieved", None when the turn has no grounding). `pipeline` (e.g. "hybrid+upr", "default")
    overrides `method` / `rerank`.
    """
    from tqdm.auto import tqdm

    from groundtune.data.grounded import samples_from_passages, turn_contexts
    from groundtune.data.sample import DropReport

    report = DropReport(source)
    contexts = []
    for ctx in turn_contexts(dialogues, open_end=open_end):
        where = f"{ctx.dial_id}#{ctx.turn_id}"
        if not ctx.question:
            report.drop("no_question", where)
        elif open_end and not ctx.answer:
            contexts.append(ctx)
        elif not ctx.references:
            report.drop("no_reference", where)
        elif len(ctx.doc_ids) > 1:
            report.drop("multi_document", where)
        elif not ctx.answer:
            report.drop("empty_answer", where)
        else:
            contexts.append(ctx)
    ranked: list[list[tuple[int, float]]] = []
    for start in tqdm(range(0, len(contexts), batch_size), desc="retrieve", unit="batch", disable=not show_progress):
        batch = contexts[start : start + batch_size]
        queries = [build_query(c.question, c.history) for c in batch]
        if pipeline is not None:
            ranked += retriever.rank_pipelines(queries, k, [pipeline], rerank_depth=rerank_depth)[pipeline]
        else:
            ranked += retriever.rank(queries, k, method=method, rerank=rerank, rerank_depth=rerank_depth)
    passages = retriever.passages
    samples = samples_from_passages(contexts, [[passages[i].text for i, _ in r] for r in ranked], history_turns, separator)
    for sample, ctx, r in zip(samples, contexts, ranked):
        gold = {(ref.doc_id, ref.id_sp) for ref in ctx.references}
        found = [passages[i] for i, _ in r]
        sample.meta["retrieved"] = [{"doc_id": p.doc_id, "span_ids": list(p.span_ids)} for p in found]
        sample.meta["passage_texts"] = [p.text for p in found]
        sample.meta["gold_retrieved"] = (
            any((p.doc_id, s) in gold for p in found for s in p.span_ids) if gold else None
        )
        sample.meta["gold_document_retrieved"] = any(p.doc_id == ctx.doc_ids[0] for p in found) if ctx.doc_ids else None
        report.keep()
    return samples, report


def rag_report(samples: Sequence, predictions: Sequence[str], *, lang: str = "auto", metrics=None) -> dict:
    """What retrieval did to the answers, for samples made by `rag_samples` and their predictions:

    answers: the usual answer metrics over all turns (`groundtune.metrics.score`);
    retrieval: on the same turns, how often a passage given covered the gold span (passage recall@k) and
        came from the gold document (document recall@k);
    grounding: knowledge-F1, token F1 of each prediction against the passages it was given (Shuster et al.,
        2021: high = the answer draws on the passages, whatever their quality);
    by_gold_retrieved: the answer metrics split by whether the gold passage was among those given.
    """
    from groundtune.metrics import resolve_lang, score
    from groundtune.metrics.f1 import f1_per_example

    samples, predictions = list(samples), list(predictions)
    if len(samples) != len(predictions):
        raise GroundtuneError(f"{len(predictions)} predictions for {len(samples)} samples")
    if not samples:
        raise GroundtuneError("rag_report: no samples")
    refs = [s.answer for s in samples]
    lang = resolve_lang(lang, [[r] for r in refs])
    answers = score(predictions, refs, lang=lang, metrics=metrics, ids=[s.id for s in samples])
    grounded = [s for s in samples if s.meta.get("gold_retrieved") is not None]
    knowledge = [" ".join(s.meta.get("passage_texts", [])) for s in samples]
    kf1 = f1_per_example(predictions, [[k] for k in knowledge], lang=lang)
    split = {}
    for flag in (True, False):
        idx = [i for i, s in enumerate(samples) if s.meta.get("gold_retrieved") is flag]
        name = "gold_retrieved" if flag else "gold_missed"
        split[name] = ({"n": len(idx), "scores": score([predictions[i] for i in idx], [refs[i] for i in idx], lang=lang,
                                                        metrics=metrics).scores} if idx else {"n": 0, "scores": {}})
    k = max((len(s.meta.get("retrieved", [])) for s in samples), default=0)
    return {
        "n": len(samples),
        "lang": lang,
        "answers": answers.scores,
        "signatures": answers.signatures,
        "retrieval": {
            "k": k,
            "turns_with_gold": len(grounded),
            f"passage_recall@{k}": (sum(bool(s.meta["gold_retrieved"]) for s in grounded) / len(grounded)) if grounded else None,
            f"document_recall@{k}": (sum(bool(s.meta.get("gold_document_retrieved")) for s in samples) / len(samples)),
        },
        "grounding": {
            "knowledge_f1": 100 * sum(kf1) / len(kf1),
            "gold_passage_given": (100 * sum(bool(s.meta["gold_retrieved"]) for s in grounded) / len(grounded)) if grounded else None,
        },
        "by_gold_retrieved": split,
    }


def format_rag_report(report: dict) -> str:
    """A few plain-text lines of `rag_report`."""
    r, g = report["retrieval"], report["grounding"]
    k = r["k"]
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}"
    lines = [f"answers ({report['n']} turns): " + ", ".join(f"{m} {v:.2f}" for m, v in report["answers"].items() if v is not None),
             f"retrieval on the same turns: passage recall@{k} {pct(r[f'passage_recall@{k}'])}, "
             f"document recall@{k} {pct(r[f'document_recall@{k}'])}",
             f"grounding: knowledge-F1 {g['knowledge_f1']:.2f}, gold passage given "
             + ("n/a" if g["gold_passage_given"] is None else f"{g['gold_passage_given']:.1f}%")]
    for name, part in report["by_gold_retrieved"].items():
        lines.append(f"  {name} ({part['n']}): " + ", ".join(f"{m} {v:.2f}" for m, v in part["scores"].items() if v is not None))
    return "\n".join(lines) + "\n"
