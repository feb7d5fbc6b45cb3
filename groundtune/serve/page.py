"""The chat page: three fixed files, so no request names a file on the server."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/app.js")
async def page_js():
    return FileResponse(STATIC / "app.js", media_type="text/javascript")


@router.get("/static/style.css")
async def page_css():
    return FileResponse(STATIC / "style.css", media_type="text/css")
