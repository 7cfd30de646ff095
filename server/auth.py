"""Users, API tokens and roles.

Passwords are stored as scrypt hashes, tokens as SHA-256 digests: neither is kept in plaintext.
``require_role(Role.operator)`` is a FastAPI dependency accepting ``Authorization: Bearer <token>``:
no or unknown token -> 401, a role below the one required -> 403.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import Token, User, utcnow
from server.db.session import get_session

TOKEN_PREFIX = "tok_"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]


class AuthError(ValueError):
    """A user/token command cannot be done; the message says why."""


# ------------------------------------------------------------------------------------------ hashing
def hash_password(password: str) -> str:
    if len(password) < 8:
        raise AuthError("password too short: use at least 8 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------------------------ users, tokens
def create_user(session: Session, name: str, role: Role, password: str | None = None) -> User:
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise AuthError(f"user {name!r} already exists")
    user = User(name=name, role=Role(role).value, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.commit()
    return user


def create_token(session: Session, user_name: str, name: str = "api", ttl: timedelta | None = None) -> str:
    """Create a token for ``user_name``; the plaintext is returned once and never stored."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AuthError(f"no user {user_name!r}; create it with `turnout users create {user_name}`")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + ttl if ttl else None
    session.add(Token(user_id=user.id, token_sha256=token_digest(token), name=name, expires_at=expires))
    session.commit()
    return token


def login(session: Session, name: str, password: str, ttl: timedelta) -> tuple[str, User] | None:
    user = session.scalar(select(User).where(User.name == name))
    # an unknown user costs the same scrypt as a known one: no user enumeration by timing
    if not verify_password(password, user.password_hash if user and user.password_hash else _dummy_hash()):
        return None
    if user is None or not user.password_hash:
        return None
    return create_token(session, name, name="login", ttl=ttl), user


def revoke_token(session: Session, token: str) -> bool:
    """Revoke one token (sign-out); True when a live token was revoked."""
    row = session.scalar(select(Token).where(Token.token_sha256 == token_digest(token)))
    if row is None or row.revoked:
        return False
    row.revoked = True
    session.commit()
    return True


def user_for_token(session: Session, token: str, now: datetime | None = None) -> User | None:
    row = session.scalar(select(Token).where(Token.token_sha256 == token_digest(token)))
    if row is None or row.revoked or (row.expires_at is not None and row.expires_at < (now or utcnow())):
        return None
    return session.get(User, row.user_id)


# ---------------------------------------------------------------------------------- dependencies
def request_token(request: Request) -> str | None:
    """The bearer token of a request (Authorization header, else the login cookie on GET/HEAD only)."""
    return _bearer(request)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method not in ("GET", "HEAD"):  # writes need the header: a cookie rides along cross-site
        return None
    return request.cookies.get("turnout_token") or None


def current_user(request: Request, session: Session = Depends(get_session)) -> User | None:
    """The user behind the request's token, or None when no token was sent (401 for a bad one)."""
    token = _bearer(request)
    if token is None:
        return None
    user = user_for_token(session, token)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token", {"WWW-Authenticate": "Bearer"})
    return user


def require_role(role: Role) -> Callable[..., User]:
    """Dependency: the request must carry a token of a user with at least ``role``."""

    def dependency(user: User | None = Depends(current_user)) -> User:
        if user is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required", {"WWW-Authenticate": "Bearer"})
        if Role(user.role).rank < role.rank:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {role.value} required (you are {user.role})")
        return user

    dependency.__name__ = f"require_{role.value}"
    return dependency


def read_access(request: Request, user: User | None = Depends(current_user)) -> User | None:
    """Reads of non-personal data: open when ``public_read`` is set, otherwise viewer or above."""
    if request.app.state.settings.public_read or user is not None:
        return user
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required", {"WWW-Authenticate": "Bearer"})
