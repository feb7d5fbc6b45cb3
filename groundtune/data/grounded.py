"""Grounded-dialogue samples: one per agent turn, the document with the grounding highlighted, then the dialogue.

    prompt = "<document with <h> grounding span(s) </h>> <I> user: … agent: … </I> <q> user question </q>"
    answer = the agent's utterance

The markers are plain text (a tokenizer splits them like any other text). Samples over the token limits are dropped and counted by reason
in a `DropReport`, as the MultiDoc2Dial LLaMA-Adapter/LoRA study did; `window_around_span` keeps a window of a long
document around the grounding instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from groundtune.data import DataError
from groundtune.data.sample import DropReport, Sample
from groundtune.data.doc2dial import CONTEXT_LABEL, Dialogue, Document, Reference, Span
from groundtune.fileio import jsonl_lines, text_lines

@dataclass
class GroundedConfig:
    """Limits are in tokens of the tokenizer given to `grounded_samples` (whitespace words without one)."""

    max_document_tokens: int | None = None  # the document part with its markers; None = no limit
    max_answer_tokens: int | None = None
    history_turns: int = 2  # earlier turns shown in <I> … </I>, newest kept; 0 = none
    markers: bool = True  # wrap the grounding span(s) in <h> … </h>
    window_around_span: bool = False  # too-long document: keep a window around the grounding instead of dropping

    def __post_init__(self):
        if self.history_turns < 0:
            raise DataError(f"history_turns must be >= 0, got {self.history_turns}")
        for name in ("max_document_tokens", "max_answer_tokens"):
            if (v := getattr(self, name)) is not None and v <= 0:
                raise DataError(f"{name} must be positive or None, got {v}")
        if self.window_around_span and self.max_document_tokens is None:
            raise DataError("window_around_span needs max_document_tokens (the window size)")


class TokenCounter:
    """Counts tokens with a Hugging Face tokenizer, or whitespace words when there is none."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


# ----------------------------------------------------------------------------------------- prompt parts


def format_turn(role: str, utterance: str) -> str:
    return f"{role}: {utterance.strip()}"


def build_prompt(document: str, history: Sequence[str], question: str) -> str:
    """The grounded prompt from a document text already assembled (gold with highlights, or retrieved passages)."""
    context = " ".join(h.strip() for h in history if h.strip())
    return f"{document.strip()} <I> {context} </I> <q> {question.strip()} </q>".replace("<I>  </I>", "<I> </I>")


def _regions(spans: Sequence[Span], text: str) -> list[tuple[int, int]]:
    """Character ranges to highlight: spans in document order, adjacent ones (nothing but spaces between) merged."""
    regions: list[list[int]] = []
    for span in sorted(spans, key=lambda s: s.start_sp):
        if regions and not text[regions[-1][1]:span.start_sp].strip():
            regions[-1][1] = max(regions[-1][1], span.end_sp)
        else:
            regions.append([span.start_sp, span.end_sp])
    return [(a, b) for a, b in regions]


def _render(text: str, regions: Sequence[tuple[int, int]], lo: int = 0, hi: int | None = None) -> str:
    """text[lo:hi] with each region's non-space core wrapped in "<h> … </h>"."""
    hi = len(text) if hi is None else hi
    out, cursor = [], lo
    for a, b in regions:
        core = text[a:b]
        a += len(core) - len(core.lstrip())
        b -= len(core) - len(core.rstrip())
        if a >= b:
            continue
        before = text[cursor:a]
        out.append(before + ("" if not before or before[-1].isspace() else " "))
        out.append(f"<h> {text[a:b]} </h>")
        cursor = b
        if cursor < hi and not text[cursor].isspace():
            out.append(" ")
    out.append(text[cursor:hi])
    return "".join(out)


def highlight(document: Document, span_ids: Iterable[str]) -> str:
    """The document text with the given spans wrapped in <h> … </h> (adjacent spans share one highlight)."""
    spans = [document.span(i) for i in span_ids]
    if any(s is None for s in spans):
        missing = [i for i, s in zip(span_ids, spans) if s is None]
        raise KeyError(f"document {document.doc_id!r} has no span {missing}")
    return _render(document.text, _regions(spans, document.text))


# ---------------------------------------------------------------------------------------- dialogue turns


@dataclass
class TurnContext:
    """An agent turn to predict, with what came before it. `id` is the official "{dial_id}_{turn_id}" of the
    turn right before the reply (DialDoc shared-task convention)."""

    id: str
    dial_id: str
    turn_id: int  # the agent turn answered (one past the last turn for an open-ended test dialogue)
    domain: str
    history: list[str]  # every turn before the question, oldest first, as "role: utterance"
    question: str  # the user turn(s) right before the agent turn; "" when the agent follows an agent turn
    answer: str  # the agent's utterance; "" for an open-ended test dialogue
    references: list[Reference]  # the agent turn's own grounding (v0.9's carried-over "reference" label excluded)

    @property
    def doc_ids(self) -> list[str | None]:
        return list(dict.fromkeys(r.doc_id for r in self.references))


