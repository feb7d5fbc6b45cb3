"""The server's front door, a pure ASGI middleware: the API key is checked from the headers and the request body
is bounded while it is read, both before any route reads or parses a byte of it.

Why not a FastAPI dependency: FastAPI reads and parses a route's JSON body before its dependencies run, so an
unauthenticated client could make the server parse any body it likes. Why not Starlette's BaseHTTPMiddleware
or a check of Content-Length alone: a chunked body has no Content-Length, and a client may send more than it
declared; the bytes are counted as they arrive, and the request is answered 413 as soon as they pass the limit.
"""

from __future__ import annotations

import hmac
import json

from groundtune.errors import GroundtuneError

MIN_KEY_LENGTH = 16


class ServeError(GroundtuneError):
    """The server cannot start as asked (the message says why and what to change)."""


def check_api_key(api_key: str | None) -> None:
    """A key short enough to guess is refused: it guards the admin endpoints, which load files into the server."""
    if api_key is not None and len(api_key) < MIN_KEY_LENGTH:
        raise ServeError(f"--api-key is {len(api_key)} characters long; give at least {MIN_KEY_LENGTH}, e.g. one from "
                         "python -c 'import secrets; print(secrets.token_urlsafe(24))'")


PUBLIC = ("/", "/health", "/static/app.js", "/static/style.css")  # the chat page and the health check need no key
UPLOAD = ("POST", "/admin/adapters")


def error_body(message: str, type: str = "invalid_request_error", param=None, code=None) -> bytes:
    """OpenAI's error shape, as every route answers."""
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": code}}).encode()


async def send_error(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestGate:
    """api_key: None serves /v1 to anyone and refuses /admin (403). max_body_bytes bounds every request body;
    max_upload_bytes the adapter uploads (POST /admin/adapters)."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, max_upload_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def refusal(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, bytes] | None:
        if path in PUBLIC:
            return None
        if self.api_key is None:
            if path == "/admin" or path.startswith("/admin/"):
                return 403, error_body("the admin endpoints need a server started with --api-key", "permission_error")
            return None
        header = headers.get(b"authorization", b"")
        given = header[7:] if header[:7].lower() == b"bearer " else b""
        if not hmac.compare_digest(given, self.api_key.encode()):
            return 401, error_body("missing or wrong API key: send 'Authorization: Bearer <key>'",
                                   "authentication_error", code="invalid_api_key")
        return None

    def too_large(self, limit: int, upload: bool) -> bytes:
        what = (f"an adapter upload may be {limit // 2**20} MiB at most (start the server with a larger "
                "--max-upload-mb)") if upload else f"a request body may be {limit // 2**10} KiB at most"
        return error_body(f"the request is too large: {what}", code="request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])  # header names come lower-cased from the ASGI server
        refused = self.refusal(scope["path"], headers)
        if refused is not None:
            extra = [(b"www-authenticate", b"Bearer")] if refused[0] == 401 else []
            return await send_error(send, *refused, headers=extra)
        upload = (scope["method"], scope["path"]) == UPLOAD
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if not declared.isdigit():
                return await send_error(send, 400, error_body("the Content-Length header is not a number"))
            return await send_error(send, 413, self.too_large(limit, upload))

        received, refused_late = 0, False

        async def counted_receive():
            nonlocal received, refused_late
            if refused_late:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused_late = True
                    await send_error(send, 413, self.too_large(limit, upload))
                    return {"type": "http.disconnect"}  # the route stops reading; what it answers is dropped
            return message

        async def guarded_send(message):
            if not refused_late:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused_late:  # after a 413 the route's complaint about the cut body is expected and dropped
                raise
