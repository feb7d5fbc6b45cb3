"""Retrieval-augmented samples: the top-k retrieved passages replace the gold document in the prompt.

The passages carry no <h> highlight (retrieval does not know the grounding), so a model trained on these
samples learns to answer from what a retriever really returns, wrong passages included.
"""

from __future__ import annotations

from typing import Iterable

from groundtune.retrieval.queries import build_query


def rag_samples(
    dialogues: Iterable,
    retriever,
    *,
    k: int = 3,
    method: str | None = None,
    rerank: bool | None = None,
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
    ("gold_retrieved", None when the turn has no grounding).
    """
    from tqdm.auto import tqdm

    from groundtune.data.grounded import DropReport, samples_from_passages, turn_contexts

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
        ranked += retriever.rank([build_query(c.question, c.history) for c in batch], k, method=method, rerank=rerank)
    passages = retriever.passages
    samples = samples_from_passages(contexts, [[passages[i].text for i, _ in r] for r in ranked], history_turns, separator)
    for sample, ctx, r in zip(samples, contexts, ranked):
        gold = {(ref.doc_id, ref.id_sp) for ref in ctx.references}
        found = [passages[i] for i, _ in r]
        sample.meta["retrieved"] = [{"doc_id": p.doc_id, "span_ids": list(p.span_ids)} for p in found]
        sample.meta["gold_retrieved"] = (
            any((p.doc_id, s) in gold for p in found for s in p.span_ids) if gold else None
        )
        report.keep()
    return samples, report
