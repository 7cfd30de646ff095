"""Recordings of whole events on the Tulsa venue (deploy/venue-tulsa.yaml), published per docs/mqtt.md.

Arrivals are monotone cubic (PCHIP) curves through a few anchor points, so they share nothing with the
server's logistic arrival family; counts get per-section noise and an optional camera bias.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml
from scipy.interpolate import PchipInterpolator

from server.recording import Recorded

REPO = Path(__file__).resolve().parents[2]
TULSA = REPO / "deploy" / "venue-tulsa.yaml"
START = datetime(2020, 6, 21, 0, 0, tzinfo=UTC)  # 19:00 in Tulsa
DEADLINE_MIN = -60.0

USUAL = [(-240, 0.0), (-180, 0.08), (-150, 0.18), (-120, 0.33), (-90, 0.50), (-60, 0.68), (-30, 0.86), (-10, 0.96), (0, 1.0)]
"""The usual arena curve (the server's default `arrival_curve`)."""
LATE = [(-240, 0.0), (-180, 0.03), (-140, 0.09), (-100, 0.20), (-70, 0.33), (-45, 0.50), (-20, 0.80), (-5, 0.96), (0, 1.0)]
"""A late crowd: about 20 % in at T-100, 50 % at T-45."""


@dataclass(frozen=True)
class Scenario:
    final: int
    curve: list[tuple[int, float]]
    bias: float = 1.0
    """Every camera counts ``bias`` x the truth."""
    calibration: dict[str, float] | None = None
    """What the cameras publish in their status (None: uncalibrated)."""
    silent: tuple[tuple[str, float, float], ...] = ()
    """(camera, from minute, to minute) during which the camera publishes nothing."""
    seed: int = 1


def share(curve: list[tuple[int, float]], minutes: np.ndarray) -> np.ndarray:
    xs, ys = zip(*curve, strict=True)
    return np.clip(PchipInterpolator(xs, ys)(np.clip(minutes, xs[0], xs[-1])), 0.0, 1.0)


def record(sc: Scenario, step_min: float = 1.0) -> list[Recorded]:
    """One occupancy message per camera per minute from doors-open to the start (and statuses first)."""
    venue = yaml.safe_load(TULSA.read_text())["venues"][0]
    vid = venue["id"]
    sections = venue["sections"]
    seats = np.array([s["seats"] for s in sections])
    cams = [c["id"] for c in venue["cameras"]]
    rng = np.random.default_rng(sc.seed)
    pref = rng.uniform(0.85, 1.15, len(sections))
    out: list[Recorded] = []
    t0 = START - timedelta(minutes=245)
    for cam in cams:
        status = {"v": 1, "venue": vid, "camera": cam, "state": "online", "ts": _iso(t0)}
        if sc.calibration is not None:
            status["calibration"] = {**sc.calibration, "frames": 20}
        out.append(Recorded(t0, f"turnout/v1/{vid}/{cam}/status", json.dumps(status).encode(), True))
    seq = dict.fromkeys(cams, 0)
    for minute in np.arange(-240.0, 0.0 + 1e-9, step_min):
        ts = START + timedelta(minutes=float(minute))
        inside = sc.final * float(share(sc.curve, np.array([minute]))[0])
        want = pref * seats
        per_section = np.minimum(inside * want / want.sum(), seats)
        for cam in cams:
            if any(c == cam and a <= minute < b for c, a, b in sc.silent):
                continue
            counts = []
            for s, truth in zip(sections, per_section, strict=True):
                if cam not in s["cameras"]:
                    continue
                seen = round(float(truth * sc.bias * (1 + rng.normal(0, 0.01))))
                seen = min(max(seen, 0), s["seats"])
                counts.append({"id": s["id"], "seats": s["seats"], "occupied": seen, "people": seen})
            seq[cam] += 1
            payload = {
                "v": 1,
                "venue": vid,
                "camera": cam,
                "seq": seq[cam],
                "ts": _iso(ts),
                "sections": counts,
                "model": "yolo11n",
                "processing": {"fps": 1.0, "latency_ms": 120.0, "frames": seq[cam]},
            }
            out.append(Recorded(ts, f"turnout/v1/{vid}/{cam}/occupancy", json.dumps(payload).encode()))
    return out


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
