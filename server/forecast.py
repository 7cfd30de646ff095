"""Forecast of the final attendance (at the start time) as a probability distribution.

Pure functions: figures in, `FinalForecast` out. The method, in words (docs/server.md says it for
operations managers):

1. **Arrival shape.** How the crowd arrives is not known in advance. A *family* of cumulative arrival
   curves (early, usual, late, stalling, walk-up; plus the venue's configured curve and its past events)
   is on normalised event time ``u`` (0 at doors-open, 1 at the start). Each curve is weighted by its prior
   weight times how well it explains the attendance *series* so far (least squares in log space, sampled
   every ``fit_step_min``): a crowd still accelerating is explained by a late curve, not by a small crowd.
2. **Counting error.** Counts are divided by each camera's measured bias (``turnout edge calibrate``);
   calibrated cameras add their measured spread; cameras without calibration count as +-25 % of unknown
   sign (log-normal, sigma 0.15), integrated over 7 points.
3. **People not yet inside.** Queue counts (sections of kind ``queue``) are added to the series the shapes
   are fitted on, so a queue outside reads as a crowd arriving, and 90 % of the queue is a floor.
4. **Registrations.** ``plausible registrations x expected show-up`` is a prior on the final that applies
   with probability ``w`` (smaller the more registrations look inflated: suspect share, far more than the
   venue holds). The data then decide between "prior applies" and "prior does not" by how well the prior
   agrees with the arrivals: the weight falls smoothly, never an on/off switch.
5. The final is never below the attendance already counted (after bias correction).

The result is a mixture of log-normal components; quantiles and P(final >= target) are read from its
distribution function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.special import ndtr

UNCALIBRATED_SIGMA = math.log(1.25)
"""Log-sd of the bias of an uncalibrated camera: +-25 % is one standard deviation (seated crowds are
undercounted by more than that often enough that a tighter prior would cancel full houses)."""
CALIBRATED_FLOOR = 0.03
"""Systematic error left after calibration (the event's crowd is not the calibration frames' crowd)."""
QUEUE_FLOOR_SHARE = 0.9
"""Share of the people queueing outside who are counted as certain to come in."""


# --------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class ArrivalShape:
    """A cumulative arrival curve on normalised time (0 = doors open, 1 = start), with a prior weight."""

    name: str
    family: str
    u: tuple[float, ...]
    share: tuple[float, ...]
    prior: float

    def at(self, u: np.ndarray | float) -> np.ndarray:
        return np.interp(u, self.u, self.share, left=0.0, right=1.0)


def logistic_shape(name: str, family: str, center: float, width: float, prior: float) -> ArrivalShape:
    """A logistic arrival curve, normalised to 0 at doors-open and 1 at the start."""
    u = np.linspace(0.0, 1.0, 81)
    return ArrivalShape(name, family, tuple(u.round(5)), tuple(_logistic(u, center, width).round(6)), prior)


FAMILIES: dict[str, tuple[float, float, float]] = {
    # family: (centre, width, prior weight) of a logistic curve on normalised time
    "early": (0.40, 0.12, 0.15),
    "usual": (0.64, 0.12, 0.35),
    "late": (0.82, 0.12, 0.20),
    "stalling": (0.45, 0.07, 0.10),
    "walk-up": (0.95, 0.07, 0.20),
}
STEADY_POWERS = (0.7, 1.0, 1.4, 2.0, 2.8, 4.0)
"""``steady`` family: share = u^p (a constant arrival rate is p = 1; larger p: a rate that keeps rising)."""
STEADY_PRIOR = 0.12
TWO_WAVE_PRIOR = 0.4
"""``two-wave`` family: a first wave (or a steady trickle) then a late wave; a plateau is not the end.
A crowd that has barely started coming explains its first counts as well with "small and early" as with
"a trickle before the main rush": only this prior tells them apart until the rush begins, and a wrong
cancel is final, so late crowds get a generous share (tuned on a backtest seed, checked on another)."""
OVER_CAPACITY_FREE = 1.2
OVER_CAPACITY_SD = 0.35
"""Prior on the size of the final (demand): see :func:`final_size_log_prior`."""
TRICKLE_SHARE = 0.75
"""Share of the ``two-wave`` prior on a steady trickle before the main rush (the rest: a first wave)."""
TRICKLE_ALPHAS = (0.05, 0.1, 0.2, 0.4)
"""Shares of the crowd that a trickle before the late wave may hold."""
FIRST_WAVE_ALPHAS = (0.2, 0.3, 0.5, 0.7, 0.85)
CENTRES = tuple(round(0.25 + 0.025 * i, 3) for i in range(31))  # 0.25 .. 1.0
WIDTHS = tuple(round(0.04 * 1.12**i, 4) for i in range(17))  # 0.04 .. 0.24


def default_shapes() -> tuple[ArrivalShape, ...]:
    """The shipped family: a grid of logistic curves (centre x width) covering early to walk-up crowds.

    Each grid curve's prior weight is a smooth kernel around the named families (centre +-0.07,
    width x/ 1.5), plus a small floor so that no plausible shape is ruled out before the data speak;
    it is named after the family that contributes most to its weight.
    """
    shapes = []
    raw: list[tuple[float, float, str, float]] = []
    for c in CENTRES:
        for w in WIDTHS:
            contrib = {
                f: pf * math.exp(-0.5 * ((c - cf) / 0.07) ** 2 - 0.5 * (math.log(w / wf) / 0.4) ** 2)
                for f, (cf, wf, pf) in FAMILIES.items()
            }
            family = max(contrib, key=lambda f: contrib[f])
            raw.append((c, w, family, sum(contrib.values()) + 0.002))
    total = sum(r[3] for r in raw)
    grid_prior = 1.0 - STEADY_PRIOR - TWO_WAVE_PRIOR
    for c, w, family, weight in raw:
        shapes.append(logistic_shape(f"{family}:{c:.3f}/{w:.2f}", family, c, w, grid_prior * weight / total))
    grid = np.linspace(0.0, 1.0, 81)
    for p in STEADY_POWERS:
        share = tuple((grid**p).round(6))
        shapes.append(ArrivalShape(f"steady:{p}", "steady", tuple(grid), share, STEADY_PRIOR / len(STEADY_POWERS)))
    # a steady trickle from doors-open, or from a while after it (nobody comes in the first hour)
    first_waves = {
        f"trickle{u0}" if u0 else "trickle": np.clip((grid - u0) / (1 - u0), 0.0, 1.0) for u0 in (0.0, 0.2, 0.4)
    } | {
        f"{c}/{w}": _logistic(grid, c, w) for c in (0.2, 0.3, 0.4, 0.5) for w in (0.05, 0.1)
    }
    # the late wave starts sharply (a normal curve: people come for the act, not a little earlier)
    mixes = [
        (name, first, c, w, a)
        for name, first in first_waves.items()
        for c in (0.7, 0.8, 0.9, 0.97, 1.02)
        for w in (0.04, 0.07, 0.11)
        # a trickle can be a small part of the crowd; a first wave is a real part of it
        for a in (TRICKLE_ALPHAS if name.startswith("trickle") else FIRST_WAVE_ALPHAS)
    ]
    trickles = sum(1 for m in mixes if m[0].startswith("trickle"))
    for name, first, c, w, a in mixes:
        share = a * first + (1 - a) * _normal_wave(grid, c, w)
        prior = TWO_WAVE_PRIOR * (
            TRICKLE_SHARE / trickles if name.startswith("trickle") else (1 - TRICKLE_SHARE) / (len(mixes) - trickles)
        )
        shapes.append(ArrivalShape(f"two-wave:{name}+{c}/{w}x{a}", "two-wave", tuple(grid), tuple(share.round(6)), prior))
    return tuple(shapes)


def _normal_wave(u: np.ndarray, center: float, sd: float) -> np.ndarray:
    raw = ndtr((u - center) / sd)
    return (raw - raw[0]) / (raw[-1] - raw[0])


def _logistic(u: np.ndarray, center: float, width: float) -> np.ndarray:
    raw = 1.0 / (1.0 + np.exp(-(u - center) / width))
    return (raw - raw[0]) / (raw[-1] - raw[0])


ENTRY_DELAYS_MIN = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
ENTRY_DELAY_WEIGHTS = (0.25, 0.15, 0.15, 0.15, 0.1, 0.1, 0.1)
"""Security lines: people counted inside arrived at the gates this many minutes earlier (unknown per event;
the venue's curve says when people *arrive*). Whoever is still in line at the start is let in by then."""


def venue_shapes(curve: Sequence[tuple[float, float]], doors_min: float, prior: float) -> tuple[ArrivalShape, ...]:
    """The venue's configured curve (``(minutes to start, share)``) and neighbours of it sharing ``prior``,
    family ``usual``: time-warped (a little earlier or later throughout) and delayed by an entry line of
    ``ENTRY_DELAYS_MIN`` (without a queue camera a line outside is invisible: the counts inside lag the
    venue's usual pattern, which is a crowd stuck at security, not a small one)."""
    base = shape_from_minutes("venue", "usual", curve, doors_min, 1.0)
    u = np.array(base.u)
    span = -doors_min if doors_min < 0 else 240.0
    warps = (0.8, 0.9, 1.0, 1.12, 1.25)
    weights = np.array([0.15, 0.2, 0.3, 0.2, 0.15])
    grid = np.concatenate([np.linspace(0.0, 1.0, 161)[:-1], [0.9995, 1.0]])
    out = []
    for a, w in zip(warps, weights, strict=True):
        for delay, wd in zip(ENTRY_DELAYS_MIN, ENTRY_DELAY_WEIGHTS, strict=True):
            share = np.interp((grid - delay / span).clip(0.0, 1.0) ** a, u, base.share)
            share[grid <= delay / span] = 0.0
            share[-1] = 1.0
            name = f"venue^{a}" + (f"+{delay:g}min" if delay else "")
            out.append(ArrivalShape(name, "usual", tuple(grid), tuple(share), prior * float(w) * wd))
    return tuple(out)


def build_shapes(
    curve: Sequence[tuple[float, float]], doors_min: float, venue_weight: float = 0.5,
    history: Sequence[ArrivalShape] = (),
) -> tuple[ArrivalShape, ...]:
    """The family used for one event: shipped grid, the venue's curve, and the venue's past events
    (each past event gets the weight of the venue curve, the whole set at most half of the prior)."""
    hist_w = min(0.5, venue_weight * len(history))
    grid_w = 1.0 - venue_weight - hist_w
    out = [replace(sh, prior=sh.prior * grid_w) for sh in default_shapes()]
    out += venue_shapes(curve, doors_min, venue_weight)
    out += [replace(sh, prior=hist_w / len(history)) for sh in history]
    return tuple(out)


def shape_from_minutes(
    name: str, family: str, curve: Sequence[tuple[float, float]], doors_min: float, prior: float
) -> ArrivalShape:
    """A curve given as ``(minutes to start, share)`` points, smooth between them (monotone cubic, as crowds
    are). Its first point is taken as doors-open: an event whose doors open ``doors_min`` minutes before
    the start gets the same curve compressed or stretched to its own window."""
    first = min(m for m, _ in curve)
    span = -first if first < 0 else (-doors_min if doors_min < 0 else 1.0)
    u = np.array([1.0 + m / span for m, _ in curve])
    s = np.array([v for _, v in curve])
    keep = u > 0
    u, s = np.concatenate([[0.0], u[keep]]), np.concatenate([[0.0], s[keep]])
    if s[-1] <= 0 or len(u) < 2:
        u, s = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    s = np.maximum.accumulate(s) / max(s[-1], 1e-9)
    grid = np.linspace(0.0, 1.0, 161)
    smooth = PchipInterpolator(u, s)(np.clip(grid, u[0], u[-1])) if len(u) >= 3 else np.interp(grid, u, s)
    smooth = np.maximum.accumulate(np.clip(smooth, 0.0, 1.0))
    return ArrivalShape(name, family, tuple(grid), tuple(smooth / smooth[-1]), prior)


def shape_from_series(
    name: str, points: Iterable[tuple[float, float]], prior: float
) -> ArrivalShape | None:
    """A venue's past event as a shape: ``(u, attendance)`` points, the final being the value at u = 1."""
    pts = sorted((u, a) for u, a in points if 0.0 <= u <= 1.0)
    if len(pts) < 5 or pts[-1][0] < 0.97 or pts[-1][1] <= 0:
        return None
    u = np.array([0.0] + [p[0] for p in pts])
    a = np.maximum.accumulate(np.array([0.0] + [p[1] for p in pts]))
    return ArrivalShape(name, "history", tuple(u), tuple(a / a[-1]), prior)


class ShapeBank:
    """A family of shapes sampled on one uniform grid, so all of them are evaluated in one numpy call."""

    GRID = 400

    def __init__(self, shapes: Sequence[ArrivalShape]) -> None:
        self.shapes = tuple(shapes)
        grid = np.linspace(0.0, 1.0, self.GRID + 1)
        self.matrix = np.array([sh.at(grid) for sh in self.shapes])  # (K, GRID + 1)
        self.log_prior = np.log(np.maximum([sh.prior for sh in self.shapes], 1e-12))
        self.families = np.array([sh.family for sh in self.shapes])

    def __len__(self) -> int:
        return len(self.shapes)

    def at(self, u: np.ndarray | float) -> np.ndarray:
        """Shares of every shape at ``u`` (array): shape (K, len(u)); before doors 0, after the start 1."""
        x = np.clip(np.atleast_1d(np.asarray(u, dtype=float)), 0.0, 1.0) * self.GRID
        i = np.minimum(x.astype(int), self.GRID - 1)
        frac = x - i
        return self.matrix[:, i] * (1.0 - frac) + self.matrix[:, i + 1] * frac


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class CountError:
    """What is known about how the counts relate to the truth, for the current mix of cameras.

    ``factor``: multiply raw attendance by it to correct calibrated cameras' bias; ``rel_sd``: relative
    standard deviation left after that (calibrated spread); ``uncalibrated_share``: share of the counted
    attendance that comes from cameras without calibration.
    """

    factor: float = 1.0
    rel_sd: float = CALIBRATED_FLOOR
    uncalibrated_share: float = 1.0
    uncalibrated_cameras: int = 0


@dataclass(frozen=True)
class Registrations:
    plausible: int
    suspect_share: float
    show_up: float
    show_up_spread: float


@dataclass(frozen=True)
class ForecastParams:
    fit_sigma: float = 0.10
    """Log-residual a curve is allowed per fitted point (how far real crowds stray from smooth curves)."""
    future_sigma: float = 0.15
    """Relative doubt about the part of the crowd still to come, times (1 - share in)."""
    fit_step_min: float = 10.0
    """Series points used for the fit are at least this far apart (event time)."""
    min_counted: float = 0.005
    """Points with fewer than this share of capacity counted are not fitted (noise, staff)."""
    prior_base_weight: float = 0.8
    """Probability that honest-looking registrations carry information about the final."""
    rate_sigma: float = 0.25
    """Log-residual allowed for the people arriving between two series points (crowds come in bursts)."""
    smooth_min: float = 5.0
    """Counts are averaged over this many minutes before fitting (one noisy reading must not move the
    forecast: a queue count can jump by a tenth from one minute to the next)."""


@dataclass(frozen=True)
class FinalForecast:
    p05: float
    p50: float
    p95: float
    target: float | None
    p_reach_target: float | None
    expected_share_in: float
    """Posterior mean of the share of the final crowd already in (counted + queue)."""
    prior: float | None
    prior_weight: float
    """Posterior probability that the registrations prior applies (0 = ignored)."""
    families: dict[str, float] = field(default_factory=dict)
    """Posterior weight of each arrival family (early, usual, late, ...)."""
    fitted_points: int = 0
    method: str = "arrivals"
    reasons: tuple[str, ...] = ()
    registrations_expect_target: bool = False
    """Registrations that look honest say the target will be reached (whatever the arrivals say now)."""
    paused: bool = False
    """Arrivals are at less than half their busiest pace so far, with time left: they may resume."""
    accelerating: bool = False
    """People arrive faster and faster (last 20 minutes against the 20 before), and kept up until the start
    that could still reach the target: a late crowd, not a small one."""

    def as_dict(self) -> dict[str, object]:
        return {
            "p05": round(self.p05, 1),
            "p50": round(self.p50, 1),
            "p95": round(self.p95, 1),
            "target": None if self.target is None else round(self.target, 1),
            "p_reach_target": None if self.p_reach_target is None else round(self.p_reach_target, 4),
            "expected_share_in": round(self.expected_share_in, 4),
            "prior": None if self.prior is None else round(self.prior, 1),
            "prior_weight": round(self.prior_weight, 4),
            "families": {k: round(v, 4) for k, v in self.families.items()},
            "fitted_points": self.fitted_points,
            "method": self.method,
            "accelerating": self.accelerating,
            "paused": self.paused,
            "registrations_expect_target": self.registrations_expect_target,
            "reasons": list(self.reasons),
        }


# ------------------------------------------------------------------------------------------ forecast
def prior_weight(reg: Registrations, capacity: int, base: float) -> float:
    """How much honest information the registrations are likely to carry, before seeing arrivals.

    Falls smoothly with the suspect share and with how far the expected turnout exceeds what the venue
    (with room for an overflow event of the same size) could plausibly see.
    """
    if reg.plausible <= 0:
        return 0.0
    expected = reg.plausible * reg.show_up
    excess = min(1.0, (3.0 * capacity) / expected) if expected > 0 else 1.0
    return base * (1.0 - reg.suspect_share) ** 2 * excess


def forecast_final(
    *,
    u_now: float,
    series: Sequence[tuple[float, float]],
    counted_now: float,
    queue_now: float,
    capacity: int,
    target: float | None,
    count_error: CountError,
    shapes: ShapeBank | Sequence[ArrivalShape],
    registrations: Registrations | None,
    params: ForecastParams = ForecastParams(),
    minutes_per_u: float = 240.0,
) -> FinalForecast | None:
    """Distribution of the final attendance.

    ``series``: ``(u, counted incl. queue)`` points in time order (raw counts; only points with enough
    cameras live); ``counted_now``/``queue_now``: raw figures now. None when there is nothing to go on.
    """
    err = count_error
    # counting error: calibrated bias corrected by `factor`; what is left (calibrated spread, and the
    # unknown bias of uncalibrated cameras on their share of the count) is log-normal around it
    bias_sd = math.hypot(math.log1p(err.rel_sd), UNCALIBRATED_SIGMA * err.uncalibrated_share)
    log_factor = math.log(err.factor)

    floor_raw = counted_now + QUEUE_FLOOR_SHARE * queue_now
    series = smooth_series(series, params.smooth_min / max(minutes_per_u, 1e-6))
    pts = _fit_points(series, params, capacity, minutes_per_u)
    reasons: list[str] = []
    if err.uncalibrated_cameras:
        n = err.uncalibrated_cameras
        reasons.append(f"{n} camera{'s' if n != 1 else ''} uncalibrated: ±25 %")

    prior_mu = prior_sd = None
    w_prior = 0.0
    if registrations is not None and registrations.plausible > 0:
        prior_mu = math.log(registrations.plausible * registrations.show_up)
        prior_sd = math.log1p(registrations.show_up_spread)
        w_prior = prior_weight(registrations, capacity, params.prior_base_weight)

    if u_now >= 1.0:  # at or after the start: the final is what is counted
        comp_mu = np.array([math.log(max(counted_now, 1.0)) + log_factor])
        comp_sd, comp_w = np.array([bias_sd + 1e-6]), np.array([1.0])
        share_in, fams, post_prior, method = 1.0, {}, 0.0, "counted"
    elif len(pts) == 0:
        if prior_mu is None or prior_sd is None:
            return None
        # the prior as far as it is trusted, and "anything from 1 % to 3x the capacity" for the rest
        vague_mu, vague_sd = math.log(capacity * 0.55), math.log(300.0) / 3.3
        comp_mu, comp_sd = np.array([prior_mu, vague_mu]), np.array([prior_sd, vague_sd])
        comp_w = np.array([max(w_prior, 1e-6), 1.0 - w_prior])
        comp_w = comp_w / comp_w.sum()
        share_in, fams, post_prior, method = 0.0, {}, w_prior, "registrations"
        reasons.append("no arrivals counted yet: registrations only")
    else:
        bank = shapes if isinstance(shapes, ShapeBank) else ShapeBank(shapes)
        beta, logw, sigma, n_eff = _fit_shapes(bank, pts, u_now, params, capacity)
        logw = logw + final_size_log_prior(beta + log_factor, capacity)
        s_now = np.clip(bank.at(u_now)[:, 0], 1e-4, 1.0)
        # a shape that says most of the crowd should already be in must also explain today's count
        keep = logw > logw.max() - 9.0  # shapes 8,000x less likely than the best add nothing
        families = bank.families[keep]
        beta, s_now, logw = beta[keep], s_now[keep], logw[keep]
        w_shape = np.exp(logw - logw.max())
        w_shape /= w_shape.sum()
        # doubt about the crowd still to come: the share the shape says is missing, and never less than
        # half the time still left (a shape that says "all in" an hour early may be wrong)
        to_come = np.maximum(1.0 - s_now, 0.5 * max(0.0, 1.0 - u_now))
        sd_kj = np.sqrt(sigma**2 / n_eff + (params.future_sigma * to_come) ** 2 + bias_sd**2)
        mu_kj, w_kj = beta + log_factor, w_shape
        share_in = float((w_shape * s_now).sum())
        fams = {str(f): float(w_shape[families == f].sum()) for f in np.unique(families)}
        method = "arrivals"
        post_prior = 0.0
        if prior_mu is not None and prior_sd is not None and w_prior > 0:
            # two branches: the prior applies (conjugate update, weighted by agreement) or it does not
            log_range = math.log(100.0)  # flat alternative over two decades of possible finals
            var = sd_kj**2 + prior_sd**2
            agree = np.exp(-((mu_kj - prior_mu) ** 2) / (2 * var)) / np.sqrt(2 * math.pi * var)
            wa = w_kj * w_prior * agree
            wb = w_kj * (1.0 - w_prior) / log_range
            post_var = 1.0 / (1.0 / sd_kj**2 + 1.0 / prior_sd**2)
            post_mu = post_var * (mu_kj / sd_kj**2 + prior_mu / prior_sd**2)
            total = wa.sum() + wb.sum()
            post_prior = float(wa.sum() / total)
            comp_mu = np.concatenate([post_mu, mu_kj])
            comp_sd = np.concatenate([np.sqrt(post_var), sd_kj])
            comp_w = np.concatenate([wa, wb]) / total
            method = "arrivals+registrations" if post_prior >= 0.05 else "arrivals"
        else:
            comp_mu, comp_sd, comp_w = mu_kj, sd_kj, w_kj
        if fams.get("stalling", 0.0) >= 0.5:
            reasons.append("arrivals have slowed early")
        if len(pts) < 3:
            reasons.append("few counts so far: wide range")

    if registrations is not None and registrations.plausible > 0 and method != "registrations":
        if post_prior < 0.05:
            reasons.append("registrations look inflated: ignored" if w_prior < 0.3 else "registrations disagree with arrivals: ignored")
        else:
            reasons.append(f"registrations weigh in ({post_prior:.0%})")
    # honest-looking registrations that expect the target: arrivals alone must not overrule them with a cancel
    expected_by_registrations = bool(
        w_prior >= 0.5
        and target is not None
        and prior_mu is not None
        and prior_sd is not None
        and float(ndtr((prior_mu - math.log(target)) / prior_sd)) >= 0.5
    )
    if expected_by_registrations and post_prior < 0.05:
        reasons.append("honest registrations expect the target: no cancel on arrivals alone")
    if queue_now > 0:
        reasons.append(f"{round(queue_now):,} people queueing outside")

    surge = surge_reach(series, minutes_per_u, capacity) if u_now < 1.0 else None
    # an accelerating crowd that could still reach the target, counted at the high end of the cameras' error
    accelerating = surge is not None and (
        target is None or surge * err.factor * math.exp(2.0 * bias_sd) >= target
    )
    if surge is not None:
        reasons.insert(0, "arrivals still accelerating: a late crowd")
    paused = u_now < 0.8 and has_paused(series, minutes_per_u, capacity)
    if paused:
        reasons.insert(0, "arrivals have slowed or paused: they may resume")
    floor = floor_raw * err.factor * math.exp(-2.0 * bias_sd)  # surely in, even if cameras over-count
    dist = _Mixture(comp_mu, comp_sd, comp_w, np.full(len(comp_mu), floor))
    # attendance cannot exceed what the venue holds (more demand is what the overflow event is for)
    p05, p50, p95 = (min(q, float(capacity)) for q in dist.quantiles((0.05, 0.5, 0.95)))
    p_reach = None if target is None else float(1.0 - dist.cdf_below(target))
    return FinalForecast(
        p05=p05,
        p50=p50,
        p95=p95,
        target=target,
        p_reach_target=p_reach,
        expected_share_in=share_in,
        prior=None if prior_mu is None else math.exp(prior_mu),
        prior_weight=post_prior,
        families=dict(sorted(fams.items(), key=lambda kv: -kv[1])),
        fitted_points=len(pts),
        method=method,
        reasons=tuple(reasons),
        accelerating=accelerating,
        paused=paused,
        registrations_expect_target=expected_by_registrations,
    )


def final_size_log_prior(log_final: np.ndarray, capacity: int) -> np.ndarray:
    """Log prior of a final (demand) ``exp(log_final)``: flat up to ``OVER_CAPACITY_FREE`` x capacity,
    log-normal fall-off beyond (venues are sized for their crowds: 3x capacity is rare, 10x absurd).
    A thin trickle read as "5 % of a crowd ten times the venue" must not carry weight."""
    excess = np.maximum(log_final - math.log(OVER_CAPACITY_FREE * max(capacity, 1)), 0.0)
    return -0.5 * (excess / OVER_CAPACITY_SD) ** 2


def smooth_series(series: Sequence[tuple[float, float]], window_u: float) -> list[tuple[float, float]]:
    """Each point replaced by the mean of the points in the ``window_u`` before it (itself included),
    placed at their mean time: a trailing moving average that does not lag a steady trend."""
    if len(series) < 2 or window_u <= 0:
        return list(series)
    u = np.array([p[0] for p in series])
    a = np.array([p[1] for p in series])
    cu, ca = np.concatenate([[0.0], np.cumsum(u)]), np.concatenate([[0.0], np.cumsum(a)])
    first = np.searchsorted(u, u - window_u + 1e-12, side="left")
    last = np.arange(1, len(u) + 1)
    n = last - first
    return list(zip(((cu[last] - cu[first]) / n).tolist(), ((ca[last] - ca[first]) / n).tolist(), strict=True))


def has_paused(
    series: Sequence[tuple[float, float]], minutes_per_u: float, capacity: int, recent_min: float = 10.0
) -> bool:
    """Fewer than half as many people arrived in the last ``recent_min`` minutes as in the busiest
    ``recent_min`` so far (busy: above counting noise): the crowd may be done, or between two waves."""
    if len(series) < 3:
        return False
    u = np.array([p[0] for p in series])
    a = np.array([p[1] for p in series])
    step = recent_min / max(minutes_per_u, 1e-6)
    now = u[-1]
    if now - u[0] < 2 * step - 1e-9:
        return False
    marks = np.arange(now, u[0] - 1e-12, -step)[::-1]  # every recent_min back from now
    arrivals = np.diff(np.interp(marks, u, a))
    busiest = float(arrivals[:-1].max())
    return bool(busiest > 0.005 * capacity and arrivals[-1] < busiest / 2)


def surge_reach(
    series: Sequence[tuple[float, float]], minutes_per_u: float, capacity: int, window_min: float = 20.0
) -> float | None:
    """If more people arrived in the last ``window_min`` minutes than in the ``window_min`` before (by a
    margin above counting noise), the count reached by the start should arrivals keep speeding up at that
    pace (at most x1.5 per window); None when arrivals are not accelerating. Raw counts."""
    if len(series) < 3:
        return None
    u = np.array([p[0] for p in series])
    a = np.array([p[1] for p in series])
    w = window_min / max(minutes_per_u, 1e-6)
    now = u[-1]
    if now - u[0] < 2 * w - 1e-9 or now >= 1.0:
        return None
    a1, a2 = np.interp([now - 2 * w, now - w], u, a)
    recent, before = a[-1] - a2, a2 - a1
    if recent <= 1.15 * before + 0.005 * capacity:
        return None
    growth = min(recent / max(before, 1e-9), 1.5)
    windows = (1.0 - now) / w
    whole = int(windows)
    more = sum(recent * growth**k for k in range(1, whole + 1)) + recent * growth ** (whole + 1) * (windows - whole)
    return float(a[-1] + more)


def _fit_shapes(
    bank: ShapeBank, pts: list[tuple[float, float]], u_now: float, params: ForecastParams, capacity: int
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Weigh every shape by how well it explains the *arrivals* between series points.

    Each shape is anchored at the latest count (raw final ``beta = log(count / share_now)``) and predicts
    the people arriving in each interval; log-residuals of those increments (floored at a noise level, so
    a pause is a small number, not minus infinity) are nearly independent, unlike the levels. Returns
    (beta, log weight, residual sigma, points).
    """
    u = np.array([p[0] for p in pts])
    counts = np.array([p[1] for p in pts])
    s_mat = np.clip(bank.at(u), 1e-5, 1.0)  # (K, n)
    beta = np.log(counts[-1]) - np.log(s_mat[:, -1])
    n = len(pts)
    if n < 2:
        return beta, bank.log_prior.copy(), params.rate_sigma, 1.0
    floor = max(0.002 * capacity, 0.01 * counts[-1], 5.0)
    inc = np.maximum(np.diff(counts), floor)
    pred = np.maximum(np.exp(beta)[:, None] * np.diff(s_mat, axis=1), floor)
    resid = np.log(inc)[None, :] - np.log(pred)
    rss = (resid**2).sum(axis=1)
    # when even the best shape explains the arrivals badly, no shape deserves confidence
    sigma = max(params.rate_sigma, math.sqrt(float(rss.min()) / max(n - 2.0, 1.0)))
    return beta, bank.log_prior - rss / (2 * sigma**2), sigma * params.fit_sigma / params.rate_sigma, float(n)


def _fit_points(
    series: Sequence[tuple[float, float]], params: ForecastParams, capacity: int, minutes_per_u: float
) -> list[tuple[float, float]]:
    """Series points spaced at least ``fit_step_min`` apart, with enough people counted to be signal."""
    floor = max(20.0, params.min_counted * capacity)
    step_u = params.fit_step_min / max(minutes_per_u, 1e-6)
    out: list[tuple[float, float]] = []
    for u, a in reversed(series):  # keep the newest point, then step back
        if a < floor or u < 0:
            continue
        if not out or out[-1][0] - u >= step_u - 1e-9:
            out.append((u, a))
    return out[::-1]


@dataclass(frozen=True)
class _Mixture:
    """Mixture of log-normals, each floored at its own value (final = max(X, floor))."""

    mu: np.ndarray
    sd: np.ndarray
    w: np.ndarray
    floor: np.ndarray

    def cdf_below(self, x: float) -> float:
        """P(final < x)."""
        if x <= 0:
            return 0.0
        z = (math.log(x) - self.mu) / self.sd
        p = np.where(x <= self.floor, 0.0, ndtr(z))
        return float((self.w * p).sum())

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        lo = float(np.min(np.maximum(np.exp(self.mu - 5 * self.sd), self.floor)))
        hi = float(np.max(np.maximum(np.exp(self.mu + 5 * self.sd), self.floor))) + 1.0
        grid = np.exp(np.linspace(math.log(max(lo, 1.0)), math.log(max(hi, 2.0)), 160))
        z = (np.log(grid)[:, None] - self.mu[None, :]) / self.sd[None, :]
        cdf = (np.where(grid[:, None] <= self.floor[None, :], 0.0, ndtr(z)) * self.w[None, :]).sum(axis=1)
        cdf = np.maximum.accumulate(cdf)
        return [float(np.interp(q, cdf, grid)) for q in qs]
