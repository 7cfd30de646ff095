"""API documentation pages: Swagger UI (``/docs``) and ReDoc (``/redoc``) from the server's own files.

FastAPI's default pages load their scripts from a CDN and start them with an inline script; both are off
(``docs_url=None, redoc_url=None`` in `server.app`). The libraries come from the npm registry into
``server/apidocs/static/vendor/`` via ``npm ci && npm run vendor`` in ``server/apidocs``.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse, Response

DOCS_DIR = Path(__file__).resolve().parent.parent / "apidocs" / "static"
VENDOR_HINT = "API docs libraries are missing: run `npm ci && npm run vendor` in server/apidocs (scripts/setup.sh)"

router = APIRouter(tags=["docs"], include_in_schema=False)


def _page(name: str) -> Response:
    if not (DOCS_DIR / "vendor").is_dir():
        return PlainTextResponse(VENDOR_HINT, status_code=503)
    return FileResponse(DOCS_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/docs")
def swagger_ui() -> Response:
    return _page("swagger.html")


@router.get("/redoc")
def redoc() -> Response:
    return _page("redoc.html")


@router.get("/apidocs/{path:path}")
def docs_file(path: str) -> Response:
    """A file under server/apidocs/static (never outside it)."""
    root = DOCS_DIR.resolve()
    try:
        target = (root / path).resolve()
    except (ValueError, OSError):
        raise HTTPException(404, "not found") from None
    if not target.is_relative_to(root) or not target.is_file():
        if target.is_relative_to(root / "vendor") and not (root / "vendor").is_dir():
            return PlainTextResponse(VENDOR_HINT, status_code=503)
        raise HTTPException(404, "not found")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    cache = "public, max-age=86400" if target.is_relative_to(root / "vendor") else "no-cache"
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": cache})
