"""Forecast of the final attendance at the start time, with an uncertainty band.

Method (documented in docs/server.md):

1. **Arrival curve.** ``share(t)`` is the share of the final crowd usually inside ``t`` minutes before
   the start (configurable points, linearly interpolated). With attendance ``A`` now, the curve
   estimate is ``A / share``. The share itself is uncertain by ``± spread x (1 - share)`` (relative), so
   the band is ``A / min(1, share x (1 + u)) .. A / (share x (1 - u))``; it narrows to nothing at the start.
2. **Registrations prior.** ``plausible registrations x expected show-up``, ``± show_up_spread``
   (plausible = registrations minus the ones that look fake).
3. **Blend.** Both are combined by inverse-variance weighting in log space (the curve's band is shrunk by
   the same factor as the combined spread). When the two bands do not
   overlap (registrations inflated, as in Tulsa 2020, or a walk-up crowd) the prior is dropped and
   ``prior_conflict`` is reported: observed arrivals always win over registrations.
4. The final attendance is never forecast below the attendance already in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Forecast:
    value: float
    low: float
    high: float
    at: datetime
    share: float
    method: str
    prior: float | None = None
    prior_conflict: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        for key in ("value", "low", "high", "prior"):
            if d[key] is not None:
                d[key] = round(d[key], 1)
        d["share"] = round(self.share, 4)
        return d


def curve_share(curve: Sequence[tuple[float, float]], minutes_to_start: float) -> float:
    """Share of the final crowd usually in at ``minutes_to_start`` (negative before the start)."""
    xs = np.fromiter((m for m, _ in curve), float)
    ys = np.fromiter((s for _, s in curve), float)
    return float(np.interp(minutes_to_start, xs, ys, left=ys[0], right=1.0))


def forecast_final(
    *,
    attendance: int,
    now: datetime,
    start: datetime,
    curve: Sequence[tuple[float, float]],
    spread: float,
    registrations: float | None,
    show_up: float,
    show_up_spread: float,
) -> Forecast | None:
    """Forecast of attendance at ``start``; None when there is nothing to go on yet."""
    minutes = (now - start).total_seconds() / 60.0
    share = curve_share(curve, minutes)
    curve_band: tuple[float, float, float] | None = None
    if share >= 1.0:
        curve_band = (attendance, attendance, attendance)
    elif share > 0 and attendance > 0:
        u = spread * (1.0 - share)
        point = attendance / share
        low = attendance / min(1.0, share * (1.0 + u))
        high = attendance / max(share * (1.0 - u), 1e-6)
        curve_band = (point, low, high)

    prior_band: tuple[float, float, float] | None = None
    if registrations and registrations > 0:
        p = registrations * show_up
        prior_band = (p, p * (1.0 - show_up_spread), p * (1.0 + show_up_spread))

    floor = float(attendance)
    if curve_band is None and prior_band is None:
        return None
    if prior_band is None or (curve_band is not None and share >= 1.0):
        assert curve_band is not None
        v, lo, hi = curve_band
        return Forecast(max(v, floor), max(lo, floor), max(hi, floor), start, share, "arrival_curve")
    if curve_band is None:
        v, lo, hi = prior_band
        return Forecast(
            max(v, floor), max(lo, floor), max(hi, floor), start, share, "registrations", prior=prior_band[0]
        )
    overlap = curve_band[1] <= prior_band[2] and prior_band[1] <= curve_band[2]
    if not overlap:
        v, lo, hi = curve_band
        return Forecast(
            max(v, floor), max(lo, floor), max(hi, floor), start, share, "arrival_curve", prior_band[0], True
        )
    curve_mu, curve_sigma = _log_normal(*curve_band)
    mu, sigma = _blend((curve_mu, curve_sigma), _log_normal(*prior_band))
    k = sigma / curve_sigma  # shrink the curve's (asymmetric) band by the information the prior adds
    down, up = curve_mu - math.log(max(curve_band[1], 1e-9)), math.log(max(curve_band[2], 1e-9)) - curve_mu
    return Forecast(
        max(math.exp(mu), floor),
        max(math.exp(mu - down * k), floor),
        max(math.exp(mu + up * k), floor),
        start,
        share,
        "blended",
        prior_band[0],
    )


def _log_normal(point: float, low: float, high: float) -> tuple[float, float]:
    mu = math.log(max(point, 1e-9))
    sigma = max(math.log(max(high, 1e-9)) - mu, mu - math.log(max(low, 1e-9)), 1e-6)
    return mu, sigma


def _blend(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    wa, wb = 1.0 / a[1] ** 2, 1.0 / b[1] ** 2
    return (a[0] * wa + b[0] * wb) / (wa + wb), math.sqrt(1.0 / (wa + wb))
