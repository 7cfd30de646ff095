"""Prometheus metrics during a real run: `turnout server` on the real broker, `turnout edge run` on real
video with its metrics port; both scraped twice, the figures move; the Grafana dashboard uses only those names."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.db.session import Database
from server.migrations import upgrade
from server.registrations import import_registrations
from server.venues import SectionIn, VenueIn
from tests.conftest import Broker, clear_retained, free_port
from tests.edge.conftest import turnout_cmd, vtest_config
from tests.server.helpers import event_spec, setup_venue, wait_until
from tests.server.test_restart import ServerProcess

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "turnout.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}

Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> tuple[Scrape, set[str]]:
    """Samples by name and labels, and every series name the text declares (families with no samples too)."""
    samples: Scrape = {}
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(fam.name + s for s in SUFFIXES.get(fam.type, ()))
        for s in fam.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples, names


def value(scrape: Scrape, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; there must be at least one."""
    found = [v for k, v in scrape.get(name, {}).items() if set(labels.items()) <= set(k)]
    assert found, f"no sample {name}{labels}"
    return sum(found)


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory, system_broker: Broker, shared: Path) -> Iterator[dict]:
    """Run server + edge for ~15 s; scrape both endpoints early and late."""
    tmp = tmp_path_factory.mktemp("metrics")
    venue = f"t{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp / 'turnout.db'}"
    db = Database(url)
    upgrade(db)
    sections = [("west-walk", 40), ("east-walk", 60), ("lawn", 80)]
    setup_venue(
        db,
        VenueIn(
            id=venue,
            name="Plaza",
            sections=[SectionIn(id=s, name=s, seats=n, cameras=["plaza-cam"]) for s, n in sections],
            cameras=[{"id": "plaza-cam"}],
        ),
        event_spec(venue, datetime.now(UTC) + timedelta(minutes=60), 180),
    )
    rows = "email\n" + "".join(f"fan{i}@example.org\n" for i in range(150))  # a prior: the forecast exists at once
    with db.session() as s:
        import_registrations(s, "ev", io.BytesIO(rows.encode()))
    db.dispose()
    env = {
        **os.environ,
        "TURNOUT_DATABASE_URL": url,
        "TURNOUT_MQTT_URL": system_broker.url,
        "TURNOUT_MQTT_VENUES": json.dumps([venue]),
        "TURNOUT_MQTT_CLIENT_ID": f"server-{venue}",
        "TURNOUT_TICK_S": "0.25",
        "TURNOUT_MIN_FITTED_POINTS": "1",
    }
    env.pop("TURNOUT_CONFIG", None)
    server = ServerProcess(env, free_port(), tmp / "server.log")
    edge_port = free_port()
    cfg = vtest_config(shared, venue, system_broker.url, tmp / "state", analysis_fps=2)
    cfg["metrics_port"], cfg["metrics_bind"] = edge_port, "127.0.0.1"
    (tmp / "edge.yaml").write_text(yaml.safe_dump(cfg))
    edge: subprocess.Popen | None = None
    edge_url, out = f"http://127.0.0.1:{edge_port}/metrics", {}
    try:
        server.start()
        with (tmp / "edge.log").open("wb") as log:
            edge = subprocess.Popen(
                turnout_cmd("edge", "run", "--config", str(tmp / "edge.yaml"), "--duration", "30"), stdout=log, stderr=log
            )

        def edge_scrape() -> tuple[Scrape, set[str]] | None:
            assert edge is not None and edge.poll() is None, (tmp / "edge.log").read_text()[-2000:]
            try:
                parsed = parse(httpx.get(edge_url, timeout=2).text)
            except httpx.HTTPError:
                return None
            return parsed if parsed[0].get("turnout_edge_sent_total") and value(parsed[0], "turnout_edge_sent_total") else None

        def server_scrape() -> tuple[Scrape, set[str]]:
            return parse(httpx.get(f"{server.url}/metrics", timeout=5).text)

        def server_applied() -> tuple[Scrape, set[str]] | None:
            parsed = server_scrape()
            return parsed if value(parsed[0], "turnout_messages_applied_total", kind="occupancy") >= 1 else None

        out["edge1"] = wait_until(edge_scrape, timeout=40, what="edge metrics with a message sent")
        out["server1"] = wait_until(server_applied, timeout=20, what="server applied a message")
        e1, s1 = out["edge1"][0], out["server1"][0]
        cam = {"camera": "plaza-cam"}

        def both_moved() -> tuple[tuple[Scrape, set[str]], tuple[Scrape, set[str]]] | None:
            """The second scrapes, once every counter the tests below compare has moved past the first."""
            edge2, server2 = edge_scrape(), server_scrape()
            if edge2 is None:
                return None
            e2, s2 = edge2[0], server2[0]
            edge_moved = all(
                value(e2, name, **labels) > value(e1, name, **labels)
                for name, labels in (("turnout_edge_frames_analysed_total", cam), ("turnout_edge_sent_total", cam),
                                     ("turnout_edge_tiles_total", {"outcome": "run", **cam}))
            )  # fmt: skip
            server_moved = value(s2, "turnout_messages_applied_total", kind="occupancy") > value(
                s1, "turnout_messages_applied_total", kind="occupancy"
            ) and all(
                value(s2, name) > value(s1, name)
                for name in ("turnout_ingest_lag_seconds_count", "turnout_tick_duration_seconds_count",
                             "turnout_db_write_seconds_count")
            )  # fmt: skip
            return (edge2, server2) if edge_moved and server_moved else None

        out["edge2"], out["server2"] = wait_until(both_moved, timeout=20, what="edge and server metrics to move")
        out["venue"] = venue
        yield out
    finally:
        if edge is not None and edge.poll() is None:
            edge.terminate()
            try:
                edge.wait(20)
            except subprocess.TimeoutExpired:
                edge.kill()
        server.kill()
        clear_retained(system_broker.host, system_broker.port, f"turnout/v1/{venue}")


