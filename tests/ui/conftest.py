"""Browser-test fixtures: the real server (uvicorn thread) on the real broker, and Debian's Chromium."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker, clear_retained, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
AXE_JS = REPO / "server" / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "ui-test-" + secrets.token_hex(4)

EDGE_CAMERA = "cam1"
OTHER_CAMERA = "cam2"
# cam1 watches the plaza of vtest.avi (480x360) in pixel coordinates
CAM1_SECTIONS = [
    {"id": "north", "seats": 50, "polygon": [[0.0, 100.0], [240.0, 100.0], [240.0, 360.0], [0.0, 360.0]]},
    {"id": "south", "seats": 30, "polygon": [[240.0, 100.0], [480.0, 100.0], [480.0, 360.0], [240.0, 360.0]]},
]


@dataclass
class LiveServer:
    url: str
    venue: str
    event: str
    app: Any
    broker: Broker
    client: mqtt.Client
    seq: dict[str, int] = field(default_factory=dict)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def next_seq(self, camera: str) -> int:
        self.seq[camera] = self.seq.get(camera, 0) + 1
        return self.seq[camera]


def _venue_yaml(path: Path, venue: str, event: str) -> Path:
    now = datetime.now(UTC).replace(microsecond=0)
    data = {
        "venues": [
            {
                "id": venue,
                "name": "UI test arena",
                "cameras": [{"id": EDGE_CAMERA}, {"id": OTHER_CAMERA}],
                "sections": [
                    {"id": "north", "name": "North", "seats": 50, "cameras": [EDGE_CAMERA]},
                    {"id": "south", "name": "South", "seats": 30, "cameras": [EDGE_CAMERA]},
                    {"id": "east", "name": "East", "seats": 40, "cameras": [OTHER_CAMERA]},
                ],
            }
        ],
        "events": [
            {
                "id": event,
                "venue": venue,
                "name": "UI test concert",
                "doors_open": (now - timedelta(minutes=30)).isoformat(),
                "start": (now + timedelta(minutes=90)).isoformat(),
                "capacity": 120,
                "timezone": "America/Chicago",
                "overflow": {"capacity": 500, "deadline": (now + timedelta(minutes=30)).isoformat()},
            }
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def live_server(system_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """create_app on a fresh SQLite file, ingesting from the real broker, served by uvicorn."""
    from server.app import create_app
    from server.auth import Role, create_user
    from server.db.session import Database
    from server.migrations import upgrade
    from server.settings import load_settings
    from server.venues import load_file
    from turnout.demo import ServerThread

    tmp = tmp_path_factory.mktemp("ui-server")
    venue = f"ui{uuid.uuid4().hex[:10]}"
    event = f"{venue}-show"
    url = f"sqlite:///{tmp / 'turnout.db'}"
    db = Database(url)
    upgrade(db)
    with db.session() as s:
        load_file(s, _venue_yaml(tmp / "venue.yaml", venue, event))
    with db.session() as s:
        create_user(s, "ops", Role.operator, PASSWORD)
    with db.session() as s:
        create_user(s, "watcher", Role.viewer, PASSWORD)
    with db.session() as s:
        create_user(s, "chief", Role.admin, PASSWORD)
    db.dispose()
    settings = load_settings(
        None, database_url=url, mqtt_url=system_broker.url, mqtt_venues=[venue], public_read=False, tick_s=0.2
    )
    app = create_app(settings)
    server = ServerThread(app, free_port()).start()
    assert app.state.mqtt.wait_connected(10), "server did not connect to the broker"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ui-test-{venue}", protocol=mqtt.MQTTv311)
    client.connect(system_broker.host, system_broker.port)
    client.loop_start()
    yield LiveServer(f"http://127.0.0.1:{server.port}", venue, event, app, system_broker, client)
    client.loop_stop()
    client.disconnect()
    server.stop()
    clear_retained(system_broker.host, system_broker.port, f"turnout/v1/{venue}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: run `scripts/setup.sh test` (installs the Debian chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context; a screenshot of the final state goes to test-artifacts/ui/."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def login(page: Any, server: LiveServer, user: str = "ops", path: str = "/") -> None:
    """Sign in through the login page and land on `path`."""
    page.goto(f"{server.url}{path}")
    page.wait_for_url("**/login**")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda url: "/login" not in url and url.startswith(f"{server.url}{path}"))


def api_token(server: LiveServer, user: str = "ops") -> str:
    import httpx

    r = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": user, "password": PASSWORD}, timeout=10)
    r.raise_for_status()
    return str(r.json()["token"])


def occupancy(server: LiveServer, camera: str, sections: list[tuple[str, int, int, int]]) -> tuple[str, bytes]:
    """Topic and payload of one valid occupancy message: sections as (id, seats, occupied, people)."""
    from turnout import contract

    msg = contract.Occupancy(
        venue=server.venue,
        camera=camera,
        seq=server.next_seq(camera),
        ts=contract.utcnow(),
        sections=[contract.SectionCount(id=i, seats=s, occupied=o, people=p) for i, s, o, p in sections],
        model="yolo11n",
        processing=contract.Processing(fps=2.0, latency_ms=80.0, frames=server.seq[camera]),
    )
    return contract.occupancy_topic(server.venue, camera), msg.to_json()


def wait_js(page: Any, fn: str, arg: Any = None, timeout: float = 5.0, what: str = "") -> Any:
    """Poll the JavaScript function ``fn`` (called with ``arg``) until it returns something truthy.

    Unlike Playwright's ``wait_for_function`` (which compiles the function with ``new Function`` inside the page
    and so is refused by the dashboard's ``script-src 'self'`` CSP), ``page.evaluate`` goes through the DevTools
    protocol, which the page's CSP does not govern: the pages are tested under their real CSP.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = page.evaluate(fn, arg)
        except Exception as exc:  # the page is navigating (e.g. sign-in redirects): ask the next page
            if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or fn} (last value {value!r})")
        time.sleep(0.05)


def wait_live(page: Any, timeout: float = 10.0) -> None:
    """Wait until the dashboard's event stream is connected."""
    wait_js(page, "() => document.querySelector('#conn')?.dataset.state === 'live'", timeout=timeout, what="live")
