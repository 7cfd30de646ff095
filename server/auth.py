"""Users, API tokens and roles.

Passwords are stored as scrypt hashes, tokens as SHA-256 digests: neither is kept in plaintext.
``require_role(Role.operator)`` is a FastAPI dependency accepting ``Authorization: Bearer <token>``:
no or unknown token -> 401, a role below the one required -> 403.

Every token expires (API tokens after ``API_TOKEN_TTL`` unless told otherwise, login tokens after the
``login_token_ttl_h`` setting); a disabled user's tokens stop working and it cannot sign in. Sign-in is
throttled (`LoginThrottle`): after ``max_failures`` failures within ``window`` for one user name, or from one
client address, further attempts are refused for ``lockout`` (HTTP 429 with Retry-After), whether or not the
user exists.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import Token, User, utcnow
from server.db.session import get_session

TOKEN_PREFIX = "tok_"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
API_TOKEN_TTL = timedelta(days=30)
MAX_TOKEN_TTL = timedelta(days=3650)


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
    """Create a token for ``user_name``, valid for ``ttl`` (default `API_TOKEN_TTL`); the plaintext is
    returned once and never stored."""
    ttl = API_TOKEN_TTL if ttl is None else ttl
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise AuthError(f"token lifetime must be more than 0 and at most {MAX_TOKEN_TTL.days} days")
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AuthError(f"no user {user_name!r}; create it with `turnout users create {user_name}`")
    if user.disabled:
        raise AuthError(f"user {user_name!r} is disabled; `turnout users enable {user_name}` first")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(user_id=user.id, token_sha256=token_digest(token), name=name, expires_at=utcnow() + ttl))
    session.commit()
    return token


def login(session: Session, name: str, password: str, ttl: timedelta) -> tuple[str, User] | None:
    user = session.scalar(select(User).where(User.name == name))
    # an unknown user costs the same scrypt as a known one: no user enumeration by timing
    if not verify_password(password, user.password_hash if user and user.password_hash else _dummy_hash()):
        return None
    if user is None or not user.password_hash or user.disabled:
        return None
    return create_token(session, name, name="login", ttl=ttl), user


def list_tokens(session: Session, user_name: str | None = None) -> list[tuple[Token, User]]:
    q = select(Token, User).join(User, User.id == Token.user_id).order_by(Token.id)
    if user_name is not None:
        q = q.where(User.name == user_name)
    return [(t, u) for t, u in session.execute(q).all()]


def revoke_token_id(session: Session, token_id: int) -> bool:
    """Revoke a token by its id (`turnout tokens list`); True when it was live."""
    row = session.get(Token, token_id)
    if row is None:
        raise AuthError(f"no token with id {token_id}; see `turnout tokens list`")
    if row.revoked:
        return False
    row.revoked = True
    session.commit()
    return True


def revoke_user_tokens(session: Session, user_name: str) -> int:
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AuthError(f"no user {user_name!r}")
    n = 0
    for row in session.scalars(select(Token).where(Token.user_id == user.id, Token.revoked.is_(False))):
        row.revoked = True
        n += 1
    session.commit()
    return n


def set_user_disabled(session: Session, user_name: str, disabled: bool) -> User:
    """Disable (or enable) a user: a disabled user cannot sign in and its tokens are refused."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AuthError(f"no user {user_name!r}")
    user.disabled = disabled
    session.commit()
    return user


# ------------------------------------------------------------------------------------- throttling
class LoginLocked(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class LoginThrottle:
    """Failed sign-ins per user name and per client address; a key with ``max_failures`` failures within
    ``window_s`` is locked for ``lockout_s``. In memory, per server process (a restart clears it)."""

    max_failures: int = 10
    window_s: float = 300.0
    lockout_s: float = 300.0
    max_keys: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _locked: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def keys(user: str, client: str | None) -> list[str]:
        return [f"user:{user.strip().lower()}", f"addr:{client or '?'}"]

    def check(self, user: str, client: str | None) -> None:
        """Raise `LoginLocked` when the user name or the address is locked."""
        now = self.clock()
        with self._lock:
            until = max((self._locked.get(k, 0.0) for k in self.keys(user, client)), default=0.0)
        if until > now:
            raise LoginLocked(max(1, int(until - now + 0.999)))

    def failed(self, user: str, client: str | None) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > self.max_keys:  # bounded memory under a spray of names
                self._prune(now)
            for key in self.keys(user, client):
                q = self._failures.setdefault(key, deque())
                q.append(now)
                while q and q[0] <= now - self.window_s:
                    q.popleft()
                if len(q) >= self.max_failures:
                    self._locked[key] = now + self.lockout_s
                    q.clear()

    def succeeded(self, user: str, client: str | None) -> None:
        with self._lock:
            self._failures.pop(self.keys(user, client)[0], None)

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window_s]:
            del self._failures[key]
        for key in [k for k, t in self._locked.items() if t <= now]:
            del self._locked[key]
        if len(self._failures) > self.max_keys:
            self._failures.clear()


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
    user = session.get(User, row.user_id)
    return None if user is None or user.disabled else user


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
