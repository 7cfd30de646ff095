"""Admins set an event's organizer channels on the dashboard; each alert card shows where it was sent."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.ui.conftest import LiveServer, api_token, login, wait_js, wait_live
from tests.ui.test_layout import NO_HSCROLL, OVERLAPS, WIDTH, axe_problems, context_at, shoot

pytestmark = pytest.mark.browser
__all__ = ["context_at"]  # the fixture, shared with test_layout


@pytest.fixture
def webhook():
    got: list[tuple[float, dict[str, Any]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield got, srv.server_address[1]
    srv.shutdown()


def test_admin_sets_channels_and_alert_cards_show_deliveries(context_at, live_server: LiveServer, webhook) -> None:
    got, port = webhook
    page = context_at(1440)
    login(page, live_server, user="chief")
    wait_live(page)
    wait_js(page, "() => !document.querySelector('#notify-panel').hidden", what="notifications panel")
    page.fill("#notify-rows [name=label]", "Ops webhook")
    page.fill("#notify-rows [name=url]", f"json://127.0.0.1:{port}/hook")
    page.click("#notify-save")
    wait_js(page, "() => document.querySelector('#notify-status').textContent === 'Saved: 1 channel.'", what="saved")
    page.click("#notify-test")
    wait_js(page, "() => /Ops webhook sent/.test(document.querySelector('#notify-status').textContent)", what="test sent")
    assert got and got[-1][1]["title"].endswith("Test notification")

    # an alert raised now reaches the webhook, and its card says so
    t0 = time.monotonic()
    r = httpx.post(
        f"{live_server.url}/api/v1/events/{live_server.event}/decision/override",
        json={"state": "overflow_needed"},
        headers={"Authorization": f"Bearer {api_token(live_server)}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    card = f"#alerts [data-alert='{live_server.event}:overflow_decision'] .deliveries li"
    wait_js(page, f"() => /Ops webhook: sent \\d\\d:\\d\\d/.test(document.querySelector(\"{card}\")?.textContent)", what="card")
    hook_at, body = next((t, b) for t, b in got if "Overflow decision" in b["title"])
    assert hook_at - t0 < 5.0 and "Overflow event needed" in body["message"]

    for sel in ("#notify-rows [name=label]", "#notify-rows [name=url]", "#notify-save", "#notify-test"):
        assert page.evaluate(WIDTH, sel) >= 200, sel
    assert page.evaluate(NO_HSCROLL)
    assert page.evaluate(OVERLAPS, ["#notify-panel label", "#notify-panel button", "#notify-panel .note"]) == []
    assert axe_problems(page, ["#notify-panel", "#alerts-panel"]) == []
    shoot(page, "notifications-1440", docs=True)

    phone = context_at(390)
    login(phone, live_server, user="chief")
    wait_js(phone, "() => document.querySelectorAll('#notify-rows .notify-row').length === 1", what="rows on a phone")
    box = phone.evaluate(WIDTH, "#notify-rows")
    for sel in ("#notify-rows [name=url]", "#notify-save"):
        assert phone.evaluate(WIDTH, sel) >= box - 2, f"{sel} not full width on a phone"
    assert phone.evaluate(NO_HSCROLL)
    shoot(phone, "notifications-390")

    # operators see the log but not the channels (URLs hold secrets)
    ops = context_at(1440)
    login(ops, live_server)
    wait_js(ops, f"() => document.querySelector(\"{card}\") !== null", what="operator's card")
    assert ops.locator("#notify-panel").is_hidden()
