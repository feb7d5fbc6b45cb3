"""The FastAPI app: OpenAI's routes (openai_routes.py), admin endpoints that add and remove adapters and the health
check (admin.py), and the chat page at / (page.py), over what they share (`Server`).

No request can crash it: the key is checked and the body bounded before anything is parsed (gate.py), every
number of a request has a range (schemas.py), uploads are checked file by file and their size in parameters is
computed from their config before anything is allocated; what is wrong gets a 4xx in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from groundtune.methods import get as get_method
from groundtune.serve import admin, openai_routes, page
from groundtune.serve.backend import Backend, BackendError
from groundtune.data.prompt_format import base_format
from groundtune.serve.citations import Grounding, RequestError
from groundtune.serve.engine import AdapterState, Engine, GenRequest, QueueFull
from groundtune.serve.gate import RequestGate, check_api_key
from groundtune.serve.generation import BackendGeneration, LocalGeneration
from groundtune.serve.schemas import DEFAULT_MAX_TOKENS, MAX_BODY_BYTES, MAX_UPLOAD_BYTES, APIError, \
    GenerationRequest, error_response, validation_message
from groundtune.serve.store import AdapterStore
from groundtune.errors import GroundtuneError


@dataclass
class Route:
    """Where a request's `model` is generated: the local engine (adapter None: its base) or the backend."""

    name: str
    prompt_format: dict
    adapter: AdapterState | None = None
    backend: bool = False


@dataclass
class FrontAdapter:
    """An adapter a front without a local engine knows from its folder: its method and prompt format only."""

    name: str
    method: str
    prompt_format: dict


