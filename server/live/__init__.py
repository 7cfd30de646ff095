"""Live state of every venue and event and what is computed from it, split by job.

* `state` — the in-memory live state and MQTT ingest (``LiveState.lock`` guards it);
* `snapshot` — immutable, typed views of one event taken under that lock;
* `evaluate` — pure functions: snapshot (+ decision memory, rules) -> forecast, decision, alerts;
* `store` — loading from and saving to the database;
* `broadcast` — change notification for server-sent events;
* `view` — the JSON of ``GET /api/v1/events/{id}/live``;
* `hub` — `LiveHub`, which ties them together and owns the one lock order (see its docstring).
"""

from server.live.hub import LiveHub

__all__ = ["LiveHub"]
