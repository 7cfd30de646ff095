"""Issue 8, rows 6, 12, 13 and the API schema: uploads refused before their body is read, same-site ``next``,
sign-in throttling, token expiry, disabled users, the token/user CLI, security headers, self-hosted API docs."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.auth import API_TOKEN_TTL, LoginLocked, LoginThrottle, Role, create_user, set_user_disabled, user_for_token
from server.db.models import Token
from server.db.session import Database
from server.migrations import upgrade
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import auth, event_spec, make_user, setup_venue, venue_spec

START = datetime(2020, 6, 21, tzinfo=UTC)
STATIC = Path(__file__).resolve().parents[2] / "server" / "dashboard" / "static"


@pytest.fixture
def app_client(sqlite_target: DbTarget):
    app = create_app(make_settings(sqlite_target), run_ticks=False)
    with TestClient(app) as client:
        setup_venue(app.state.db, venue_spec("v1", 1, 1, 10), event_spec("v1", START, 10))
        yield client, app


def _raw_post(app, headers: dict[str, str]) -> tuple[int, int]:
    """POST a (claimed) 400 MB multipart body straight to the ASGI app; returns (status, body bytes read)."""
    consumed = 0
    calls = 0

    async def receive():
        nonlocal consumed, calls
        calls += 1
        if calls > 5:  # a real client would keep sending 400 MB; stop the test from spooling that much
            return {"type": "http.disconnect"}
        consumed += 1 << 20
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    hdrs = {
        "content-type": "multipart/form-data; boundary=zzz",
        "content-length": str(400_000_000),
        "host": "testserver",
        **headers,
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/events/ev/registrations",
        "raw_path": b"/api/v1/events/ev/registrations",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "app": app,
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], consumed


def test_large_upload_is_refused_before_its_body_is_read(app_client) -> None:
    client, app = app_client
    operator = make_user(app.state.db, Role.operator)
    viewer = make_user(app.state.db, Role.viewer)
    assert _raw_post(app, {}) == (401, 0)
    assert _raw_post(app, {"authorization": "Bearer tok_forged"}) == (401, 0)
    assert _raw_post(app, {"authorization": f"Bearer {viewer}"}) == (403, 0)
    assert _raw_post(app, {"authorization": f"Bearer {operator}"}) == (413, 0)  # 400 MB > max_upload_mb (200)
    # without a Content-Length the size cannot be checked first: 411
    r = client.post(
        "/api/v1/events/ev/registrations",
        content=iter([b"--zzz\r\n"]),
        headers={**auth(operator), "content-type": "multipart/form-data; boundary=zzz"},
    )
    assert r.status_code == 411
    # a normal upload still works
    files = {"file": ("r.csv", b"email\nann@example.org\n", "text/csv")}
    assert client.post("/api/v1/events/ev/registrations", files=files, headers=auth(operator)).status_code == 200


@pytest.mark.parametrize(
    "target",
    ["/\t/evil.example/", "//evil.example/", "/\\evil.example", "https://evil.example/", "javascript:alert(1)",
     "/%0a/x\n/evil", "evil.example", " /x"],
)
def test_login_next_must_be_a_same_site_path(app_client, target: str) -> None:
    client, _ = app_client
    r = client.get("/login", params={"next": target}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_login_next_keeps_same_site_paths(app_client) -> None:
    client, _ = app_client
    for target in ("/", "/calibration?venue=v1", "/%2F%2Fnot-a-host"):
        r = client.get("/login", params={"next": target}, follow_redirects=False)
        assert r.status_code == 200, target


def test_wrong_passwords_lock_the_user_and_the_address(app_client) -> None:
    client, app = app_client
    with app.state.db.session() as s:
        create_user(s, "alice", Role.operator, "correct horse battery")
    url = "/api/v1/auth/login"
    for _ in range(10):
        assert client.post(url, json={"username": "alice", "password": "wrong password"}).status_code == 401
    r = client.post(url, json={"username": "alice", "password": "correct horse battery"})
    assert r.status_code == 429 and 250 <= int(r.headers["retry-after"]) <= 300
    # an unknown name gets the same answer (the address is locked too): nothing to enumerate
    r2 = client.post(url, json={"username": "nobody", "password": "whatever"})
    assert r2.status_code == 429 and r2.json()["detail"] == r.json()["detail"]


def test_throttle_per_user_per_address_window_and_expiry() -> None:
    now = [1000.0]
    t = LoginThrottle(max_failures=3, window_s=60, lockout_s=120, clock=lambda: now[0])
    for i in range(3):
        t.check("bob", f"10.0.0.{i}")
        t.failed("bob", f"10.0.0.{i}")  # 3 addresses: only the user name reaches 3
    with pytest.raises(LoginLocked) as exc:
        t.check("BOB", "10.9.9.9")  # names compare case-insensitively, from any address
    assert exc.value.retry_after_s == 120
    t.check("carol", "10.0.0.1")  # the addresses are not locked
    now[0] += 121
    t.check("bob", "10.9.9.9")  # lockout over
    for _ in range(2):
        t.failed("dave", "10.1.1.1")
    now[0] += 61  # outside the window: the two old failures no longer count
    t.failed("dave", "10.1.1.1")
    t.check("dave", "10.1.1.1")
    for user in ("u1", "u2", "u3"):
        t.failed(user, "10.2.2.2")  # one address, three names
    with pytest.raises(LoginLocked):
        t.check("someone-else", "10.2.2.2")


def test_tokens_expire_and_disabled_users_are_refused(app_client) -> None:
    client, app = app_client
    token = make_user(app.state.db, Role.operator)
    with app.state.db.session() as s:
        row = s.query(Token).order_by(Token.id.desc()).first()
        assert row.expires_at is not None
        assert abs(row.expires_at - (datetime.now(UTC) + API_TOKEN_TTL)) < timedelta(minutes=5)
        assert user_for_token(s, token, now=datetime.now(UTC) + API_TOKEN_TTL - timedelta(hours=1)) is not None
        assert user_for_token(s, token, now=datetime.now(UTC) + API_TOKEN_TTL + timedelta(hours=1)) is None
        user = user_for_token(s, token)
        name = user.name
    assert client.get("/api/v1/auth/me", headers=auth(token)).status_code == 200
    with app.state.db.session() as s:
        set_user_disabled(s, name, True)
    assert client.get("/api/v1/auth/me", headers=auth(token)).status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": name, "password": "correct horse battery"})
    assert r.status_code == 401
    with app.state.db.session() as s:
        set_user_disabled(s, name, False)
    assert client.get("/api/v1/auth/me", headers=auth(token)).status_code == 200


def test_cli_lists_and_revokes_tokens_and_disables_users(sqlite_target: DbTarget) -> None:
    db = Database(sqlite_target.url)
    upgrade(db)
    env = {**os.environ, "TURNOUT_DATABASE_URL": sqlite_target.url}

    def turnout(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "turnout.cli", *args], env=env, input=stdin, capture_output=True, text=True,
            timeout=60,
        )

    assert turnout("users", "create", "erin", "--role", "operator", "--password-stdin", stdin="long enough pw\n").returncode == 0
    t1 = turnout("tokens", "create", "--user", "erin", "--name", "ci").stdout.strip()
    t2 = turnout("tokens", "create", "--user", "erin", "--name", "backup", "--expires-days", "2").stdout.strip()
    listing = turnout("tokens", "list")
    assert listing.returncode == 0 and t1 not in listing.stdout and t2 not in listing.stdout
    rows = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+erin\s+(\S+)", listing.stdout, re.M)}
    assert set(rows) == {"ci", "backup"}
    r = turnout("tokens", "revoke", str(rows["ci"]))
    assert r.returncode == 0, r.stderr
    with db.session() as s:
        assert user_for_token(s, t1) is None and user_for_token(s, t2) is not None
    assert "ci" not in turnout("tokens", "list").stdout.split()
    assert "revoked" in turnout("tokens", "list", "--all").stdout
    assert turnout("tokens", "revoke", "99999").returncode == 1
    r = turnout("users", "disable", "erin")
    assert r.returncode == 0, r.stderr
    with db.session() as s:
        assert user_for_token(s, t2) is None
    assert turnout("users", "disable", "nobody").returncode == 1
    db.dispose()


def test_security_headers_on_every_response(app_client) -> None:
    client, _ = app_client
    for path in ("/", "/login", "/api/v1/events", "/api/v1/events/nope", "/openapi.json", "/docs", "/healthz"):
        r = client.get(path)
        csp = r.headers.get("content-security-policy", "")
        directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
        assert directives.get("script-src") == ["'self'"], (path, csp)
        assert directives.get("frame-ancestors") == ["'none'"], path
        assert "'unsafe-inline'" not in directives.get("default-src", [])
        assert r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") == "same-origin", path


def test_pages_have_no_inline_script_so_the_csp_keeps_them_working() -> None:
    pages = [*STATIC.glob("*.html"), *(STATIC.parent.parent / "apidocs" / "static").glob("*.html")]
    assert len(pages) >= 5
    for page in pages:
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page.name}: inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{page.name}: inline event handler"
        assert "javascript:" not in html
        assert not re.search(r"(src|href)=\"(https?:)?//", html), f"{page.name}: loads from another site"


def test_api_docs_are_served_by_the_server_itself(app_client) -> None:
    client, _ = app_client
    for path, lib in (("/docs", "/apidocs/vendor/swagger-ui-bundle.js"), ("/redoc", "/apidocs/vendor/redoc.standalone.js")):
        r = client.get(path)
        if r.status_code == 503:
            pytest.fail(f"{path}: {r.text}")
        assert r.status_code == 200 and lib in r.text and "cdn" not in r.text.lower()
        js = client.get(lib)
        assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/apidocs/../auth.py").status_code == 404
    assert client.get("/apidocs/%2e%2e/%2e%2e/auth.py").status_code == 404


def test_openapi_documents_responses_of_the_routes(app_client) -> None:
    client, _ = app_client
    spec = client.get("/openapi.json").json()
    owned = ("/api/v1/venues", "/api/v1/events", "/api/v1/alerts", "/api/v1/auth")
    checked = 0
    for path, ops in spec["paths"].items():
        if not path.startswith(owned) or "/live" in path or "/stream" in path:
            continue
        for method, op in ops.items():
            responses = op["responses"]
            ok = next(c for c in responses if c.startswith("2"))
            content = responses[ok].get("content", {})
            if ok != "204" and "application/json" not in content:  # a file (the report): its media types named
                assert content and all("/" in t and t != "*/*" for t in content), (method, path, content)
            elif ok != "204":
                schema = content["application/json"]["schema"]
                assert schema not in ({}, {"type": "object"}, {"additionalProperties": True, "type": "object"}), (
                    method, path)
            if path != "/api/v1/auth/login":
                assert "401" in responses, (method, path)
            if method in ("put", "post", "delete") and path != "/api/v1/auth/login" and "logout" not in path:
                assert "403" in responses, (method, path)
            checked += 1
    assert checked >= 14
    assert "delete" in spec["paths"]["/api/v1/events/{event_id}"]
