"""Who may read /metrics: with `metrics_token` only its bearer; without, the rule of the live figures."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.app import create_app
from tests.server.conftest import DbTarget, make_settings


def test_metrics_token_required(sqlite_target: DbTarget) -> None:
    app = create_app(make_settings(sqlite_target, metrics_token="s3cret-scrape"), run_ticks=False)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert ok.status_code == 200 and "turnout_messages_applied_total" in ok.text
        assert ok.headers["content-type"].startswith("text/plain")


def test_metrics_follow_public_read(sqlite_target: DbTarget) -> None:
    with TestClient(create_app(make_settings(sqlite_target), run_ticks=False)) as client:
        assert client.get("/metrics").status_code == 200
    with TestClient(create_app(make_settings(sqlite_target, public_read=False), run_ticks=False)) as client:
        assert client.get("/metrics").status_code == 401
