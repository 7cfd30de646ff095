"""Bounded on-disk message queue and per-camera sequence counter (store-and-forward).

One SQLite file per camera (``{state_dir}/{venue}-{camera}.sqlite``, WAL mode, ``synchronous=FULL``) holds:

* ``queue``: messages not yet acknowledged by the broker (QoS 1 PUBACK), in the order they were put;
* ``meta``: the last ``seq`` handed out, the number of messages dropped by the bound, and ``stream``: a random
  63-bit number made when the file is created, sent as the message's ``stream`` (16 hex digits). A new file
  (a wiped state folder, a reset device) is a new stream, which the server accepts whatever its ``seq``
  (server/sequence.py); within one file ``seq`` only goes up.

Every write is a committed transaction before the call returns, so a ``kill -9`` (or a power cut) loses
neither a queued message nor a ``seq`` already used. A fresh file starts ``seq`` at the current Unix time in
milliseconds, so a device whose state folder is wiped or replaced still sends larger numbers than before
(the server drops messages whose ``seq`` it has already seen).

Overflow (``max_messages`` reached): ``drop_oldest`` deletes the oldest queued message to make room,
``drop_newest`` refuses the new one. Either way ``dropped`` grows by one and is persisted.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

SEQ_START_MAX = 2**52
"""A new file starts ``seq`` at the clock in milliseconds, but never above this (contract: seq < 2**53)."""

Overflow = Literal["drop_oldest", "drop_newest"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class SpoolItem:
    """One queued message; `id` orders the queue (insertion order)."""

    id: int
    seq: int
    topic: str
    payload: bytes


class Spool:
    """Thread-safe bounded FIFO on SQLite, plus the persisted ``seq`` counter of one camera."""

    def __init__(self, path: Path, max_messages: int = 100_000, overflow: Overflow = "drop_oldest") -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'drop_newest', got {overflow!r}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.overflow: Overflow = overflow
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            with self._tx():
                fresh = self._db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('seq', ?), ('dropped', 0)",
                    (min(int(time.time() * 1000), SEQ_START_MAX),),
                ).rowcount
                # files from before streams get theirs now: the server sees a new stream once, and accepts it
                self._db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('stream', ?)", (secrets.randbits(63),)
                )
            if fresh:
                # seq restarts from the clock in a new stream: the server accepts it even if the clock is behind
                # (no RTC, before NTP sync); older servers without streams would drop it as already seen
                log.warning(
                    "new store-and-forward queue %s: new stream, seq starts at the clock (%s UTC); check the clock",
                    self.path,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                )
            self._count = self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
            self.stream = f"{self._meta('stream'):016x}"
        except sqlite3.Error as exc:
            raise OSError(f"cannot open store-and-forward queue {self.path}: {exc}") from exc

    # ----------------------------------------------------------------------------------------- helpers
    def _tx(self) -> _Transaction:
        """``with self._tx():`` runs the block in one IMMEDIATE transaction (commit or rollback)."""
        return _Transaction(self._db)

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # --------------------------------------------------------------------------------------------- seq
    def next_seq(self) -> int:
        """Return the next ``seq`` (strictly increasing), committed to disk before it is returned."""
        with self._lock, self._tx():
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq'")
            return self._meta("seq")

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._meta("seq")

    # ------------------------------------------------------------------------------------------- queue
    def put(self, topic: str, payload: bytes, seq: int) -> bool:
        """Append a message; return False when the bound refused it (``drop_newest``)."""
        with self._lock, self._tx():
            if self._count >= self.max_messages:
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'dropped'")
                if self.overflow == "drop_newest":
                    return False
                self._db.execute("DELETE FROM queue WHERE id = (SELECT MIN(id) FROM queue)")
                self._count -= 1
            self._db.execute(
                "INSERT INTO queue(seq, topic, payload, created) VALUES (?, ?, ?, ?)",
                (seq, topic, bytes(payload), time.time()),
            )
            self._count += 1
            return True

    def peek(self, limit: int = 1, after_id: int = 0) -> list[SpoolItem]:
        """The oldest `limit` messages whose id is greater than `after_id`, oldest first (not removed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, seq, topic, payload FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [SpoolItem(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def ack(self, *ids: int) -> None:
        """Remove delivered messages (ids no longer queued, e.g. dropped meanwhile, are ignored)."""
        if not ids:
            return
        with self._lock, self._tx():
            cur = self._db.execute(f"DELETE FROM queue WHERE id IN ({','.join('?' * len(ids))})", ids)
            self._count -= cur.rowcount

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def oldest_age_s(self) -> float:
        """Seconds the oldest queued message has waited (0 when the queue is empty)."""
        with self._lock:
            oldest = self._db.execute("SELECT created FROM queue ORDER BY id LIMIT 1").fetchone()
        return max(0.0, time.time() - oldest[0]) if oldest else 0.0

    @property
    def dropped(self) -> int:
        """Messages lost to the bound since this file was created."""
        with self._lock:
            return self._meta("dropped")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
