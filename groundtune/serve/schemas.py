"""The server's request schemas (OpenAI's, with groundtune's extensions), its limits, and its error shape.

Every number a client controls has a range here, so nothing is allocated from an unchecked size.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from groundtune.serve.citations import MAX_K, RequestError
from groundtune.errors import GroundtuneError

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


class GenerationRequest(BaseModel):
    """What chat and completion requests share."""

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
            raise GroundtuneError(f"n is {v}; this server returns one choice per request (n=1): send several requests")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise GroundtuneError(f"stop takes up to {MAX_STOP} non-empty strings")
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


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    retrieval: bool | None = None
    documents: list[str | Document] | None = Field(None, max_length=MAX_K)
    k: int | None = Field(None, ge=1, le=MAX_K)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise GroundtuneError(f"prompt is a list of {len(v)}; this server takes one prompt per request")
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


def error_response(status: int, message: str, type: str = "invalid_request_error", param=None, code=None, headers=None):
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


def validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    problems, param = [], None
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            return f"the request body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})", None
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        param = param or (loc[0] if loc else None)
        problems.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return "; ".join(problems[:5]) or "invalid request", param
