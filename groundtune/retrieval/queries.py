"""Retrieval queries from dialogues, in MultiDoc2Dial's format, with their gold grounding.

MultiDoc2Dial (Feng et al., 2021; IBM/multidoc2dial, scripts/hf_datasets/doc2dial/doc2dial_pub.py) writes
the query as the current user turn, then "[SEP]", then the earlier turns newest first, each as
"role: utterance", joined by "||". Newest first keeps the current question whole when an encoder
truncates the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence
from groundtune.errors import DataError


@dataclass(frozen=True)
class RetrievalQuery:
    """One query and where its answer is grounded: a document and (when known) span ids in it."""

    qid: str
    query: str
    doc_id: str
    span_ids: tuple[str, ...] = ()
    # The text the agent answered with, for RAG samples; not used for retrieval.
    response: str = field(default="", compare=False)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_query(question: str, history: Sequence[str] = ()) -> str:
    """MultiDoc2Dial query from the current user question and the earlier turns (oldest first, each
    "role: utterance"): "question[SEP]newest turn||...||oldest turn"."""
    return _one_line(question) + "[SEP]" + "||".join(_one_line(turn) for turn in reversed(history))


_MARKUP = re.compile(r"\[SEP\]|\|\||(?:^|(?<=\[SEP\])|(?<=\|\|))\s*(?:user|agent):")


def plain_query(query: str) -> str:
    """The query without its markup ("[SEP]", "||", role labels), for term matching: the labels are in
    every query and would otherwise match documents that mention users or agents (about 1 point of
    BM25 recall@5 on doc2dial)."""
    return " ".join(_MARKUP.sub(" ", query).split())


def queries_from_dialogues(dialogues: Iterable, *, documents: dict | None = None, source: str = ""):
    """One query per agent turn that answers a user question from one document (`turn_contexts` of
    `groundtune.data.grounded`); gold = that document and the turn's spans.

    Returns (queries, DropReport): turns without a question or references, with references into several
    documents, or (when `documents` is given) into a document not in it are dropped and counted by reason.
    """
    from groundtune.data.grounded import turn_contexts
    from groundtune.data.sample import DropReport

    report = DropReport(source)
    out = []
    for ctx in turn_contexts(dialogues):
        where = f"{ctx.dial_id}#{ctx.turn_id}"
        doc_ids = ctx.doc_ids
        if not ctx.question:
            report.drop("no_question", where)
        elif not ctx.references or doc_ids == [None]:
            report.drop("no_reference", where)
        elif len(doc_ids) > 1:
            report.drop("multi_document", where)
        elif documents is not None and doc_ids[0] not in documents:
            report.drop("missing_document", where)
        else:
            spans = tuple(dict.fromkeys(r.id_sp for r in ctx.references))
            out.append(RetrievalQuery(ctx.id, build_query(ctx.question, ctx.history), doc_ids[0], spans, ctx.answer))
            report.keep()
    return out, report


def _rc_turns(question: str) -> list[tuple[str, str]]:
    """The reading-comprehension release's history ("user:...\\tagent:...", newest first) -> turns, oldest first."""
    turns = []
    for part in question.split("\t"):
        part = part.strip()
        if not part:
            continue
        role, sep, utterance = part.partition(":")
        if not sep or role.strip() not in ("user", "agent"):
            role, utterance = "user", part
        turns.append((role.strip(), utterance.strip()))
    return turns[::-1]


def load_rc_queries(path) -> list[RetrievalQuery]:
    """Queries from a doc2dial reading-comprehension JSON Lines file (DialDoc 2021 shared task): rows with
    id, doc_id, question (history newest first, turns "role:utterance" joined by tabs), answer_span_ids."""
    from groundtune.fileio import jsonl_lines, text_lines

    out = []
    with text_lines(path, what="question file") as f:
        for n, row in jsonl_lines(f, path, "{id, doc_id, question, answer_span_ids}"):
            try:
                turns = _rc_turns(row["question"])
                if not turns:
                    raise DataError("empty question")
                history = [f"{role}: {utterance}" for role, utterance in turns[:-1]]
                out.append(RetrievalQuery(str(row["id"]), build_query(turns[-1][1], history), row["doc_id"],
                                          tuple(map(str, row.get("answer_span_ids", ())))))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{path}: line {n} is not a question row ({e}); each row needs id, doc_id, question "
                                 "and answer_span_ids") from e
    return out


def load_queries(paths, *, documents: dict | None = None):
    """Queries with gold from doc2dial / MultiDoc2Dial dialogue files (or folders), or from reading-comprehension
    .jsonl question files. Returns (queries, DropReport) (nothing is dropped from .jsonl files)."""
    import os
    from pathlib import Path

    from groundtune.data.doc2dial import load_dialogues
    from groundtune.data.sample import DropReport

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    rc = [p for p in paths if p.suffix.lower() == ".jsonl"]
    rest = [p for p in paths if p.suffix.lower() != ".jsonl"]
    queries, report = [], DropReport(", ".join(map(str, paths)))
    if rest:
        queries, report = queries_from_dialogues(load_dialogues(rest), documents=documents, source=report.source)
    for p in rc:
        found = load_rc_queries(p)
        queries += found
        report.keep(len(found))
    return queries, report
