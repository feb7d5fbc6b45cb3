"""The FastAPI app: OpenAI's routes (openai_routes.py), admin endpoints that add and remove adapters and the health
check (admin.py), and the chat page at / (page.py), over what they share (`Server`).

No request can crash it: the key is checked and the body bounded before anything is parsed (gate.py), every
number of a request has a range (schemas.py), uploads are checked file by file and their size in parameters is
computed from their config before anything is allocated; what is wrong gets a 4xx in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from groundtune.serve import admin, openai_routes, page
from groundtune.serve.citations import Grounding, RequestError, base_format
from groundtune.serve.engine import Engine, GenRequest, QueueFull
from groundtune.serve.gate import RequestGate, check_api_key
from groundtune.serve.schemas import DEFAULT_MAX_TOKENS, MAX_BODY_BYTES, MAX_UPLOAD_BYTES, APIError, \
    GenerationRequest, error_response, validation_message
from groundtune.serve.store import AdapterStore


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

    def local_engine(self) -> Engine:
        return self.engine

    async def health(self) -> dict:
        stats = {k: v for k, v in self.engine.stats.items() if k != "batch_sizes"}
        return {"status": "ok", "queued": self.engine.queued(), "retrieval": self.grounding.retriever is not None,
                "api_key": self.api_key is not None, **stats}

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

    def start(self, request: GenerationRequest, ids: list[int], adapter, limit: int) -> tuple[GenRequest, asyncio.Queue]:
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


def create_app(engine: Engine, grounding: Grounding | None = None, api_key: str | None = None, *,
               store: AdapterStore | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The app over a running engine. store: where uploads are kept (default: nowhere, they live in memory).
    The OpenAPI schema is not served (`app.openapi()` gives it, e.g. to a fuzzer)."""
    check_api_key(api_key)
    app = FastAPI(title="groundtune", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = Server(engine, grounding, api_key, store)
    app.add_middleware(RequestGate, api_key=api_key, max_body_bytes=max_body_bytes, max_upload_bytes=max_upload_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return error_response(err.status, err.message, err.type, err.param, err.code, err.headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, err: RequestError):
        return error_response(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        message, param = validation_message(err)
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail),
                              "not_found" if err.status_code == 404 else "invalid_request_error")

    app.include_router(page.router)
    app.include_router(admin.router)
    app.include_router(openai_routes.router)
    return app
