"""Admin routes (behind the server's API key, see gate.py): adapters added by upload and removed; and the health
check with the engine's counters (public, for load balancers).

No request names a file on the server: an adapter is uploaded as its files (base64), checked file by file, and
its size in parameters is computed from its config before anything is allocated (engine.add_adapter).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from pathlib import Path

from fastapi import APIRouter, Request

from groundtune.errors import GroundtuneError
from groundtune.serve.engine import AdapterExists
from groundtune.serve.schemas import NAME, UPLOAD_FILES, AdapterUpload, APIError

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    return await request.app.state.server.health()


@router.get("/admin/adapters")
async def list_adapters(request: Request):
    engine = request.app.state.server.local_engine()
    return {"adapters": [{"name": n, "method": s.method, "prompt_format": s.prompt_format}
                         for n, s in list(engine.adapters.items())]}


@router.post("/admin/adapters", status_code=201)
async def add_adapter(body: AdapterUpload, request: Request):
    server = request.app.state.server
    engine = server.local_engine()
    if not NAME.match(body.name) or body.name in (engine.base_name, "base"):
        raise APIError(400, f"adapter name {body.name!r}: use 1-64 letters, digits, '.', '_', ':' or '-', not the "
                            "base model's name", param="name")
    unknown = sorted(set(body.files) - set(UPLOAD_FILES))
    if unknown or not {"adapter_config.json", "adapter_model.safetensors"} <= set(body.files):
        raise APIError(400, f"files must be adapter_config.json and adapter_model.safetensors (and optionally "
                            f"groundtune_prompt.json), base64-encoded; got {sorted(body.files)[:5]}", param="files")
    async with server.admin:
        if body.name in engine.adapters:
            raise APIError(409, f"an adapter called {body.name!r} is served already; DELETE it first", param="name")
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


@router.delete("/admin/adapters/{name}")
async def delete_adapter(name: str, request: Request):
    server = request.app.state.server
    engine = server.local_engine()
    async with server.admin:
        try:
            engine.remove_adapter(name)
        except KeyError:
            raise APIError(404, f"no adapter called {name!r} is served", param="name", code="model_not_found") from None
        server.store.remove(name)
    return {"id": name, "object": "model", "deleted": True}


def _scrub(message: str, folder: Path) -> str:
    """An upload's error message without the server's paths: its files by their own names."""
    return message.replace(f"{folder}{os.sep}", "").replace(str(folder), "the upload")
