"""Change notification for server-sent events: waiters on event loops, woken from any thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

MAX_NOTIFY_HZ = 5.0


class Broadcaster:
    def __init__(self) -> None:
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def listeners(self) -> int:
        return len(self._waiters)

    def notify(self) -> None:
        """Wake every listener (thread-safe)."""
        for loop, ev in list(self._waiters):
            if not ev.is_set():
                try:
                    loop.call_soon_threadsafe(ev.set)
                except RuntimeError:  # loop closed
                    with contextlib.suppress(ValueError):
                        self._waiters.remove((loop, ev))

    async def listen(
        self, ids: Callable[[], list[str]], view: Callable[[str], dict[str, Any]], heartbeat_s: float = 5.0
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``view(id)`` for each of ``ids()`` on every change (at most 5 per second) and at least
        every ``heartbeat_s``; ids that vanished are skipped."""
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        entry = (loop, ev)
        self._waiters.append(entry)
        try:
            ev.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), timeout=heartbeat_s)
                ev.clear()
                for eid in ids():
                    try:
                        yield view(eid)
                    except KeyError:
                        continue
                await asyncio.sleep(1.0 / MAX_NOTIFY_HZ)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
