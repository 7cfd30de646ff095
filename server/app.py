"""The FastAPI application: `create_app(settings)` wires storage, live state, MQTT and routers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.clock import Clock
from server.db.session import Database
from server.ingest import MqttBridge
from server.lease import Lease, holder_id
from server.live import LiveHub
from server.metrics import ServerMetrics
from server.metrics import router as metrics_router
from server.notify import Notifier
from server.settings import Settings, load_settings

log = logging.getLogger(__name__)

# No inline script anywhere (dashboard, login, API docs); inline styles are used by the pages and ReDoc.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
ROUTERS = ("auth", "venues", "events", "registrations", "live", "history", "alerts", "notify")
OPTIONAL_ROUTERS = ("ui", "stream", "calibration")  # the dashboard's, mounted when present


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, run_ticks: bool = True) -> FastAPI:
    """Build the app. MQTT ingest and the evaluation loop start and stop with the app's lifespan.

    ``clock`` replaces wall time (replays, tests); ``run_ticks=False`` leaves `hub.tick()` to the caller.
    """
    settings = settings or load_settings()
    db = Database(settings.database_url, settings.database_schema)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            from server.migrations import upgrade

            await asyncio.to_thread(upgrade, db)
        hub.reload()
        if settings.mqtt_enabled:
            bridge.start()
        task = asyncio.create_task(_tick_loop(hub, settings.tick_s, metrics)) if run_ticks else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if hub.lease is not None:
                await asyncio.to_thread(hub.lease.release)
            if settings.mqtt_enabled:
                bridge.stop()
            notifier.stop()
            with db.session() as s:
                hub.flush(s)
            db.dispose()

    app = FastAPI(
        title="Turnout server",
        version="1",
        summary="Live attendance from edge cameras, registrations, forecast and overflow decision.",
        lifespan=lifespan,
        docs_url=None,  # served from the server's own files by server.routers.docs (no CDN, no inline script)
        redoc_url=None,
    )
    app.add_middleware(SecurityHeaders)
    hub = LiveHub(settings, db, clock)
    bridge = MqttBridge(settings, hub)
    hub.alerts.set_publisher(lambda topic, payload: bridge.publish(topic, payload, qos=1, retain=True))
    notifier = hub.notifier = Notifier(
        db,
        hub.clock,
        attempts=settings.notify_attempts,
        backoff_s=settings.notify_backoff_s,
        backoff_max_s=settings.notify_backoff_max_s,
    )
    hub.alerts.set_listener(notifier.alert_changed)
    if settings.evaluate:
        hub.lease = Lease(db, holder_id(settings), settings.lease_ttl_s)
    metrics = ServerMetrics(hub, db, bridge.connected.is_set) if settings.metrics_enabled else None
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.db = db
    app.state.hub = hub
    app.state.mqtt = bridge

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_headers=["*"], allow_methods=["*"]
        )
    for module in _router_modules():
        app.include_router(module.router)
    if metrics is not None:
        app.include_router(metrics_router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {
            "ok": True,
            "mqtt_connected": bridge.connected.is_set(),
            "ingest": dict(hub.counters),
            "evaluating": settings.evaluate and (hub.lease is None or hub.lease.held),
        }

    return app


def _router_modules() -> list:
    """The core routers in order, then every other module of `server.routers` with a ``router``
    (the dashboard's ui, stream, calibration, ...), so new routers are mounted by being there."""
    import server.routers as pkg

    names = list(ROUTERS) + sorted(
        m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in ROUTERS and not m.name.startswith("_")
    )
    modules = [importlib.import_module(f"server.routers.{name}") for name in names]
    return [m for m in modules if hasattr(m, "router")]


class SecurityHeaders:
    """Pure ASGI middleware adding security headers to every HTTP response (the body is never touched)."""

    HEADERS = (
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"cross-origin-opener-policy", b"same-origin"),
    )

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _tick_loop(hub: LiveHub, every_s: float, metrics: ServerMetrics | None = None) -> None:
    while True:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(hub.tick)
        except Exception:
            log.exception("evaluation tick failed")
        if metrics is not None:
            metrics.tick.observe(time.perf_counter() - started)
        await asyncio.sleep(every_s)
