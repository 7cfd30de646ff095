"""Login: username + password -> bearer token (and the same token as an HttpOnly cookie).

Failed sign-ins are throttled per user name and per client address (`server.auth.LoginThrottle`): when
locked, 429 with ``Retry-After``, the same for existing and unknown names (no user enumeration).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from server.auth import LoginLocked, LoginThrottle, Role, login, request_token, require_role, revoke_token
from server.db.models import User
from server.db.session import get_session
from server.routers._common import errors

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    token: str
    token_type: str = "bearer"
    user: str
    role: Role
    expires_in_s: int


class MeOut(BaseModel):
    user: str
    role: Role


def login_throttle(request: Request) -> LoginThrottle:
    """The app's throttle (created on first use)."""
    throttle = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = request.app.state.login_throttle = LoginThrottle()
    return throttle


@router.post("/login", response_model=LoginOut, responses=errors(400, 401, 429))
def post_login(
    body: LoginIn,
    request: Request,
    response: Response,
    session: Session = Depends(get_session),
    throttle: LoginThrottle = Depends(login_throttle),
) -> LoginOut:
    client = request.client.host if request.client else None
    try:
        throttle.check(body.username, client)
    except LoginLocked as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, str(exc), {"Retry-After": str(exc.retry_after_s)}
        ) from None
    ttl = timedelta(hours=request.app.state.settings.login_token_ttl_h)
    result = login(session, body.username, body.password, ttl)
    if result is None:
        throttle.failed(body.username, client)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    throttle.succeeded(body.username, client)
    token, user = result
    response.set_cookie("turnout_token", token, max_age=int(ttl.total_seconds()), httponly=True, samesite="strict")
    return LoginOut(token=token, user=user.name, role=Role(user.role), expires_in_s=int(ttl.total_seconds()))


@router.get("/me", response_model=MeOut, responses=errors(401))
def me(user: User = Depends(require_role(Role.viewer))) -> dict:
    return {"user": user.name, "role": user.role}


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=errors(401))
def post_logout(
    request: Request,
    response: Response,
    _user: User = Depends(require_role(Role.viewer)),
    session: Session = Depends(get_session),
) -> Response:
    """Sign out: the token is revoked server-side (it stops working everywhere) and the cookie cleared."""
    token = request_token(request)
    if token:
        revoke_token(session, token)
    response.status_code = status.HTTP_204_NO_CONTENT
    response.delete_cookie("turnout_token", httponly=True, samesite="strict")
    return response