def turn_contexts(dialogues: Iterable[Dialogue], open_end: bool = False) -> list[TurnContext]:
    """One context per agent turn; with `open_end`, also one for a dialogue that ends on the user's turn(s)
    (shared-task test inputs), with an empty answer."""
    contexts = []
    for dialogue in dialogues:
        turns = dialogue.turns
        targets = [i for i, t in enumerate(turns) if t.role == "agent"]
        if open_end and turns and turns[-1].role == "user":
            targets.append(len(turns))
        for i in targets:
            j = i
            while j > 0 and turns[j - 1].role == "user":
                j -= 1
            question = " ".join(t.utterance.strip() for t in turns[j:i])
            agent = turns[i] if i < len(turns) else None
            anchor = turns[i - 1].turn_id if i else (agent.turn_id - 1 if agent else 0)
            contexts.append(TurnContext(
                id=f"{dialogue.dial_id}_{anchor}",
                dial_id=dialogue.dial_id,
                turn_id=agent.turn_id if agent else turns[-1].turn_id + 1,
                domain=dialogue.domain,
                history=[format_turn(t.role, t.utterance) for t in turns[:j]],
                question=question,
                answer=agent.utterance.strip() if agent else "",
                references=[r for r in (agent.references if agent else []) if r.label != CONTEXT_LABEL],
            ))
    return contexts


def _recent(history: Sequence[str], n: int) -> list[str]:
    return list(history[-n:]) if n > 0 else []


# ------------------------------------------------------------------------------------------ gold samples


class _DocumentWindow:
    """Fits a document into a token budget: all of it, or a window of whole spans around the grounding, grown
    one span at a time on both sides. Per-span counts are cached per document."""

    def __init__(self, count: TokenCounter):
        self.count = count
        self._span_tokens: dict[str, list[int]] = {}

    def fit(self, doc: Document, regions, limit: int | None, window: bool,
            markers: bool) -> tuple[str, tuple[int, int] | None] | None:
        shown = regions if markers else []
        full = _render(doc.text, shown)
        if limit is None or self.count(full) <= limit:
            return full, None
        if not window:
            return None
        sizes = self._span_tokens.setdefault(doc.doc_id, [self.count(s.text_sp) for s in doc.spans])
        starts = [s.start_sp for s in doc.spans]
        first = max(i for i, s in enumerate(starts) if s <= regions[0][0])
        last = max(i for i, s in enumerate(starts) if s < regions[-1][1])
        lo, hi = first, last
        used = sum(sizes[lo:hi + 1]) + self.count("<h> </h>") * len(shown)
        grew = True
        while grew:
            grew = False
            if lo > 0 and used + sizes[lo - 1] <= limit:
                lo, used, grew = lo - 1, used + sizes[lo - 1], True
            if hi < len(sizes) - 1 and used + sizes[hi + 1] <= limit:
                hi, used, grew = hi + 1, used + sizes[hi + 1], True
        # Per-span counts only approximate the count of the joined text: check it, shrink the wider side.
        while True:
            a, b = doc.spans[lo].start_sp, doc.spans[hi].end_sp
            text = _render(doc.text, shown, a, b)
            if self.count(text) <= limit:
                return text, (a, b)
            if lo < first and (first - lo >= hi - last or hi == last):
                lo += 1
            elif hi > last:
                hi -= 1
            else:
                return None  # the grounding alone is over the limit


def grounded_samples(dialogues: Iterable[Dialogue], documents: dict[str, Document],
                     config: GroundedConfig | None = None, tokenizer=None,
                     source: str = "") -> tuple[list[Sample], DropReport]:
    """One sample per agent turn grounded in exactly one document; the rest are counted in the report."""
    config = config or GroundedConfig()
    count = TokenCounter(tokenizer)
    fitter = _DocumentWindow(count)
    report = DropReport(source)
    samples = []
    for ctx in turn_contexts(dialogues):
        where = f"{ctx.dial_id}#{ctx.turn_id}"
        if not ctx.question:
            report.drop("no_question", where)
            continue
        if not ctx.references:
            report.drop("no_reference", where)
            continue
        if len(ctx.doc_ids) > 1:
            report.drop("multi_document", where)
            continue
        doc = documents.get(ctx.doc_ids[0])
        if doc is None:
            report.drop("missing_document", where)
            continue
        span_ids = list(dict.fromkeys(r.id_sp for r in ctx.references))
        spans = [doc.span(i) for i in span_ids]
        if any(s is None for s in spans):
            report.drop("missing_span", where)
            continue
        if not ctx.answer:
            report.drop("empty_answer", where)
            continue
        if config.max_answer_tokens is not None and count(ctx.answer) > config.max_answer_tokens:
            report.drop("answer_too_long", where)
            continue
        fitted = fitter.fit(doc, _regions(spans, doc.text), config.max_document_tokens, config.window_around_span,
                            config.markers)
        if fitted is None:
            report.drop("document_too_long", where)
            continue
        document_text, window = fitted
        meta = {"dial_id": ctx.dial_id, "turn_id": ctx.turn_id, "domain": ctx.domain, "span_ids": span_ids}
        if window is not None:
            meta["window"] = list(window)
        samples.append(Sample(ctx.id, build_prompt(document_text, _recent(ctx.history, config.history_turns),
                                                   ctx.question), ctx.answer, doc.doc_id, meta))
        report.keep()
    return samples, report


