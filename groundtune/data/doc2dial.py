"""Readers for the official doc2dial and MultiDoc2Dial JSON files.

Document files come in two layouts:
  * ``{"doc_data": {domain: {doc_id: doc}}}`` (doc2dial v0.9 / v1.0.1, MultiDoc2Dial), each doc with
    ``title, doc_id, domain, doc_text, spans``; spans a dict ``{id_sp: span}`` or a list of spans;
  * ``{doc_id: {doc_id, domain, doc_text, spans: {id_sp: text}}}`` (doc2dial reading-comprehension
    release): spans without offsets, whose texts concatenate to ``doc_text``.
Dialogue files come in three:
  * ``{"dial_data": {domain: {doc_id: [dialogue]}}}`` (doc2dial; the DialDoc 2021 test-dev file omits the
    ``dial_data`` wrapper), turn references either v0.9's
    ``reference: {id_sp: [label]}`` or v1.0.1's ``references: [{sp_id, label}]``; the document is the dialogue's;
  * ``{"dial_data": {domain: [dialogue]}}`` (MultiDoc2Dial), ``references: [{id_sp, doc_id, label}]``;
  * ``[{id, dial: [turn], ground_doc_id?}]`` (DialDoc 2022 shared-task inputs, no references).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Union

from groundtune.data import DataError

PathLike = Union[str, Path]
Paths = Union[PathLike, Iterable[PathLike]]

# doc2dial v0.9 labels the spans a turn carries over from earlier turns as "reference"; v1.0.1 dropped them.
# They are kept here, faithful to the file, and ignored where a turn's own grounding is wanted.
CONTEXT_LABEL = "reference"


@dataclass(frozen=True)
class Span:
    id_sp: str
    start_sp: int
    end_sp: int
    text_sp: str
    title: str = ""
    parent_titles: tuple[str, ...] = ()
    id_sec: str = ""
    tag: str = ""


@dataclass
class Document:
    doc_id: str
    title: str
    domain: str
    text: str
    spans: list[Span] = field(default_factory=list)  # in document order

    def __post_init__(self):
        self._by_id = {span.id_sp: span for span in self.spans}

    def span(self, id_sp: str) -> Span | None:
        return self._by_id.get(str(id_sp))


class Reference(NamedTuple):
    doc_id: str | None
    id_sp: str
    label: str


@dataclass
class Turn:
    turn_id: int
    role: str  # "user" or "agent"
    utterance: str
    da: str = ""
    references: list[Reference] = field(default_factory=list)


@dataclass
class Dialogue:
    dial_id: str
    domain: str
    doc_id: str | None  # the grounding document of a single-document dialogue, else None
    turns: list[Turn] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- files


def _files(paths: Paths) -> list[tuple[Path, bool]]:
    """Expand files and folders (searched recursively for *.json) into (file, named_explicitly) pairs."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [(f, False) for f in sorted(p.rglob("*.json"))]
        elif p.is_file():
            out.append((p, True))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix or re-download the file") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); save it as UTF-8") from e


# ------------------------------------------------------------------------------------------- documents


def _is_rc_documents(data) -> bool:
    return isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "doc_text" in v for v in data.values())


def _span_from_dict(path: Path, doc_id: str, text: str, key, raw: dict) -> Span:
    try:
        span = Span(
            id_sp=str(raw.get("id_sp", key)),
            start_sp=int(raw["start_sp"]),
            end_sp=int(raw["end_sp"]),
            text_sp=raw["text_sp"],
            title=raw.get("title", "") or "",
            parent_titles=tuple(_title_text(t) for t in raw.get("parent_titles", []) or []),
            id_sec=str(raw.get("id_sec", "")),
            tag=raw.get("tag", "") or "",
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: document {doc_id!r}, span {key!r}: missing or bad field {e}; "
                        "a span needs id_sp, start_sp, end_sp and text_sp") from e
    if text[span.start_sp:span.end_sp] != span.text_sp:
        raise DataError(f"{path}: document {doc_id!r}, span {span.id_sp!r}: doc_text[{span.start_sp}:{span.end_sp}] "
                        "is not text_sp; the offsets must index doc_text (is this the matching doc_text version?)")
    return span


