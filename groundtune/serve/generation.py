"""One request's generation as the routes see it, whoever runs it: the local engine (`LocalGeneration`) or a
backend server (`BackendGeneration`). Both give the same events, ("delta", text) then ("done", finish_reason) or
("error", message or BackendError), and both stop their generation when the client goes away, which is looked
for every 0.2 s while tokens come and whenever none has come for 0.25 s.

The OpenAI responses are written here from those events: a streamed answer as SSE chunks (the chat's first
chunk carries the citations, before any token), or a whole one.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import Request

from groundtune.serve.backend import BackendError, BackendStream
from groundtune.serve.engine import GenRequest
from groundtune.serve.schemas import APIError


async def _until_disconnect(request: Request, queue: asyncio.Queue):
    """The queue's events until ("done" | "error", ...), or until the client has gone away."""
    checked = time.monotonic()
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


class LocalGeneration:
    def __init__(self, request: Request, gen: GenRequest, queue: asyncio.Queue):
        self.request, self.gen, self.queue = request, gen, queue

    async def events(self):
        try:
            async for event in _until_disconnect(self.request, self.queue):
                yield event
        finally:
            if not self.gen.done:
                self.gen.cancel()

    def usage(self) -> dict:
        n = len(self.gen.prompt_ids)
        return {"prompt_tokens": n, "completion_tokens": len(self.gen.tokens), "total_tokens": n + len(self.gen.tokens)}


class BackendGeneration:
    """A backend's stream, read by a task of its own into a queue (so the client's going away is seen even while
    the backend is silent); closing it closes the backend connection, which cancels the backend's generation.
    `on_close` runs once, when the generation ends however it ends (the front's in-flight count)."""

    def __init__(self, request: Request, stream: BackendStream, prompt_tokens: int, tokenizer, on_close):
        self.request, self.stream, self.tokenizer, self.on_close = request, stream, tokenizer, on_close
        self.prompt_tokens = prompt_tokens
        self.text: list[str] = []
        self.backend_usage: dict | None = None

    async def _pump(self, queue: asyncio.Queue) -> None:
        try:
            async for kind, payload in self.stream.events():
                if kind == "usage":
                    self.backend_usage = payload
                else:
                    await queue.put((kind, payload))
        except BackendError as err:
            await queue.put(("error", err))
        except Exception as err:  # whatever a broken backend causes, the client gets a message, not a hang
            await queue.put(("error", BackendError(502, f"reading the backend's answer failed: "
                                                        f"{type(err).__name__}: {err}", "backend_failed")))

    async def events(self):
        queue: asyncio.Queue = asyncio.Queue()
        pump = asyncio.create_task(self._pump(queue))
        try:
            async for event in _until_disconnect(self.request, queue):
                if event[0] == "delta":
                    self.text.append(event[1])
                yield event
        finally:
            pump.cancel()
            try:
                await asyncio.shield(self.close())
            except (asyncio.CancelledError, Exception):
                pass

    async def close(self) -> None:
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()
            await self.stream.aclose()

    def usage(self) -> dict:
        """The backend's count when it sent one, else the front's (same tokenizer family, so close)."""
        if self.backend_usage and isinstance(self.backend_usage.get("completion_tokens"), int):
            done = self.backend_usage["completion_tokens"]
        else:
            done = len(self.tokenizer("".join(self.text), add_special_tokens=False)["input_ids"]) if self.text else 0
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done, "total_tokens": self.prompt_tokens + done}


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _error_body(payload) -> dict:
    if isinstance(payload, BackendError):
        return {"message": str(payload), "type": payload.type, "param": None, "code": payload.code}
    return {"message": payload, "type": "server_error", "param": None, "code": None}


async def collect(generation) -> tuple[str, str]:
    """(text, finish_reason) of a whole answer; a failure is the request's error (a backend's: 502 or 504)."""
    parts, reason = [], "stop"
    async for kind, payload in generation.events():
        if kind == "delta":
            parts.append(payload)
        elif kind == "done":
            reason = payload
        else:
            error = _error_body(payload)
            status = payload.status if isinstance(payload, BackendError) else 500
            raise APIError(status, error["message"], error["type"], code=error["code"])
    return "".join(parts), reason


async def stream(generation, cid: str, created: int, model: str, obj: str, citations: list[dict] | None,
                 include_usage: bool):
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
    async for kind, payload in generation.events():
        if kind == "delta":
            yield _sse(chunk(payload))
        elif kind == "done":
            yield _sse(chunk(finish=payload if payload in ("stop", "length") else "stop"))
            if include_usage:
                yield _sse({"id": cid, "object": obj, "created": created, "model": model, "choices": [],
                            "usage": generation.usage()})
        else:
            yield _sse({"error": _error_body(payload)})
    yield "data: [DONE]\n\n"
