"""OpenAI's routes: /v1/models, /v1/chat/completions and /v1/completions (streaming as OpenAI's SSE chunks), with
groundtune's `citations` extension.

Request extensions (the official client sends them through `extra_body`): `retrieval` (false: no passages from
the index), `documents` (a list of texts or {text, title, doc_id}: ground on these instead of the index) and `k`
(passages to retrieve). Responses carry `citations`: [{id, doc_id, title, text, score, source}], where source
reads file · page · title path; a stream sends them in its first chunk, before any token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from groundtune.serve.citations import build_chat_prompt, request_documents, split_conversation
from groundtune.serve.engine import GenRequest
from groundtune.serve.schemas import APIError, ChatRequest, CompletionRequest

router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/models")
async def models(request: Request):
    server = request.app.state.server
    engine = server.engine
    data = [{"id": engine.base_name, "object": "model", "created": server.created, "owned_by": "groundtune",
             "method": None}]
    for name, state in list(engine.adapters.items()):
        data.append({"id": name, "object": "model", "created": server.created, "owned_by": "groundtune",
                     "method": state.method, "prompt_format": state.prompt_format.get("kind")})
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request):
    server = request.app.state.server
    engine = server.engine
    adapter, fmt = server.resolve(body.model)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    _, history, question = split_conversation(messages)
    if body.documents is not None:
        citations = request_documents([d if isinstance(d, str) else d.model_dump() for d in body.documents])
    elif body.retrieval is False or server.grounding.retriever is None:
        citations = []
    else:
        k = body.k or int(fmt.get("k", 3))
        citations = await asyncio.to_thread(server.grounding.passages, question, history, k)
    prompt = build_chat_prompt(fmt, engine.tokenizer, messages, citations)
    ids, limit = server.prepare(prompt, fmt, adapter, body.limit, capped=True)
    gen, queue = server.start(body, ids, adapter, limit)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    cited = [c.to_dict() for c in citations]
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_stream(request, gen, queue, cid, created, body.model, "chat.completion.chunk",
                                         cited, usage), media_type="text/event-stream", headers=SSE_HEADERS)
    text, reason = await _collect(request, gen, queue)
    return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": reason}],
            "usage": _usage(gen), "citations": cited}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    server = request.app.state.server
    adapter, fmt = server.resolve(body.model)
    ids, limit = server.prepare(body.prompt, fmt, adapter, body.limit, capped=False)
    gen, queue = server.start(body, ids, adapter, limit)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_stream(request, gen, queue, cid, created, body.model, "text_completion", None,
                                         usage), media_type="text/event-stream", headers=SSE_HEADERS)
    text, reason = await _collect(request, gen, queue)
    return {"id": cid, "object": "text_completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            "usage": _usage(gen)}


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _events(request: Request, gen: GenRequest, queue: asyncio.Queue):
    """The request's events; a client that goes away cancels its generation."""
    checked = time.monotonic()
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=0.25)
            except asyncio.TimeoutError:
                event = None
            if time.monotonic() - checked > 0.2 or event is None:  # tokens may keep coming: look every 0.2 s
                checked = time.monotonic()
                if await request.is_disconnected():
                    return
            if event is None:
                continue
            yield event
            if event[0] in ("done", "error"):
                return
    finally:
        if not gen.done:
            gen.cancel()


def _usage(gen: GenRequest) -> dict:
    n = len(gen.prompt_ids)
    return {"prompt_tokens": n, "completion_tokens": len(gen.tokens), "total_tokens": n + len(gen.tokens)}


async def _collect(request: Request, gen: GenRequest, queue: asyncio.Queue) -> tuple[str, str]:
    parts, reason = [], "stop"
    async for kind, payload in _events(request, gen, queue):
        if kind == "delta":
            parts.append(payload)
        elif kind == "done":
            reason = payload
        else:
            raise APIError(500, payload, "server_error")
    return "".join(parts), reason


async def _stream(request: Request, gen: GenRequest, queue: asyncio.Queue, cid: str, created: int, model: str,
                  obj: str, citations: list[dict] | None, include_usage: bool):
    chat = obj == "chat.completion.chunk"

    def chunk(content: str | None = None, finish: str | None = None, first: bool = False) -> dict:
        if chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": content} if content else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish}
        out = {"id": cid, "object": obj, "created": created, "model": model, "choices": [choice]}
        if first and citations is not None:
            out["citations"] = citations
        return out

    if chat:
        yield _sse(chunk(first=True))  # the citations come before the first token
    async for kind, payload in _events(request, gen, queue):
        if kind == "delta":
            yield _sse(chunk(payload))
        elif kind == "done":
            yield _sse(chunk(finish=payload if payload in ("stop", "length") else "stop"))
            if include_usage:
                yield _sse({"id": cid, "object": obj, "created": created, "model": model, "choices": [],
                            "usage": _usage(gen)})
        else:
            yield _sse({"error": {"message": payload, "type": "server_error", "param": None, "code": None}})
    yield "data: [DONE]\n\n"
