"""An OpenAI-compatible generation backend behind `groundtune serve --backend URL`: vLLM, SGLang, TGI, llama.cpp's
server or another `groundtune serve`. The front keeps retrieval, citations, prompt formats, the API key and the
queue bound; the backend only continues prompts through its `/v1/completions`.

Every request is streamed from the backend, so that tokens pass through as they come and a client that goes
away closes the backend connection (which the backend takes as a cancel). Whatever goes wrong on the way
becomes a `BackendError` with the status the client gets and a message that says what to do:

- the backend cannot be reached, closed the connection, answered 5xx, or sent what is not OpenAI's shape: 502;
- it sent nothing for `timeout_s`: 504;
- it refused the request itself (4xx in OpenAI's error shape, e.g. a prompt over its context length): the same
  status and its message; a busy backend (503): 503 with Retry-After.

The front connects directly (no proxy from the environment): a backend is a machine of the same deployment.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx2

from groundtune.errors import GroundtuneError

MAX_ERROR_BYTES = 64 * 2**10  # a backend's error body is read this far, no further
MAX_LINE_CHARS = 2**20  # one SSE line longer than this is no token chunk
MODELS_TTL_S = 5.0  # /v1/models is asked again after this long (a LoRA loaded on the backend meanwhile shows up)


class BackendError(GroundtuneError):
    """A backend fault, as the client sees it: an HTTP status, an OpenAI error type and code, and a message."""

    def __init__(self, status: int, message: str, code: str, type: str = "server_error",
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.type, self.headers = status, code, type, headers


@dataclass
class BackendState:
    """What /health reports: ok, unreachable, timeout, not_openai_compatible, no_models or failed."""

    state: str = "unknown"
    error: str | None = None
    models: tuple[str, ...] = ()
    checked: float = 0.0  # time.monotonic() of the last answer or failure

    def to_dict(self) -> dict:
        return {"state": self.state, "error": self.error, "models": list(self.models)}


def normalize_url(url: str) -> str:
    """The backend's base address without a trailing /v1 (either form may be given)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise GroundtuneError(f"--backend {url!r}: give the backend's address, e.g. http://127.0.0.1:8001 "
                              "(http or https, with host and port)")
    return url.rstrip("/").removesuffix("/v1")


class Backend:
    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 connect_timeout_s: float = 5.0, models_ttl_s: float = MODELS_TTL_S):
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise GroundtuneError(f"backend timeouts must be > 0 s (got {timeout_s}, {connect_timeout_s})")
        self.url = normalize_url(url)
        self.timeout_s, self.connect_timeout_s, self.models_ttl_s = timeout_s, connect_timeout_s, models_ttl_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.status = BackendState()
        self._client: httpx2.AsyncClient | None = None
        self._models_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------------------------------- client

    def client(self) -> httpx2.AsyncClient:
        # Made on first use, inside the server's event loop (an async client belongs to the loop it runs in).
        if self._client is None:
            timeout = httpx2.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            # No pool bound: the front's own queue bound (--max-queue) limits the requests in flight.
            limits = httpx2.Limits(max_connections=None, max_keepalive_connections=64)
            self._client = httpx2.AsyncClient(base_url=self.url, timeout=timeout, limits=limits, trust_env=False,
                                              headers=self.headers)
            self._models_lock = asyncio.Lock()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _fault(self, state: str, status: int, message: str, code: str) -> BackendError:
        self.status = BackendState(state, message, self.status.models, time.monotonic())
        return BackendError(status, message, code)

    def _transport_fault(self, err: httpx2.HTTPError, what: str) -> BackendError:
        if isinstance(err, httpx2.ConnectTimeout) or isinstance(err, httpx2.ConnectError):
            return self._fault("unreachable", 502, f"the backend at {self.url} cannot be reached ({what}: "
                               f"{type(err).__name__}); is it running? /health shows its state", "backend_unreachable")
        if isinstance(err, httpx2.TimeoutException):
            return self._fault("timeout", 504, f"the backend at {self.url} sent nothing for {self.timeout_s:g} s "
                               f"({what}); it may be overloaded: retry, or raise --backend-timeout", "backend_timeout")
        return self._fault("failed", 502, f"the backend at {self.url} broke off the connection ({what}: "
                           f"{type(err).__name__}); it may have stopped: /health shows its state", "backend_failed")

    # ------------------------------------------------------------------------------------------- models

    async def models(self, refresh: bool = False) -> tuple[str, ...]:
        """The model names the backend lists in /v1/models (asked again after models_ttl_s, or when refresh)."""
        client = self.client()
        async with self._models_lock:
            fresh = time.monotonic() - self.status.checked < self.models_ttl_s
            if self.status.state == "ok" and fresh and not refresh:
                return self.status.models
            try:
                response = await client.get("/v1/models", timeout=min(self.timeout_s, 10.0))
            except httpx2.HTTPError as err:
                raise self._transport_fault(err, "GET /v1/models") from None
            names = _model_names(response)
            if names is None:
                raise self._fault("not_openai_compatible", 502,
                                  f"the backend at {self.url} is not OpenAI-compatible: GET /v1/models answered "
                                  f"{response.status_code} ({response.headers.get('content-type', 'no type')}), "
                                  "not a list of models; give the address of a vLLM, SGLang, TGI, llama.cpp or "
                                  "groundtune server (its /v1/models lists models)", "backend_not_openai")
            if not names:
                raise self._fault("no_models", 502, f"the backend at {self.url} lists no models in /v1/models; load "
                                  "a model there first (e.g. vllm serve MODEL)", "backend_no_models")
            self.status = BackendState("ok", None, names, time.monotonic())
            return names

    async def check(self) -> BackendState:
        """Ask the backend now (for /health); never raises."""
        try:
            await self.models(refresh=True)
        except BackendError:
            pass
        return self.status

    # ------------------------------------------------------------------------------------------- completions

    async def open(self, payload: dict) -> "BackendStream":
        """POST /v1/completions with stream on; returns once the backend accepted it (its status is 200)."""
        client = self.client()
        request = client.build_request("POST", "/v1/completions", json={**payload, "stream": True})
        try:
            response = await client.send(request, stream=True)
        except httpx2.HTTPError as err:
            raise self._transport_fault(err, "POST /v1/completions") from None
        if response.status_code != 200:
            try:
                raise await self._refusal(response)
            finally:
                await response.aclose()
        return BackendStream(self, response)

    async def _refusal(self, response: httpx2.Response) -> BackendError:
        body = b""
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ERROR_BYTES:
                    break
        except httpx2.HTTPError:
            pass
        message = _error_message(body[:MAX_ERROR_BYTES])
        status = response.status_code
        if message is None:
            return self._fault("not_openai_compatible", 502,
                               f"the backend at {self.url} is not OpenAI-compatible: POST /v1/completions answered "
                               f"{status} without OpenAI's error shape", "backend_not_openai")
        if status == 503:
            return BackendError(503, f"the backend is busy: {message}", "backend_busy", "server_busy",
                                headers={"Retry-After": response.headers.get("retry-after", "1")})
        if 400 <= status < 500 and status not in (401, 403, 407, 408):
            # The request itself was refused (too long for its context, an unknown model): the client can fix it.
            return BackendError(status, f"the backend refused the request: {message}", "backend_refused",
                                "invalid_request_error")
        return self._fault("failed", 502, f"the backend at {self.url} answered {status}: {message}", "backend_failed")


