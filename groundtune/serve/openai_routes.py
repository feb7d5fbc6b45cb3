"""OpenAI's routes: /v1/models, /v1/chat/completions and /v1/completions (streaming as OpenAI's SSE chunks), with
groundtune's `citations` extension.

Request extensions (the official client sends them through `extra_body`): `retrieval` (false: no passages from
the index), `documents` (a list of texts or {text, title, doc_id}: ground on these instead of the index) and `k`
(passages to retrieve). Responses carry `citations`: [{id, doc_id, title, text, score, source}], where source
reads file · page · title path; a stream sends them in its first chunk, before any token.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from groundtune.serve.citations import build_chat_prompt, request_documents, split_conversation
from groundtune.serve.generation import collect, stream
from groundtune.serve.schemas import ChatRequest, CompletionRequest

router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/models")
async def models(request: Request):
    return {"object": "list", "data": await request.app.state.server.model_list()}


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request):
    server = request.app.state.server
    route = await server.route(body.model)
    fmt = route.prompt_format
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    conversation = split_conversation(messages)  # once per request: retrieval and the prompt both read it
    if body.documents is not None:
        citations = request_documents([d if isinstance(d, str) else d.model_dump() for d in body.documents])
    elif body.retrieval is False or server.grounding.retriever is None:
        citations = []
    else:
        k = body.k or int(fmt.get("k", 3))
        citations = await asyncio.to_thread(server.grounding.passages, conversation.question,
                                            conversation.history, k)
    prompt = build_chat_prompt(fmt, server.tokenizer, conversation, citations)
    generation = await server.generate(request, body, prompt, route, capped=True)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    cited = [c.to_dict() for c in citations]
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return _streaming(generation, stream(generation, cid, created, body.model, "chat.completion.chunk", cited,
                                             usage))
    text, reason = await collect(generation)
    return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": reason}],
            "usage": generation.usage(), "citations": cited}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    server = request.app.state.server
    route = await server.route(body.model)
    generation = await server.generate(request, body, body.prompt, route, capped=False)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return _streaming(generation, stream(generation, cid, created, body.model, "text_completion", None, usage))
    text, reason = await collect(generation)
    return {"id": cid, "object": "text_completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
            "usage": generation.usage()}


def _streaming(generation, chunks) -> StreamingResponse:
    # A backend generation is closed after the response too, in case the client left before its first chunk
    # (the chunks' own cleanup then never ran).
    close = getattr(generation, "close", None)
    return StreamingResponse(chunks, media_type="text/event-stream", headers=SSE_HEADERS,
                             background=BackgroundTask(close) if close else None)