def _title_text(title) -> str:
    # parent_titles are plain strings in doc2dial v1.0.1 and {"id_sp", "text", "level"} dicts in some releases.
    return title.get("text", "") if isinstance(title, dict) else str(title)


def _doc2dial_document(path: Path, domain: str, doc_id: str, raw: dict) -> Document:
    try:
        text = raw["doc_text"]
        spans_raw = raw["spans"]
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: document {doc_id!r} lacks field {e}; a document needs doc_text and spans") from e
    items = spans_raw.items() if isinstance(spans_raw, dict) else ((s.get("id_sp"), s) for s in spans_raw)
    spans = sorted((_span_from_dict(path, doc_id, text, k, s) for k, s in items), key=lambda s: (s.start_sp, s.end_sp))
    return Document(str(raw.get("doc_id", doc_id)), raw.get("title") or _title_from_id(doc_id),
                    raw.get("domain", domain), text, spans)


def _rc_document(path: Path, doc_id: str, raw: dict) -> Document:
    """Spans given as {id_sp: text}: offsets recovered by walking doc_text, which the span texts tile in order."""
    text = raw["doc_text"]
    spans, cursor = [], 0
    for id_sp, span_text in (raw.get("spans") or {}).items():
        if isinstance(span_text, dict):  # tolerate full span dicts in this layout too
            spans.append(_span_from_dict(path, doc_id, text, id_sp, span_text))
            continue
        start = cursor if text.startswith(span_text, cursor) else text.find(span_text, cursor)
        if start < 0:
            raise DataError(f"{path}: document {doc_id!r}, span {id_sp!r}: its text is not in doc_text after the "
                            "previous span; spans must be listed in document order and match doc_text")
        spans.append(Span(str(id_sp), start, start + len(span_text), span_text))
        cursor = start + len(span_text)
    spans.sort(key=lambda s: (s.start_sp, s.end_sp))
    return Document(str(raw.get("doc_id", doc_id)), raw.get("title") or _title_from_id(doc_id),
                    raw.get("domain", ""), text, spans)


def _title_from_id(doc_id: str) -> str:
    # doc2dial ids are "<title>#<n>_<part>" and the title field is "<title>#<n>".
    return doc_id.rsplit("_", 1)[0] if "#" in doc_id else doc_id


def _documents_in(path: Path, data) -> list[Document] | None:
    if isinstance(data, dict) and "doc_data" in data:
        return [_doc2dial_document(path, domain, doc_id, raw)
                for domain, docs in data["doc_data"].items() for doc_id, raw in docs.items()]
    if _is_rc_documents(data):
        return [_rc_document(path, doc_id, raw) for doc_id, raw in data.items()]
    return None


def _parsed(paths: Paths, parse, kind: str, layout: str):
    """(path, parsed records) per file of `kind`; files of another layout in a folder are skipped, a file
    named explicitly must have this layout."""
    for path, explicit in _files(paths):
        records = parse(path, _read_json(path))
        if records is not None:
            yield path, records
        elif explicit:
            raise DataError(f"{path}: not a {kind} file; expected {layout}")


def load_documents(paths: Paths) -> dict[str, Document]:
    """Documents from one or more files or folders, by doc_id.

    Folders are searched for *.json and files of another layout (dialogues) in them are skipped; a file named
    explicitly must be a document file. When a doc_id appears twice the first one read is kept.
    """
    documents: dict[str, Document] = {}
    for path, docs in _parsed(paths, _documents_in, "document", '{"doc_data": {domain: {doc_id: doc}}} or '
                              "{doc_id: {doc_id, domain, doc_text, spans}}"):
        for doc in docs:
            kept = documents.setdefault(doc.doc_id, doc)
            if kept is not doc and kept.text != doc.text:
                warnings.warn(f"{path}: document {doc.doc_id!r} read before with a different text; keeping the first")
    return documents


