"""Shared pieces of the API routers: documented error responses and 422s in FastAPI's standard shape.

Not a router itself (``server.app`` mounts only modules with a ``router``; names starting with ``_`` are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, status
from pydantic import BaseModel


class ErrorOut(BaseModel):
    """Every error except 422: ``{"detail": "what went wrong"}``."""

    detail: str


_DESCRIPTIONS = {
    400: "Body is not UTF-8 (FastAPI cannot parse it)",
    401: "No token, or an invalid, expired or revoked one",
    403: "The user's role is too low",
    404: "No such item",
    409: "Conflicts with the item's state",
    411: "Content-Length header required",
    413: "Body larger than the limit",
    429: "Too many failed attempts: try again after Retry-After seconds",
    502: "The edge device answered with an invalid message",
    503: "Not available right now",
    504: "The edge device did not answer in time",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each code documented with `ErrorOut` (422 is FastAPI's own)."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}


READ = (401, 404)
WRITE = (401, 403, 404)


def unprocessable(msg: str, loc: Sequence[str | int] = ("body",), type_: str = "value_error") -> HTTPException:
    """A 422 shaped like FastAPI's validation errors (``detail`` is a list of ``{loc, msg, type}``)."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": list(loc), "msg": msg, "type": type_}]
    )


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, what)
