"""Grounding a chat request: which passages it gets (the index, the request's own documents, or none), and the
prompt built from them the way the adapter was trained (its folder's `groundtune.data.prompt_format`).

The retrieval query is training's: `groundtune.retrieval.build_query(question, history)`, the question then the
earlier turns newest first (MultiDoc2Dial's format). The question is the run of user messages that ends the
conversation; the earlier messages are the history, each as "user: …" or "agent: …" (an assistant message is
the agent's turn, as in doc2dial).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from groundtune.errors import GroundtuneError

ROLES = {"user": "user", "assistant": "agent"}
MAX_K = 20


class RequestError(GroundtuneError):
    """A request that cannot be served as written (the message says which field and why)."""


@dataclass
class Citation:
    id: str  # passage id: its line in the index's passages.jsonl, or "request:N" for the request's N-th document
    doc_id: str
    title: str
    text: str
    score: float | None = None
    source: str = ""  # where it is, for people: "handbook.pdf p. 12 · Renewals › Fees" (Passage.citation)

    def to_dict(self) -> dict:
        return {"id": self.id, "doc_id": self.doc_id, "title": self.title, "text": self.text, "score": self.score,
                "source": self.source or self.doc_id}


def split_conversation(messages: list[dict]) -> tuple[str | None, list[str], str]:
    """(system text, history turns oldest first as "role: utterance", question) of OpenAI chat messages."""
    system = [m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"]]
    turns = [(ROLES[m["role"]], m["content"] or "") for m in messages if m["role"] in ROLES]
    if not turns or turns[-1][0] != "user":
        raise RequestError("messages: the conversation must end with a user message (the question)")
    j = len(turns)
    while j > 0 and turns[j - 1][0] == "user":
        j -= 1
    question = " ".join(t.strip() for _, t in turns[j:] if t.strip())
    if not question:
        raise RequestError("messages: the last user message is empty; ask a question")
    history = [f"{role}: {text.strip()}" for role, text in turns[:j] if text.strip()]
    return ("\n".join(system) if system else None), history, question


class Grounding:
    """The index (optional) behind the chat endpoint; searched under a lock (retrievers are not thread-safe)."""

    def __init__(self, retriever=None):
        self.retriever = retriever
        self._lock = threading.Lock()

    def passages(self, question: str, history: list[str], k: int) -> list[Citation]:
        from groundtune.retrieval.queries import build_query

        if self.retriever is None:
            return []
        query = build_query(question, history)
        with self._lock:
            hits = self.retriever.search(query, k=k)
        return [Citation(str(h.index), h.passage.doc_id, h.passage.title, h.passage.text, round(float(h.score), 4),
                         h.passage.citation) for h in hits]


def request_documents(documents: list) -> list[Citation]:
    """The request's own documents (text, or {text, title, doc_id}) as citations."""
    out = []
    for i, d in enumerate(documents):
        if isinstance(d, str):
            d = {"text": d}
        text = (d.get("text") or "").strip()
        if not text:
            raise RequestError(f"documents[{i}]: a document needs non-empty text")
        out.append(Citation(f"request:{i}", str(d.get("doc_id") or f"request-{i}"), str(d.get("title") or ""), text))
    return out


def _documents_system(citations: list[Citation]) -> str:
    lines = ["Answer the user's question from these documents."]
    for n, c in enumerate(citations, 1):
        lines.append(f"[{n}] {c.title + ': ' if c.title else ''}{c.text}")
    return "\n".join(lines)


def build_chat_prompt(fmt: dict, tokenizer, messages: list[dict], citations: list[Citation]) -> str:
    """The prompt of a chat request in the adapter's prompt format (see groundtune.data.prompt_format).

    fmt kind "chat" (the bare base model of an instruct family): the tokenizer's chat template over the whole
    conversation, the documents in a system message."""
    system, history, question = split_conversation(messages)
    texts = [c.text for c in citations]
    kind = fmt.get("kind", "grounded")
    if kind == "grounded":
        from groundtune.data.grounded import build_prompt

        n = int(fmt.get("history_turns", 2))
        return build_prompt(str(fmt.get("separator", "\n")).join(t.strip() for t in texts),
                            history[-n:] if n > 0 else [], question)
    template = fmt.get("template")
    if kind == "chat" or template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise RequestError("this model's tokenizer has no chat template; serve an adapter trained with another one")
        chat = []
        if system or citations:
            chat.append({"role": "system", "content": "\n\n".join(x for x in (system, _documents_system(citations)
                                                                               if citations else None) if x)})
        chat += [{"role": m["role"], "content": m["content"] or ""} for m in messages if m["role"] in ROLES]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    from groundtune.data.instruct import InstructTemplate

    t = InstructTemplate(template["prompt_input"], template["prompt_no_input"], template["response_split"],
                         template.get("name", "custom"))
    return t.prompt(question, "\n".join(texts))


def base_format(tokenizer) -> dict:
    """How the bare base model is prompted: its chat template when it has one, else the default grounded format."""
    from groundtune.data.prompt_format import DEFAULT

    if getattr(tokenizer, "chat_template", None):
        return {"kind": "chat", "k": DEFAULT["k"], "max_prompt_tokens": DEFAULT["max_prompt_tokens"]}
    return dict(DEFAULT)