# ------------------------------------------------------------------------------------------- dialogues


def _references(path: Path, dial_id: str, doc_id: str | None, turn: dict) -> list[Reference]:
    if "references" in turn:  # v1.0.1 (sp_id, document of the dialogue) or MultiDoc2Dial (id_sp + doc_id)
        refs = []
        for r in turn["references"] or []:
            id_sp = r.get("id_sp", r.get("sp_id"))
            if id_sp is None:
                raise DataError(f"{path}: dialogue {dial_id!r}, turn {turn.get('turn_id')}: a reference without "
                                "id_sp / sp_id; each reference must name its span")
            refs.append(Reference(r.get("doc_id", doc_id), str(id_sp), r.get("label", "")))
        return refs
    if "reference" in turn:  # v0.9: {id_sp: [labels]}
        return [Reference(doc_id, str(id_sp), label)
                for id_sp, labels in (turn["reference"] or {}).items() for label in (labels or [""])]
    return []


def _dialogue(path: Path, raw: dict, domain: str, doc_id: str | None) -> Dialogue:
    dial_id = str(raw.get("dial_id", raw.get("id", "")))
    doc_id = raw.get("doc_id", raw.get("ground_doc_id", doc_id))
    turns = []
    for i, t in enumerate(raw.get("turns", raw.get("dial")) or []):
        try:
            turns.append(Turn(int(t.get("turn_id", i + 1)), t["role"], t["utterance"], t.get("da", "") or "",
                              _references(path, dial_id, doc_id, t)))
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: dialogue {dial_id!r}, turn {i + 1}: missing or bad field {e}; "
                            "a turn needs role and utterance") from e
    if "dial" in raw and turns and dial_id.endswith(f"_{turns[-1].turn_id}"):
        # Shared-task ids are "{dial_id}_{turn_id}" of the turn before the reply to predict; keep the dialogue's id
        # so that contexts built from it get the official id back.
        dial_id = dial_id[: -len(f"_{turns[-1].turn_id}")]
    if doc_id is None:  # MultiDoc2Dial: single-document when every reference points to the same document
        docs = {r.doc_id for t in turns for r in t.references}
        doc_id = docs.pop() if len(docs) == 1 else None
    return Dialogue(dial_id, raw.get("domain", domain), doc_id, turns)


def _is_bare_dial_data(data) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(block, dict) and all(isinstance(dials, list) and all(isinstance(d, dict) and "turns" in d for d in dials)
                                        for dials in block.values())
        for block in data.values())


def _dialogues_in(path: Path, data) -> list[Dialogue] | None:
    if isinstance(data, dict) and ("dial_data" in data or _is_bare_dial_data(data)):
        out = []
        for domain, block in data.get("dial_data", data).items():
            if isinstance(block, dict):  # doc2dial: grouped by document
                out += [_dialogue(path, d, domain, doc_id) for doc_id, dials in block.items() for d in dials]
            else:  # MultiDoc2Dial: a plain list per domain
                out += [_dialogue(path, d, domain, None) for d in block]
        return out
    if isinstance(data, list) and data and all(isinstance(d, dict) and "dial" in d for d in data):
        return [_dialogue(path, d, d.get("domain", ""), None) for d in data]
    return None


def load_dialogues(paths: Paths) -> list[Dialogue]:
    """Dialogues from one or more files or folders, in file order.

    Folders are searched for *.json and files of another layout (documents) in them are skipped; a file named
    explicitly must be a dialogue file.
    """
    dialogues: list[Dialogue] = []
    for _, dials in _parsed(paths, _dialogues_in, "dialogue", '{"dial_data": {domain: ...}} or a list of '
                            "{id, dial: [turns]}"):
        dialogues += dials
    return dialogues