class Server:
    """What the routes share: the engine and/or the backend, the tokenizer prompts are counted with, the
    grounding, the API key, where uploads are kept.

    engine None: a front (`serve --backend` without --local-engine); `known` then holds the adapters given to it,
    whose prompt formats it applies to requests it sends to the backend."""

    def __init__(self, engine: Engine | None, grounding: Grounding | None = None, api_key: str | None = None,
                 store: AdapterStore | None = None, *, backend: Backend | None = None, tokenizer=None,
                 known: dict[str, FrontAdapter] | None = None, context_length: int | None = None,
                 max_in_flight: int = 64):
        if engine is None and (backend is None or tokenizer is None):
            raise GroundtuneError("a server needs an engine, or a backend and the tokenizer of the model it serves")
        self.engine, self.backend = engine, backend
        self.tokenizer = engine.tokenizer if engine is not None else tokenizer
        self.context_length = engine.context_length if engine is not None else context_length
        self.known = dict(known or {})
        self.grounding = grounding or Grounding()
        self.api_key = api_key
        self.store = store or AdapterStore()
        self.admin = asyncio.Lock()  # one upload or removal at a time: a name is checked, loaded and kept together
        self.created = int(time.time())
        self.base_fmt = base_format(self.tokenizer)
        self.max_in_flight, self.in_flight = max_in_flight, 0  # requests at the backend (the front's queue bound)

    def local_engine(self) -> Engine:
        if self.engine is None:
            raise APIError(400, "this server passes generation to its backend and has no engine of its own; load "
                                "adapters on the backend (or start it with --local-engine)", code="no_local_engine")
        return self.engine

    async def health(self) -> dict | JSONResponse:
        out = {"status": "ok", "retrieval": self.grounding.retriever is not None, "api_key": self.api_key is not None}
        if self.engine is not None:
            stats = {k: v for k, v in self.engine.stats.items() if k != "batch_sizes"}
            out.update(queued=self.engine.queued(), **stats)
        if self.backend is None:
            return out
        state = await self.backend.check()
        out.update(backend={"url": self.backend.url, **state.to_dict()}, in_flight=self.in_flight)
        if state.state != "ok":  # a load balancer takes this front out while its backend is away
            out["status"] = "backend_" + state.state
            return JSONResponse(out, status_code=503)
        return out

    # ------------------------------------------------------------------------------------------- routing

    async def route(self, name: str) -> Route:
        """Where `name` is served: a name the backend lists goes there; else the local engine's base or adapter;
        else it is refused, saying why (a kind only groundtune runs, or a name nobody serves) and what to do."""
        fault = None
        if self.backend is not None:
            try:
                if name in await self.backend.models():
                    known = self.known.get(name) or (self.engine.adapters.get(name) if self.engine else None)
                    return Route(name, known.prompt_format if known else self.base_fmt, backend=True)
            except BackendError as err:  # the local engine may still serve it
                fault = err
        if self.engine is not None:
            if name in (self.engine.base_name, "base"):
                return Route(name, self.base_fmt)
            state = self.engine.adapters.get(name)
            if state is not None:
                return Route(name, state.prompt_format, state)
        known = self.known.get(name)
        if known is not None and not get_method(known.method).mergeable:
            raise APIError(400, f"model {name!r} is a {known.method} adapter, which only groundtune's own engine "
                                "runs (other engines load LoRA adapters or plain weights, and this kind cannot be "
                                "merged into the weights); serve it locally: start this server with --local-engine, "
                                "or serve the adapter with a groundtune serve of its own", param="model",
                           code="local_only_model")
        if fault is not None:
            raise fault
        if known is not None:
            raise APIError(404, f"model {name!r} ({known.method}) is not loaded on the backend {self.backend.url}; "
                                f"load it there (`groundtune export ADAPTER --for vllm`, then vllm serve ... "
                                f"--enable-lora --lora-modules {name}=FOLDER) or merge it into the weights "
                                "(`groundtune export ADAPTER --for merged`)", param="model", code="model_not_found")
        served = [*(self.backend.status.models if self.backend else ()),
                  *([self.engine.base_name, *self.engine.adapters] if self.engine else ())]
        raise APIError(404, f"model {name!r} is not served here; GET /v1/models lists them: {', '.join(served)}",
                       param="model", code="model_not_found")

    async def model_list(self) -> list[dict]:
        data, seen = [], set()
        if self.backend is not None:
            try:
                for name in await self.backend.models():
                    known = self.known.get(name) or (self.engine.adapters.get(name) if self.engine else None)
                    data.append({"id": name, "object": "model", "created": self.created, "owned_by": "backend",
                                 "method": known.method if known else None,
                                 **({"prompt_format": known.prompt_format.get("kind")} if known else {})})
                    seen.add(name)
            except BackendError:
                if self.engine is None:
                    raise
        if self.engine is not None:
            if self.engine.base_name not in seen:
                data.append({"id": self.engine.base_name, "object": "model", "created": self.created,
                             "owned_by": "groundtune", "method": None})
            for name, state in list(self.engine.adapters.items()):
                if name not in seen:
                    data.append({"id": name, "object": "model", "created": self.created, "owned_by": "groundtune",
                                 "method": state.method, "prompt_format": state.prompt_format.get("kind")})
        return data

    # ------------------------------------------------------------------------------------------- generation

    def prepare(self, prompt: str, fmt: dict, adapter, limit: int | None, capped: bool) -> tuple[list[int], int]:
        from groundtune.data.sample import encode_prompt

        ids = encode_prompt(self.tokenizer, prompt, fmt.get("max_prompt_tokens") if capped else None)
        if not ids:
            raise APIError(400, "the prompt is empty once tokenized", param="prompt")
        ctx = self.context_length
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

    async def generate(self, request: Request, body: GenerationRequest, prompt: str, route: Route, *, capped: bool):
        """Start the generation of `prompt` where `route` says; the queue bound and the context length are the
        front's own checks, before the backend is asked."""
        ids, limit = self.prepare(prompt, route.prompt_format, route.adapter, body.limit, capped)
        if route.backend:
            return await self._generate_at_backend(request, body, prompt, ids, limit, route.name, capped)
        return self._generate_locally(request, body, ids, route.adapter, limit)

    def _generate_locally(self, request, body: GenerationRequest, ids: list[int], adapter, limit: int):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(event):
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        gen = GenRequest(ids, adapter, limit, emit, temperature=body.temperature, top_p=body.top_p,
                         stop=list(body.stop or []), seed=body.seed)
        try:
            self.engine.submit(gen)
        except QueueFull as err:
            raise APIError(503, str(err), "server_busy", code="queue_full", headers={"Retry-After": "1"}) from None
        return LocalGeneration(request, gen, queue)

    async def _generate_at_backend(self, request, body: GenerationRequest, prompt: str, ids: list[int], limit: int,
                                   name: str, capped: bool):
        from groundtune.data.sample import encode_prompt

        if self.in_flight >= self.max_in_flight:
            raise APIError(503, f"the server is busy: {self.in_flight} requests are at the backend (the bound is "
                                f"{self.max_in_flight}); retry in a moment", "server_busy", code="queue_full",
                           headers={"Retry-After": "1"})
        if capped and len(encode_prompt(self.tokenizer, prompt)) > len(ids):
            # Cut to the format's max_prompt_tokens: the text of the tokens kept, its BOS left to the backend's
            # tokenizer (which adds one, as ours did).
            bos = self.tokenizer.bos_token_id
            prompt = self.tokenizer.decode(ids[1:] if bos is not None and ids[0] == bos else ids,
                                           skip_special_tokens=False)
        payload = {"model": name, "prompt": prompt, "max_tokens": limit, "temperature": body.temperature,
                   "top_p": body.top_p, "stream_options": {"include_usage": True}}
        if body.stop:
            payload["stop"] = list(body.stop)
        if body.seed is not None:
            payload["seed"] = body.seed
        self.in_flight += 1
        try:
            stream = await self.backend.open(payload)
        except BaseException:
            self.in_flight -= 1
            raise

        def done():
            self.in_flight -= 1

        return BackendGeneration(request, stream, len(ids), self.tokenizer, done)


def create_app(engine: Engine | None, grounding: Grounding | None = None, api_key: str | None = None, *,
               store: AdapterStore | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, **front) -> FastAPI:
    """The app over a running engine, or a backend (front: Server's backend, tokenizer, known, context_length,
    max_in_flight). store: where uploads are kept (default: nowhere, they live in memory).
    The OpenAPI schema is not served (`app.openapi()` gives it, e.g. to a fuzzer)."""
    check_api_key(api_key)
    app = FastAPI(title="groundtune", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = Server(engine, grounding, api_key, store, **front)
    app.add_middleware(RequestGate, api_key=api_key, max_body_bytes=max_body_bytes, max_upload_bytes=max_upload_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return error_response(err.status, err.message, err.type, err.param, err.code, err.headers)

    @app.exception_handler(BackendError)
    async def _backend_error(request, err: BackendError):
        return error_response(err.status, str(err), err.type, code=err.code, headers=err.headers)

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