# ------------------------------------------------------------------------------------------ RAG samples


def samples_from_passages(contexts: Sequence[TurnContext], passages: Sequence[Sequence[str]],
                          history_turns: int = 2, separator: str = "\n") -> list[Sample]:
    """Samples whose document part is the passages retrieved for each context (no highlight).

    `passages[i]` are the top-k passage texts for `contexts[i]`, best first.
    """
    if len(contexts) != len(passages):
        raise DataError(f"{len(contexts)} contexts but {len(passages)} passage lists; give one list per context")
    samples = []
    for ctx, found in zip(contexts, passages):
        document = separator.join(p.strip() for p in found)
        prompt = build_prompt(document, _recent(ctx.history, history_turns), ctx.question)
        doc_id = ctx.doc_ids[0] if len(ctx.doc_ids) == 1 else None
        samples.append(Sample(ctx.id, prompt, ctx.answer, doc_id,
                              {"dial_id": ctx.dial_id, "turn_id": ctx.turn_id, "domain": ctx.domain,
                               "passages": len(found)}))
    return samples


# ---------------------------------------------------------------------------------------- users' JSONL

_JSONL_FIELDS = ("document", "history", "question", "answer")


def load_jsonl_samples(path: str | Path, config: GroundedConfig | None = None,
                       tokenizer=None) -> tuple[list[Sample], DropReport]:
    """Samples from a JSONL file of {"document", "history", "question", "answer"} (optional "id", "doc_id",
    "dial_id"); history is a list of earlier turns (oldest first) or one string. The document is used as given:
    put "<h> … </h>" in it yourself to mark the grounding."""
    config = config or GroundedConfig()
    path = Path(path)
    count = TokenCounter(tokenizer)
    report = DropReport(str(path))
    samples = []
    with text_lines(path, what="data file") as f:
        for line_no, record in jsonl_lines(f, path, '{"document": …, "history": […], "question": …, "answer": …}',
                                           DataError):
            where = f"{path}, line {line_no}"
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in _JSONL_FIELDS if k not in record]
            if missing:
                raise DataError(f"{where}: missing field(s) {', '.join(missing)}; each line needs "
                                f"{', '.join(_JSONL_FIELDS)} (history may be [] or \"\")")
            history = record["history"]
            if isinstance(history, str):
                history = [history] if history.strip() else []
            elif isinstance(history, list) and all(isinstance(h, str) for h in history):
                history = _recent(history, config.history_turns)
            else:
                raise DataError(f"{where}: history must be a list of strings or a string")
            bad = [k for k in ("document", "question", "answer") if not isinstance(record[k], str)]
            if bad:
                raise DataError(f"{where}: field(s) {', '.join(bad)} must be strings")
            sample_id = str(record.get("id", f"{path.stem}:{line_no}"))
            if not record["question"].strip():
                report.drop("no_question", sample_id)
                continue
            if not record["answer"].strip():
                report.drop("empty_answer", sample_id)
                continue
            if config.max_answer_tokens is not None and count(record["answer"]) > config.max_answer_tokens:
                report.drop("answer_too_long", sample_id)
                continue
            # A plain document has no spans to centre a window on, so a long one is always dropped.
            if config.max_document_tokens is not None and count(record["document"]) > config.max_document_tokens:
                report.drop("document_too_long", sample_id)
                continue
            meta = {"line": line_no}
            if "dial_id" in record:
                meta["dial_id"] = str(record["dial_id"])
            samples.append(Sample(sample_id, build_prompt(record["document"], history, record["question"]),
                                  record["answer"].strip(), record.get("doc_id"), meta))
            report.keep()
    return samples, report


# ---------------------------------------------------------------------------------------------- split


def _dialogue_key(item) -> str:
    if isinstance(item, Dialogue):
        return item.dial_id
    if isinstance(item, Sample):
        return str(item.meta.get("dial_id", item.id))
    if isinstance(item, TurnContext):
        return item.dial_id
    raise TypeError(f"cannot tell the dialogue of a {type(item).__name__}")


def split_by_dialogue(items: Sequence, validation_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Deterministic train / validation split by dialogue id, so turns of one dialogue never straddle the two.

    Works on Samples, Dialogues or TurnContexts; keeps the input order within each part.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    keys = sorted({_dialogue_key(x) for x in items})
    # Ordered by a seeded hash, not random.shuffle: the same split on every machine and Python version.
    keys.sort(key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    n_val = round(len(keys) * validation_fraction)
    if validation_fraction > 0 and n_val == 0 and len(keys) > 1:
        n_val = 1
    validation = set(keys[:n_val])
    train = [x for x in items if _dialogue_key(x) not in validation]
    held_out = [x for x in items if _dialogue_key(x) in validation]
    return train, held_out
