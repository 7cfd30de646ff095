"""Alerts reach organizers: Apprise targets per event, a local SMTP sink (aiosmtpd) and local webhooks;
retries with backoff, a delivery log per alert; failing or hanging targets never block MQTT alerts or the tick."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.auth import Role
from server.clock import SimulatedClock
from tests.conftest import Broker, free_port
from tests.notify_sink import sink
from tests.server.conftest import DbTarget, make_settings
from tests.server.helpers import Subscriber, auth, event_spec, make_user, setup_venue, venue_spec, wait_until

__all__ = ["sink"]  # the fixture


def test_alert_reaches_mail_and_webhook_within_5_s_and_failures_never_block(
    sqlite_target: DbTarget, system_broker: Broker, venue_id: str, clock: SimulatedClock, sink
) -> None:
    got, smtp_port, http_port = sink
    settings = make_settings(sqlite_target, system_broker, [venue_id], notify_attempts=3, notify_backoff_s=0.2)
    app = create_app(settings, clock=clock, run_ticks=False)
    mail = f"mailto://127.0.0.1:{smtp_port}?from=turnout@example.org&to=organizer@example.org&mode=insecure"
    targets = [
        {"url": mail, "label": "Organizer e-mail"},
        {"url": f"json://ops:s3cret@127.0.0.1:{http_port}/ok", "label": "Ops webhook", "kinds": ["overflow_decision", "camera_stale"]},
        {"url": f"json://127.0.0.1:{http_port}/flaky", "label": "Flaky chat"},
        {"url": f"json://127.0.0.1:{free_port()}/down?cto=1", "label": "Dead gateway"},
        {"url": f"json://127.0.0.1:{http_port}/slow", "label": "Slow SMS"},
    ]
    with TestClient(app) as client:
        assert app.state.mqtt.wait_connected(10)
        setup_venue(app.state.db, venue_spec(venue_id, 2, 4, 1000), event_spec(venue_id, clock.now(), 1000))
        app.state.hub.reload()
        admin, operator = make_user(app.state.db, Role.admin), make_user(app.state.db, Role.operator)

        # configuration: admin only; URLs Apprise cannot use are refused; secrets are masked for display
        bad = client.put("/api/v1/events/ev/notify", json={"targets": [{"url": "nonsense://x"}]}, headers=auth(admin))
        assert bad.status_code == 422 and "Apprise" in bad.text
        assert client.put("/api/v1/events/ev/notify", json={"targets": targets}, headers=auth(operator)).status_code == 403
        r = client.put("/api/v1/events/ev/notify", json={"targets": targets}, headers=auth(admin))
        assert r.status_code == 200, r.text
        assert [t["kinds"] for t in r.json()["targets"]][:2] == [["overflow_decision"], ["overflow_decision", "camera_stale"]]
        assert client.get("/api/v1/events/ev/notify", headers=auth(operator)).status_code == 403
        shown = client.get("/api/v1/events/ev/notify", headers=auth(admin)).json()["targets"]
        assert len(shown) == 5 and "s3cret" in shown[1]["url"] and "s3cret" not in shown[1]["masked"]

        alerts = Subscriber(system_broker, f"turnout/v1/{venue_id}/alerts/#")
        try:
            t0 = time.monotonic()
            r = client.post(
                "/api/v1/events/ev/decision/override", json={"state": "cancel_overflow"}, headers=auth(operator)
            )
            raised_in = time.monotonic() - t0
            assert r.status_code == 200, r.text
            assert raised_in < 1.0, f"raising the alert waited {raised_in:.2f} s for the targets"
            # the MQTT alert is out, whatever the dead, flaky and slow targets do
            wait_until(lambda: any(p["kind"] == "overflow_decision" for p in alerts.payloads()), 5, "MQTT alert")
            wait_until(lambda: got.mails and any(p == "/ok" for _, p, _ in got.hooks), 5, "mail and webhook")
            mail_at, msg = got.mails[0]
            hook_at, _, hook = next(h for h in got.hooks if h[1] == "/ok")
            assert mail_at - t0 < 5.0 and hook_at - t0 < 5.0
            assert msg["To"] == "organizer@example.org" and "Overflow decision" in msg["Subject"]
            text = msg.get_body(preferencelist=("plain",)).get_content()
            assert "Cancel the overflow event (Outdoor stage)" in text and "set by operator-" in text
            assert hook["title"].startswith("Turnout · Test rally · Overflow decision") and "overflow" in hook["message"]

            # the tick is not held up by a target that hangs (the slow one is still sending)
            t1 = time.monotonic()
            app.state.hub.tick()
            assert time.monotonic() - t1 < 1.0

            # retries with backoff: flaky gets through on its 3rd try; the dead one gives up after 3
            notifier = app.state.hub.notifier
            wait_until(notifier.idle, 15, "deliveries settled")
            log = {d.target: d for d in notifier.log("ev:overflow_decision")}
            assert {k: (v.status, v.attempts) for k, v in log.items()} == {
                "Organizer e-mail": ("sent", 1),
                "Ops webhook": ("sent", 1),
                "Flaky chat": ("sent", 3),
                "Dead gateway": ("failed", 3),
                "Slow SMS": ("sent", 1),
            }
            assert log["Dead gateway"].error and log["Organizer e-mail"].error is None
            assert got.flaky_calls == 3
            assert log["Ops webhook"].target_url.startswith("json://ops:") and "s3cret" not in log["Ops webhook"].target_url

            # the log is on the dashboard's live JSON and in the database
            live = client.get("/api/v1/events/ev/live").json()
            card = next(a for a in live["alerts"] if a["id"] == "ev:overflow_decision")
            assert sorted(d["status"] for d in card["deliveries"]) == ["failed", "sent", "sent", "sent", "sent"]
            stored = client.get("/api/v1/events/ev/deliveries").json()
            assert {d["target"]: d["status"] for d in stored} == {k: v.status for k, v in log.items()}

            # a test message reaches every target, whatever its kinds
            r = client.post("/api/v1/events/ev/notify/test", headers=auth(admin))
            assert r.status_code == 202 and r.json()["queued"] == 5
            wait_until(lambda: len(got.mails) == 2, 5, "test mail")
            assert "Test notification" in got.mails[1][1]["Subject"]
        finally:
            alerts.close()


def test_event_config_takes_apprise_urls_and_keeps_dashboard_targets_when_omitted() -> None:
    from datetime import UTC, datetime

    from server.venues import EventIn

    base = {"id": "e", "venue": "v", "name": "E", "capacity": 10,
            "doors_open": datetime(2030, 1, 1, 17, tzinfo=UTC), "start": datetime(2030, 1, 1, 19, tzinfo=UTC)}  # fmt: skip
    ev = EventIn.model_validate({**base, "notify": ["mailto://u:p@example.org", {"url": "json://h/x", "label": "Hook"}]})
    assert [(t.url, t.label, [k.value for k in t.kinds]) for t in ev.notify] == [
        ("mailto://u:p@example.org", "", ["overflow_decision"]),
        ("json://h/x", "Hook", ["overflow_decision"]),
    ]
    assert EventIn.model_validate(base).notify is None  # omitted: keep what the dashboard set
    with pytest.raises(ValueError, match="Apprise"):
        EventIn.model_validate({**base, "notify": ["nonsense://x"]})