def test_server_metrics_move(scrapes: dict) -> None:
    (s1, names), (s2, _) = scrapes["server1"], scrapes["server2"]
    applied = "turnout_messages_applied_total"
    assert value(s2, applied, kind="occupancy") > value(s1, applied, kind="occupancy") >= 1
    assert value(s2, "turnout_messages_received_total") >= value(s2, applied)
    for hist in ("turnout_ingest_lag_seconds_count", "turnout_tick_duration_seconds_count", "turnout_db_write_seconds_count"):
        assert value(s2, hist) > value(s1, hist) > 0, hist
    lag = value(s2, "turnout_ingest_lag_seconds_sum") / value(s2, "turnout_ingest_lag_seconds_count")
    assert 0 <= lag < 5, f"mean ingest lag {lag:.2f} s on one machine"
    assert value(s2, "turnout_camera_stale", camera="plaza-cam") == 0
    assert 0 <= value(s2, "turnout_camera_last_seen_age_seconds", camera="plaza-cam") < 5
    assert value(s2, "turnout_evaluator_active") == 1 and value(s2, "turnout_mqtt_connected") == 1
    assert value(s2, "turnout_decision_state", event="ev") == 1  # exactly one state is current
    assert 0 <= value(s2, "turnout_p_reach_target", event="ev") <= 1
    assert {"turnout_messages_rejected_total", "turnout_sse_clients", "turnout_evaluation_failures_total"} <= names


def test_edge_metrics_move(scrapes: dict) -> None:
    (e1, _), (e2, _) = scrapes["edge1"], scrapes["edge2"]
    cam = {"camera": "plaza-cam"}
    assert value(e2, "turnout_edge_frames_analysed_total", **cam) > value(e1, "turnout_edge_frames_analysed_total", **cam)
    assert value(e2, "turnout_edge_tiles_total", outcome="run", **cam) > value(e1, "turnout_edge_tiles_total", outcome="run", **cam)
    assert value(e2, "turnout_edge_sent_total", **cam) > value(e1, "turnout_edge_sent_total", **cam)
    assert value(e2, "turnout_edge_analysis_fps_target", **cam) == 2
    assert 1.0 <= value(e2, "turnout_edge_analysis_fps", **cam) <= 3.0
    assert 0 < value(e2, "turnout_edge_latency_seconds", **cam) < 5
    assert value(e2, "turnout_edge_mqtt_connected", **cam) == 1 and value(e2, "turnout_edge_mqtt_reconnects_total", **cam) == 0
    assert value(e2, "turnout_edge_spool_messages", **cam) < 5 and value(e2, "turnout_edge_dropped_total", **cam) == 0


def test_grafana_dashboard_uses_served_names(scrapes: dict) -> None:
    served = scrapes["server2"][1] | scrapes["edge2"][1]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for e in exprs for name in re.findall(r"\bturnout_[a-z0-9_]+", e)}
    assert used - served == set(), f"dashboard uses metrics nobody serves: {sorted(used - served)}"
    families = {n for n in served if not n.endswith(("_bucket", "_count", "_sum", "_created"))}
    unused = {n for n in families if not any(n in u or u.startswith(n) for u in used)}
    assert not unused - {"turnout_messages_received", "turnout_messages_received_total"}, sorted(unused)
