"""The FastAPI application: `create_app(settings)` wires storage, live state, MQTT and routers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.clock import Clock
from server.db.session import Database
from server.ingest import MqttBridge
from server.live import LiveHub
from server.settings import Settings, load_settings

log = logging.getLogger(__name__)

ROUTERS = ("auth", "venues", "events", "registrations", "live", "history", "alerts")
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
        task = asyncio.create_task(_tick_loop(hub, settings.tick_s)) if run_ticks else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if settings.mqtt_enabled:
                bridge.stop()
            with db.session() as s:
                hub.flush(s)
            db.dispose()

    app = FastAPI(
        title="Turnout server",
        version="1",
        summary="Live attendance from edge cameras, registrations, forecast and overflow decision.",
        lifespan=lifespan,
    )
    hub = LiveHub(settings, db, clock)
    bridge = MqttBridge(settings, hub)
    hub.alerts.set_publisher(lambda topic, payload: bridge.publish(topic, payload, qos=1, retain=True))
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

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {
            "ok": True,
            "mqtt_connected": bridge.connected.is_set(),
            "ingest": dict(hub.counters),
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


async def _tick_loop(hub: LiveHub, every_s: float) -> None:
    while True:
        try:
            await asyncio.to_thread(hub.tick)
        except Exception:
            log.exception("evaluation tick failed")
        await asyncio.sleep(every_s)
