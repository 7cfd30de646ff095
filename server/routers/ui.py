"""The operator dashboard, login page and calibration view, and their static files (no CDN).

Browser libraries come from the npm registry into ``server/dashboard/static/vendor/`` via
``npm ci && npm run vendor`` in ``server/dashboard`` (``scripts/setup.sh`` runs it).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse, Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "dashboard" / "static"
VENDOR_HINT = (
    "dashboard libraries are missing: run `npm ci && npm run vendor` in server/dashboard (scripts/setup.sh does it)"
)

router = APIRouter(tags=["dashboard"], include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/")
def dashboard() -> FileResponse:
    return _page("index.html")


@router.get("/login")
def login_page() -> FileResponse:
    return _page("login.html")


@router.get("/calibration")
def calibration_page() -> FileResponse:
    return _page("calibration.html")


@router.get("/static/{path:path}")
def static_file(path: str) -> Response:
    """A file under server/dashboard/static (never outside it)."""
    root = STATIC_DIR.resolve()
    try:
        target = (root / path).resolve()
    except (ValueError, OSError):  # e.g. an embedded NUL
        raise HTTPException(404, "not found") from None
    if not target.is_relative_to(root):
        raise HTTPException(404, "not found")
    if not target.is_file():
        if target.is_relative_to(root / "vendor"):
            return PlainTextResponse(VENDOR_HINT, status_code=503)
        raise HTTPException(404, "not found")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    cache = "public, max-age=86400" if target.is_relative_to(root / "vendor") else "no-cache"
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": cache})


def vendor_ready() -> bool:
    """True when the vendored browser libraries are in place."""
    return (STATIC_DIR / "vendor" / "uPlot.iife.min.js").is_file()
