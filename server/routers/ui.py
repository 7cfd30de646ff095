"""The operator dashboard, login page and calibration view, and their static files (no CDN).

Browser libraries come from the npm registry into ``server/dashboard/static/vendor/`` via
``npm ci && npm run vendor`` in ``server/dashboard`` (``scripts/setup.sh`` runs it).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

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


def safe_next(target: str) -> bool:
    """True when ``target`` is a same-site path a browser cannot read as another site's address.

    Refused: anything not starting with a single ``/`` (``//host``, schemes), backslashes (browsers read
    them as ``/``), and control characters or whitespace (browsers drop tabs and newlines, so ``/\t/host``
    becomes ``//host``).
    """
    if not target.startswith("/") or target.startswith("//") or len(target) > 2000:
        return False
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F or c.isspace() for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


@router.get("/login", response_model=None)
def login_page(next: str | None = None) -> Response:
    """The login page; a ``next`` that is not a same-site path is dropped (redirect to plain /login)."""
    if next is not None and not safe_next(next):
        return RedirectResponse("/login", status_code=303)
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