class BackendStream:
    """The events of one streamed completion: ("delta", text), ("usage", dict), then ("done", finish_reason)."""

    def __init__(self, backend: Backend, response: httpx2.Response):
        self.backend, self.response = backend, response

    async def events(self):
        finish = None
        try:
            async for line in self.response.aiter_lines():
                if len(line) > MAX_LINE_CHARS:
                    raise self._malformed(f"a line of {len(line):,} characters")
                if not line.startswith("data:"):
                    continue  # blank lines, comments and event names of SSE
                data = line[5:].strip()
                if data == "[DONE]":
                    yield "done", finish or "stop"
                    return
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    raise self._malformed(f"a chunk that is not JSON ({data[:60]!r})") from None
                if not isinstance(chunk, dict):
                    raise self._malformed(f"a chunk that is not an object ({data[:60]!r})")
                if "error" in chunk:
                    error = chunk["error"]
                    text = error.get("message") if isinstance(error, dict) else str(error)
                    raise self.backend._fault("failed", 502, f"the backend failed mid-answer: {text}", "backend_failed")
                if isinstance(chunk.get("usage"), dict):
                    yield "usage", chunk["usage"]
                choices = chunk.get("choices")
                if not isinstance(choices, list):
                    raise self._malformed(f"a chunk without choices ({data[:60]!r})")
                for choice in choices[:1]:
                    text = choice.get("text") if isinstance(choice, dict) else None
                    if not isinstance(text, str):
                        raise self._malformed(f"a choice without text ({data[:60]!r})")
                    if text:
                        yield "delta", text
                    finish = choice.get("finish_reason") or finish
        except httpx2.HTTPError as err:
            raise self.backend._transport_fault(err, "while streaming") from None
        # The connection ended without [DONE]: the backend stopped mid-answer.
        raise self.backend._fault("failed", 502, f"the backend at {self.backend.url} ended the stream before its "
                                  "end ([DONE]); it may have stopped: /health shows its state", "backend_failed")

    def _malformed(self, what: str) -> BackendError:
        return self.backend._fault("not_openai_compatible", 502, f"the backend at {self.backend.url} sent {what} "
                                   "in its stream, not OpenAI's completion chunks", "backend_malformed")

    async def aclose(self) -> None:
        await self.response.aclose()


def _model_names(response: httpx2.Response) -> tuple[str, ...] | None:
    """The ids of an OpenAI model list, or None when the answer is not one."""
    if response.status_code != 200 or len(response.content) > MAX_LINE_CHARS:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        return None
    return tuple(m["id"] for m in data)


def _error_message(body: bytes) -> str | None:
    """The message of an OpenAI-shaped error body ({"error": {"message": ...}}; also {"error": "..."},
    {"detail": ...} and {"message": ...}, which vLLM, TGI and FastAPI servers send), else None."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data.get("detail", data.get("message")))
    if isinstance(error, dict):
        error = error.get("message")
    return str(error)[:500] if error else None
