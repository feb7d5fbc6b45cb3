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


@dataclass
class Conversation:
    """An OpenAI chat conversation, split once per request."""

    system: str | None  # the system and developer messages, joined
    history: list[str]  # earlier turns oldest first, each "user: ..." or "agent: ..."
    question: str  # the run of user messages that ends the conversation
    turns: list[dict]  # the user and assistant messages as {"role", "content"} (for chat templates)


def split_conversation(messages: list[dict]) -> Conversation:
    """The system text, history turns and question of OpenAI chat messages."""
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
    return Conversation("\n".join(system) if system else None, history, question,
                        [{"role": m["role"], "content": m["content"] or ""} for m in messages if m["role"] in ROLES])


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


def build_chat_prompt(fmt: dict, tokenizer, conversation: Conversation, citations: list[Citation]) -> str:
    """The prompt of a chat request in the adapter's prompt format (`groundtune.data.prompt_format.render`)."""
    from groundtune.data.prompt_format import NoChatTemplate, render

    try:
        return render(fmt, tokenizer, question=conversation.question, history=conversation.history,
                      documents=[(c.title, c.text) for c in citations], system=conversation.system,
                      turns=conversation.turns)
    except NoChatTemplate as err:
        raise RequestError(str(err)) from None
