"""The FastAPI app: OpenAI's /v1/models, /v1/chat/completions and /v1/completions (streaming as OpenAI's SSE
chunks), a `citations` extension, admin endpoints that add and remove adapters, and the chat page at /.

Request extensions (the official client sends them through `extra_body`): `retrieval` (false: no passages from
the index), `documents` (a list of texts or {text, title, doc_id}: ground on these instead of the index) and `k`
(passages to retrieve). Responses carry `citations`: [{id, doc_id, title, text, score, source}], where source
reads file · page · title path; a stream sends them in its first chunk, before any token.

No request names a file on the server: adapters are added by uploading their files (base64) to /admin/adapters,
which needs the server's API key; the page's three files are fixed routes.

No request can crash it: the key is checked and the body bounded before anything is parsed (gate.py), every
number of a request has a range, uploads are checked file by file and their size in parameters is computed
from their config before anything is allocated; what is wrong gets a 4xx in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from groundtune.errors import GroundtuneError
from groundtune.data.prompt_format import base_format
from groundtune.serve.citations import MAX_K, Grounding, RequestError, build_chat_prompt, \
    request_documents, split_conversation
from groundtune.serve.engine import AdapterExists, Engine, GenRequest, QueueFull
from groundtune.serve.gate import RequestGate
from groundtune.serve.store import AdapterStore

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_TOKENS = 256
MAX_STOP = 4
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
UPLOAD_FILES = ("adapter_config.json", "adapter_model.safetensors", "groundtune_prompt.json")
MAX_BODY_BYTES = 2 * 2**20  # far more text than any model's context holds
MAX_UPLOAD_BYTES = 256 * 2**20
MAX_MESSAGES = 256
MAX_NEW_TOKENS = 2**20  # above every context length; bounds max_tokens where the model states none
INT64 = 2**63  # seeds as OpenAI's: a signed 64-bit integer


# ------------------------------------------------------------------------------------------------ schemas


class _Request(BaseModel):
    # OpenAI options this server does not use are accepted, not applied; NaN and infinity are no numbers here.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1)

    @field_validator("n", mode="before")
    @classmethod
    def _one_choice(cls, v):
        if v != 1:
            raise ValueError(f"n is {v}; this server returns one choice per request (n=1): send several requests")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings")
        return stops

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise RequestError("messages: only text content parts are supported")
            return "".join(p.text or "" for p in self.content)
        return self.content or ""


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    title: str = ""
    doc_id: str = ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    retrieval: bool | None = None
    documents: list[str | Document] | None = Field(None, max_length=MAX_K)
    k: int | None = Field(None, ge=1, le=MAX_K)


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError(f"prompt is a list of {len(v)}; this server takes one prompt per request")
            v = v[0]
        return v


class AdapterUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    files: dict[str, str]  # file name (one of UPLOAD_FILES) -> base64 content


# ------------------------------------------------------------------------------------------------ errors


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code, self.headers = status, message, type, param, code, headers


def _error(status: int, message: str, type: str = "invalid_request_error", param=None, code=None, headers=None):
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    problems, param = [], None
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            return f"the request body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})", None
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        param = param or (loc[0] if loc else None)
        problems.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return "; ".join(problems[:5]) or "invalid request", param


# ------------------------------------------------------------------------------------------------- app


class Server:
    """What the routes share: the engine, the grounding, the API key, where uploads are kept."""

    def __init__(self, engine: Engine, grounding: Grounding | None = None, api_key: str | None = None,
                 store: AdapterStore | None = None):
        self.engine = engine
        self.grounding = grounding or Grounding()
        self.api_key = api_key
        self.store = store or AdapterStore()
        self.admin = asyncio.Lock()  # one upload or removal at a time: a name is checked, loaded and kept together
        self.created = int(time.time())
        self.base_fmt = base_format(engine.tokenizer)

    def resolve(self, name: str):
        """(adapter state or None for the base, prompt format) of a request's `model`."""
        if name in (self.engine.base_name, "base"):
            return None, self.base_fmt
        state = self.engine.adapters.get(name)
        if state is None:
            known = ", ".join([self.engine.base_name, *self.engine.adapters])
            raise APIError(404, f"model {name!r} is not served here; GET /v1/models lists them: {known}",
                           param="model", code="model_not_found")
        return state, state.prompt_format

    def prepare(self, prompt: str, fmt: dict, adapter, limit: int | None, capped: bool) -> tuple[list[int], int]:
        from groundtune.data.sample import encode_prompt

        ids = encode_prompt(self.engine.tokenizer, prompt, fmt.get("max_prompt_tokens") if capped else None)
        if not ids:
            raise APIError(400, "the prompt is empty once tokenized", param="prompt")
        ctx = self.engine.context_length
        used = len(ids) + (adapter.virtual_tokens if adapter else 0)
        extra = f" (+{adapter.virtual_tokens} prompt-method tokens)" if adapter and adapter.virtual_tokens else ""
        if ctx and used >= ctx:
            raise APIError(400, f"the prompt is {len(ids)} tokens{extra}; the model's context length is {ctx} tokens: "
                                "shorten it", param="messages", code="context_length_exceeded")
        if limit is None:
            limit = min(DEFAULT_MAX_TOKENS, ctx - used) if ctx else DEFAULT_MAX_TOKENS
        elif ctx and used + limit > ctx:
            raise APIError(400, f"the prompt is {len(ids)} tokens{extra} and max_tokens is {limit}: together over the "
                                f"model's context length of {ctx}; lower max_tokens or shorten the prompt",
                           param="max_tokens", code="context_length_exceeded")
        return ids, limit

    def start(self, request: _Request, ids: list[int], adapter, limit: int) -> tuple[GenRequest, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(event):
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        gen = GenRequest(ids, adapter, limit, emit, temperature=request.temperature, top_p=request.top_p,
                         stop=list(request.stop or []), seed=request.seed)
        try:
            self.engine.submit(gen)
        except QueueFull as err:
            raise APIError(503, str(err), "server_busy", code="queue_full", headers={"Retry-After": "1"}) from None
        return gen, queue


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


def create_app(engine: Engine, grounding: Grounding | None = None, api_key: str | None = None, *,
               store: AdapterStore | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The app over a running engine. store: where uploads are kept (default: nowhere, they live in memory).
    The OpenAPI schema is not served (`app.openapi()` gives it, e.g. to a fuzzer)."""
    from groundtune.serve.gate import check_api_key

    check_api_key(api_key)
    server = Server(engine, grounding, api_key, store)
    app = FastAPI(title="groundtune", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(RequestGate, api_key=api_key, max_body_bytes=max_body_bytes, max_upload_bytes=max_upload_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return _error(err.status, err.message, err.type, err.param, err.code, err.headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, err: RequestError):
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        message, param = _validation_message(err)
        return _error(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), "not_found" if err.status_code == 404 else "invalid_request_error")

    # ---- the page
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/app.js", include_in_schema=False)
    async def page_js():
        return FileResponse(STATIC / "app.js", media_type="text/javascript")

    @app.get("/static/style.css", include_in_schema=False)
    async def page_css():
        return FileResponse(STATIC / "style.css", media_type="text/css")

    @app.get("/health")
    async def health():
        stats = {k: v for k, v in engine.stats.items() if k != "batch_sizes"}
        return {"status": "ok", "queued": engine.queued(), "retrieval": server.grounding.retriever is not None,
                "api_key": server.api_key is not None, **stats}

    # ---- OpenAI
    @app.get("/v1/models")
    async def models(request: Request):
        data = [{"id": engine.base_name, "object": "model", "created": server.created, "owned_by": "groundtune",
                 "method": None}]
        for name, state in list(engine.adapters.items()):
            data.append({"id": name, "object": "model", "created": server.created, "owned_by": "groundtune",
                         "method": state.method, "prompt_format": state.prompt_format.get("kind")})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        adapter, fmt = server.resolve(body.model)
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
        prompt = build_chat_prompt(fmt, engine.tokenizer, conversation, citations)
        ids, limit = server.prepare(prompt, fmt, adapter, body.limit, capped=True)
        gen, queue = server.start(body, ids, adapter, limit)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        cited = [c.to_dict() for c in citations]
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(request, gen, queue, cid, created, body.model, "chat.completion.chunk",
                                             cited, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        text, reason = await _collect(request, gen, queue)
        return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": reason}],
                "usage": _usage(gen), "citations": cited}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        adapter, fmt = server.resolve(body.model)
        ids, limit = server.prepare(body.prompt, fmt, adapter, body.limit, capped=False)
        gen, queue = server.start(body, ids, adapter, limit)
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(request, gen, queue, cid, created, body.model, "text_completion", None,
                                             usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        text, reason = await _collect(request, gen, queue)
        return {"id": cid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
                "usage": _usage(gen)}

    # ---- admin
    @app.get("/admin/adapters")
    async def list_adapters(request: Request):
        return {"adapters": [{"name": n, "method": s.method, "prompt_format": s.prompt_format}
                             for n, s in list(engine.adapters.items())]}

    @app.post("/admin/adapters", status_code=201)
    async def add_adapter(body: AdapterUpload, request: Request):
        if not NAME.match(body.name) or body.name in (engine.base_name, "base"):
            raise APIError(400, f"adapter name {body.name!r}: use 1-64 letters, digits, '.', '_', ':' or '-', not the "
                                "base model's name", param="name")
        unknown = sorted(set(body.files) - set(UPLOAD_FILES))
        if unknown or not {"adapter_config.json", "adapter_model.safetensors"} <= set(body.files):
            raise APIError(400, f"files must be adapter_config.json and adapter_model.safetensors (and optionally "
                                f"groundtune_prompt.json), base64-encoded; got {sorted(body.files)[:5]}",
                           param="files")
        async with server.admin:
            if body.name in engine.adapters:
                raise APIError(409, f"an adapter called {body.name!r} is served already; DELETE it first",
                               param="name")
            with server.store.scratch() as folder:
                for file, data in body.files.items():
                    try:
                        (folder / file).write_bytes(base64.b64decode(data, validate=True))
                    except (binascii.Error, ValueError):
                        raise APIError(400, f"files.{file} is not valid base64", param="files") from None
                try:
                    state = await asyncio.wrap_future(engine.add_adapter(body.name, folder, source="upload"))
                except AdapterExists as err:
                    raise APIError(409, str(err), param="name") from None
                except (ValueError, TypeError, KeyError, OSError, GroundtuneError) as err:
                    raise APIError(400, f"adapter {body.name!r} could not be loaded: {_scrub(str(err), folder)}",
                                   param="files") from None
                try:
                    server.store.keep(folder, body.name)
                except OSError as err:  # it serves, but would not come back after a restart: say so, undo
                    engine.remove_adapter(body.name)
                    raise APIError(500, f"adapter {body.name!r} could not be kept in --adapter-dir: "
                                        f"{err.strerror or err}", "server_error") from None
        return {"id": state.name, "object": "model", "method": state.method}

    @app.delete("/admin/adapters/{name}")
    async def delete_adapter(name: str, request: Request):
        async with server.admin:
            try:
                engine.remove_adapter(name)
            except KeyError:
                raise APIError(404, f"no adapter called {name!r} is served", param="name",
                               code="model_not_found") from None
            server.store.remove(name)
        return {"id": name, "object": "model", "deleted": True}

    return app


def _scrub(message: str, folder: Path) -> str:
    """An upload's error message without the server's paths: its files by their own names."""
    return message.replace(f"{folder}{os.sep}", "").replace(str(folder), "the upload")


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
