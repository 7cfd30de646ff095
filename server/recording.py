"""The recording format of MQTT traffic (JSON lines) shared by `turnout server --record` and `turnout replay`.

One message per line, in time order::

    {"ts": "<ISO 8601 UTC event time>", "topic": "turnout/v1/...", "payload": {...}, "retain": false}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


class RecordingError(ValueError):
    """A recording line cannot be replayed; ``str(err)`` names the line and the problem."""


@dataclass(frozen=True)
class Recorded:
    ts: datetime
    topic: str
    payload: bytes
    retain: bool = False

    def to_json(self) -> str:
        try:
            payload: Any = json.loads(self.payload)
        except ValueError:
            payload = self.payload.decode("utf-8", "replace")
        return json.dumps(
            {"ts": self.ts.isoformat(), "topic": self.topic, "payload": payload, "retain": self.retain},
            separators=(",", ":"),
        )


def parse_line(number: int, line: str) -> Recorded:
    """One recording line; `RecordingError` naming ``number`` and what is wrong."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise RecordingError(f"line {number}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise RecordingError(f"line {number}: expected an object with ts, topic, payload")
    missing = [k for k in ("ts", "topic", "payload") if k not in obj]
    if missing:
        raise RecordingError(f"line {number}: missing {', '.join(missing)}")
    extra = set(obj) - {"ts", "topic", "payload", "retain"}
    if extra:
        raise RecordingError(f"line {number}: unexpected field(s) {', '.join(sorted(extra))}")
    try:
        ts = datetime.fromisoformat(str(obj["ts"]).replace("Z", "+00:00"))
    except ValueError:
        raise RecordingError(f"line {number}: ts {obj['ts']!r} is not an ISO 8601 time") from None
    if ts.tzinfo is None:
        raise RecordingError(f"line {number}: ts {obj['ts']!r} has no UTC offset")
    if not isinstance(obj["topic"], str) or not obj["topic"].startswith("turnout/v1/"):
        raise RecordingError(f"line {number}: topic must be a string under turnout/v1/")
    if not isinstance(obj.get("retain", False), bool):
        raise RecordingError(f"line {number}: retain must be true or false")
    payload = obj["payload"]
    raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    return Recorded(ts.astimezone(UTC), obj["topic"], raw, bool(obj.get("retain", False)))


def read_recording(lines: Iterable[str]) -> Iterator[Recorded]:
    """Parse and check a recording (time order included), lazily; blank lines are skipped."""
    last: datetime | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rec = parse_line(number, line)
        if last is not None and rec.ts < last:
            raise RecordingError(f"line {number}: ts {rec.ts.isoformat()} is earlier than the line before")
        last = rec.ts
        yield rec


class Recorder:
    """Appends live MQTT traffic to a recording file (`turnout server --record FILE`), thread-safe."""

    def __init__(self, path: Path, clock: Callable[[], datetime]) -> None:
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._clock = clock
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes, retain: bool = False) -> None:
        line = Recorded(self._clock(), topic, payload, retain).to_json()
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
