"""A seeded bank of simulated events, replayed through the server's real code (`turnout backtest`).

The generator is deliberately *not* the forecast's model: arrivals come from gamma curves, piecewise
rates, two waves, stalls that resume, and walk-up crowds; the venue fills to its capacity; every camera has
its own bias (0.7-1.1) and noise, most but not all publish a calibration measured with error; cameras fall
silent; queues form outside; registrations range from honest to Tulsa-like. Each event becomes a venue
file and a recording exactly as `turnout replay` reads them, and is replayed by `server.replay`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from server.replay import Recorded, RegistrationsFigures, ReplayEngine
from server.settings import Settings

START = datetime(2026, 6, 20, 23, 0, tzinfo=UTC)
SHAPES = ("usual", "gamma", "late_surge", "stall", "two_waves", "walk_up", "piecewise")
SHAPE_MIX = (0.35, 0.15, 0.15, 0.1, 0.1, 0.1, 0.05)
"""How often each arrival shape occurs in the bank: mostly crowds near the venue's usual pattern (each
with its own timing), a third late surges, stalls, two waves and walk-ups, a few arbitrary ones."""
USUAL_ANCHORS = ((0.0, 0.0), (0.25, 0.08), (0.375, 0.18), (0.5, 0.33), (0.625, 0.5), (0.75, 0.68), (0.875, 0.86), (0.96, 0.96), (1.0, 1.0))


@dataclass(frozen=True)
class SimEvent:
    """One simulated event: what really happened, and what the cameras said."""

    index: int
    capacity: int
    doors_min: int
    deadline_min: int
    threshold: float
    shape: str
    demand: int
    """People who want in by the start (may exceed capacity: the venue then fills)."""
    final: int
    """Attendance at the start (the truth the decision is judged on)."""
    registrations: str
    calibrated: bool
    outage: bool
    queue_camera: bool

    @property
    def target(self) -> float:
        return self.capacity * self.threshold


@dataclass
class Outcome:
    event: SimEvent
    cancelled_at: list[float] = field(default_factory=list)
    """Minutes to start at which the state was cancel_overflow (every tick)."""
    needed_by_deadline: bool = False
    cancelled_by_deadline: bool = False
    final_state: str = "undecided"
    decided_min: float | None = None
    """Minutes before the start when the state at the deadline was first reached."""
    p50_at: dict[int, float] = field(default_factory=dict)
    band_at: dict[int, tuple[float, float]] = field(default_factory=dict)
    alerts: int = 0


# ------------------------------------------------------------------------------------------ arrivals
def arrival_curve(kind: str, rng: np.random.Generator, minutes: np.ndarray, doors: float) -> np.ndarray:
    """Cumulative share of the crowd in at each ``minutes`` (to start; doors at ``doors`` < 0), 1 at 0."""
    t = np.clip((minutes - doors) / -doors, 0.0, 1.0)  # 0 at doors, 1 at the start
    grid = np.linspace(0.0, 1.0, 401)
    if kind == "usual":  # the venue's usual pattern, each event earlier or later and more or less spread
        warp = rng.uniform(0.75, 1.35)
        xs = np.array([a for a, _ in USUAL_ANCHORS])
        ys = np.array([b for _, b in USUAL_ANCHORS])
        cum = np.interp(grid**warp, xs, ys) + rng.normal(0, 0.01, grid.size).cumsum() * 0.05
        cum = np.maximum.accumulate(np.clip(cum, 0, None))
        return np.interp(t, grid, cum / cum[-1])
    if kind == "late_surge":
        mode = rng.uniform(0.75, 0.92)
        rate = np.exp(-0.5 * ((grid - mode) / rng.uniform(0.07, 0.14)) ** 2) + rng.uniform(0.02, 0.2)
    elif kind == "gamma":
        k, mode = rng.uniform(2.0, 7.0), rng.uniform(0.45, 0.85)
        theta = mode / (k - 1)
        rate = grid ** (k - 1) * np.exp(-grid / theta)
    elif kind == "piecewise":
        knots = np.sort(rng.uniform(0, 1, 3))
        xs = np.concatenate([[0.0], knots, [1.0]])
        ys = rng.uniform(0.1, 1.0, len(xs))
        ys[0] = rng.uniform(0.0, 0.3)
        rate = np.interp(grid, xs, ys)
    elif kind == "two_waves":
        a, b = rng.uniform(0.25, 0.5), rng.uniform(0.7, 0.95)
        wa, wb = rng.uniform(0.06, 0.15), rng.uniform(0.04, 0.1)
        share = rng.uniform(0.2, 0.6)
        rate = share * np.exp(-0.5 * ((grid - a) / wa) ** 2) / wa + (1 - share) * np.exp(-0.5 * ((grid - b) / wb) ** 2) / wb
    elif kind == "stall":
        mode = rng.uniform(0.5, 0.8)
        rate = np.exp(-0.5 * ((grid - mode) / 0.18) ** 2)
        s0 = rng.uniform(0.3, 0.6)
        s1 = s0 + rng.uniform(0.08, 0.18)
        rate = np.where((grid > s0) & (grid < s1), rate * 0.1, rate)  # security line stalls, then resumes
        rate = np.where(grid >= s1, rate * 1.4, rate)
    elif kind == "walk_up":
        mode = rng.uniform(0.85, 1.0)
        rate = np.exp(-0.5 * ((grid - mode) / rng.uniform(0.06, 0.14)) ** 2) + rng.uniform(0.0, 0.15)
    else:
        raise ValueError(f"unknown arrival shape {kind!r}")
    cum = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2)])
    cum = cum / cum[-1]
    return np.interp(t, grid, cum)


# ----------------------------------------------------------------------------------------- generator
@dataclass(frozen=True)
class Truth:
    """What really happens at one simulated event, minute by minute (before any camera sees it)."""

    capacity: int
    doors_min: int
    deadline_min: int
    threshold: float
    shape: str
    demand: int
    n_cams: int
    seats: np.ndarray
    """Seats per section (section j is seen by camera j mod n_cams)."""
    calibrated: bool
    outage: bool
    queue_camera: bool
    bias: np.ndarray
    """Each camera's counting bias (what it reports / what is there)."""
    fill_pref: np.ndarray
    minutes: np.ndarray
    """Minutes to the start, one per minute from 10 minutes before doors-open to the start."""
    inside: np.ndarray
    queue: np.ndarray
    """People queueing outside (zero without a queue camera)."""
    registrations: str

    @property
    def final(self) -> int:
        return round(float(self.inside[-1]))


def simulate(index: int, seed: int) -> tuple[Truth, np.random.Generator]:
    """Event ``index`` of the bank ``seed``: what happens, and the generator to draw what cameras see."""
    rng = np.random.default_rng([seed, index])
    capacity = int(rng.choice([4_000, 8_000, 19_000]))
    doors = -int(rng.choice([120, 180, 240]))
    deadline = -int(rng.choice([45, 60, 75]))
    shape = str(rng.choice(SHAPES, p=SHAPE_MIX))
    demand = int(capacity * rng.uniform(0.1, 1.1))
    n_cams = int(rng.integers(4, 7))
    n_sections = n_cams * 3
    seats = np.full(n_sections, capacity // n_sections)
    seats[: capacity - seats.sum()] += 1
    calibrated = bool(rng.random() < 0.8)
    outage = bool(rng.random() < 0.25)
    queue_camera = bool(rng.random() < 0.5)
    bias = rng.uniform(0.7, 1.1, n_cams)
    fill_pref = rng.uniform(0.6, 1.4, n_sections)
    minutes = np.arange(doors - 10, 1, 1.0)
    share = arrival_curve(shape, rng, minutes, doors)
    wanting = demand * share  # people who have arrived at the gates (or would have)
    wait = rng.uniform(5, 25)
    inside = np.minimum(demand * arrival_curve_shifted(share, minutes, wait), capacity)
    queue = np.maximum(wanting - inside, 0) if queue_camera else np.zeros_like(wanting)
    reg_kind = str(rng.choice(["honest", "none", "inflated", "tulsa"], p=[0.4, 0.2, 0.2, 0.2]))
    truth = Truth(
        capacity, doors, deadline, 0.9, shape, demand, n_cams, seats, calibrated, outage, queue_camera, bias,
        fill_pref, minutes, inside, queue, reg_kind,
    )
    return truth, rng


def generate(index: int, seed: int, workdir: Path) -> tuple[SimEvent, Path, list[Recorded]]:
    """Event ``index`` of the bank ``seed``: its truth, a venue file and a recording."""
    t, rng = simulate(index, seed)
    capacity, doors, deadline, threshold, n_cams, seats = t.capacity, t.doors_min, t.deadline_min, t.threshold, t.n_cams, t.seats
    n_sections = len(seats)
    venue = f"bt{index}"
    cams = [f"cam{i}" for i in range(n_cams)]
    sections = [{"id": f"s{j}", "name": f"S{j}", "seats": int(seats[j]), "cameras": [cams[j % n_cams]]} for j in range(n_sections)]
    if t.queue_camera:
        cams.append("plaza")
        sections.append({"id": "gate", "name": "Gate queue", "seats": 0, "cameras": ["plaza"], "kind": "queue"})
    setup = {
        "venues": [{"id": venue, "name": f"Backtest {index}", "cameras": [{"id": c} for c in cams], "sections": sections}],
        "events": [
            {
                "id": "ev",
                "venue": venue,
                "name": f"Event {index}",
                "doors_open": (START + timedelta(minutes=doors)).isoformat(),
                "start": START.isoformat(),
                "capacity": capacity,
                "overflow": {
                    "name": "Overflow stage",
                    "capacity": capacity,
                    "deadline": (START + timedelta(minutes=deadline)).isoformat(),
                    "threshold": threshold,
                },
            }
        ],
    }
    path = workdir / f"venue-{index}.yaml"
    path.write_text(yaml.safe_dump(setup, sort_keys=False))

    minutes, inside, queue, bias, calibrated = t.minutes, t.inside, t.queue, t.bias, t.calibrated

    silent: dict[str, tuple[float, float]] = {}
    if t.outage:
        for cam in rng.choice(cams[:n_cams], size=int(rng.integers(1, 3)), replace=False):
            t0 = float(rng.uniform(doors + 30, -40))
            silent[str(cam)] = (t0, t0 + float(rng.uniform(10, 30)))

    msgs: list[Recorded] = []
    t0 = START + timedelta(minutes=doors - 10)
    for i, cam in enumerate(cams):
        status: dict[str, Any] = {"v": 1, "venue": venue, "camera": cam, "state": "online", "ts": _iso(t0)}
        if calibrated and cam != "plaza":
            measured = float(bias[i] * (1 + rng.normal(0, 0.04)))
            status["calibration"] = {"bias": round(measured, 3), "spread": round(float(rng.uniform(0.05, 0.1)), 3), "frames": 20}
        msgs.append(Recorded(t0, f"turnout/v1/{venue}/{cam}/status", json.dumps(status).encode(), True))
    seq = dict.fromkeys(cams, 0)
    for k, m in enumerate(minutes):
        ts = START + timedelta(minutes=float(m))
        in_sections = spread_over_sections(inside[k], seats, t.fill_pref)
        for i, cam in enumerate(cams):
            if cam in silent and silent[cam][0] <= m < silent[cam][1]:
                continue
            counts = []
            if cam == "plaza":
                q = int(max(0, round(queue[k] * rng.uniform(0.8, 1.05))))
                counts.append({"id": "gate", "seats": 0, "occupied": 0, "people": q})
            else:
                for j in range(i, n_sections, n_cams):
                    seen = round(float(in_sections[j] * bias[i] * (1 + rng.normal(0, 0.03))))
                    seen = min(max(seen, 0), int(seats[j]))
                    counts.append({"id": f"s{j}", "seats": int(seats[j]), "occupied": seen, "people": seen})
            seq[cam] += 1
            payload = {
                "v": 1,
                "venue": venue,
                "camera": cam,
                "seq": seq[cam],
                "ts": _iso(ts),
                "sections": counts,
                "model": "backtest",
                "processing": {"fps": 1.0, "latency_ms": 100.0, "frames": seq[cam]},
            }
            msgs.append(Recorded(ts, f"turnout/v1/{venue}/{cam}/occupancy", json.dumps(payload).encode()))
    event = SimEvent(
        index, capacity, doors, deadline, threshold, t.shape, t.demand, t.final, t.registrations, calibrated, t.outage,
        t.queue_camera,
    )
    return event, path, msgs


def arrival_curve_shifted(share: np.ndarray, minutes: np.ndarray, wait: float) -> np.ndarray:
    """Share *inside*: the gate arrivals delayed by ``wait`` minutes (the queue), all in by the start."""
    delayed = np.interp(minutes - wait, minutes, share, left=0.0)
    return np.where(minutes >= -1, share, delayed)


def registrations_for(event: SimEvent, rng: np.random.Generator) -> RegistrationsFigures | None:
    d = event.demand
    if event.registrations == "none":
        return None
    if event.registrations == "honest":
        total = int(d / 0.6 * rng.uniform(0.75, 1.3))
        return RegistrationsFigures(total, int(total * rng.uniform(0.0, 0.12)))
    if event.registrations == "inflated":
        total = int(d / 0.6 * rng.uniform(1.5, 3.0))
        return RegistrationsFigures(total, int(total * rng.uniform(0.1, 0.35)))
    total = int(d * rng.uniform(20, 200))
    return RegistrationsFigures(total, int(total * rng.uniform(0.4, 0.7)))


def spread_over_sections(total: float, seats: np.ndarray, pref: np.ndarray) -> np.ndarray:
    """``total`` people over sections of ``seats``, each filling in proportion to its ``pref`` x seats."""
    want = pref * seats
    out = np.minimum(total * want / want.sum(), seats)
    for _ in range(3):  # what does not fit in full sections goes to the others
        rest = total - out.sum()
        free = seats - out
        if rest <= 0.5 or free.sum() <= 0:
            break
        out = out + np.minimum(free, rest * free / free.sum())
    return out


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------- running
def run_event(engine: ReplayEngine, index: int, seed: int, workdir: Path) -> Outcome:
    event, setup, msgs = generate(index, seed, workdir)
    reg = registrations_for(event, np.random.default_rng([seed, index, 1]))
    out = Outcome(event)
    deadline = float(event.deadline_min)
    states: list[tuple[float, str]] = []

    def emit(line: dict[str, Any]) -> None:
        if "alert" in line:
            out.alerts += 1
            return
        m = (datetime.fromisoformat(line["ts"]) - START).total_seconds() / 60.0
        states.append((m, line["decision"] or "undecided"))
        fc = line["forecast"]
        for mark in (-120, -90, -60):
            if fc is not None and abs(m - mark) < 0.5:
                out.p50_at[mark] = fc["p50"]
                out.band_at[mark] = (fc["p05"], fc["p95"])

    engine.run(setup, msgs, emit, event="ev", registrations_figures=reg, tick_s=60.0)
    setup.unlink(missing_ok=True)
    out.cancelled_at = [m for m, s in states if s == "cancel_overflow"]
    at_deadline = [s for m, s in states if m <= deadline]
    out.final_state = at_deadline[-1] if at_deadline else "undecided"
    out.needed_by_deadline = out.final_state == "overflow_needed"
    out.cancelled_by_deadline = out.final_state == "cancel_overflow"
    if out.final_state != "undecided":
        run_start: float | None = None  # start of the run of the final state that reaches the deadline
        for m, s in states:
            if m > deadline:
                break
            run_start = (m if run_start is None else run_start) if s == out.final_state else None
        out.decided_min = -run_start if run_start is not None else None
    return out


def _worker(args: tuple[list[int], int, dict[str, Any]]) -> list[Outcome]:
    indices, seed, overrides = args
    with tempfile.TemporaryDirectory(prefix="turnout-bt-") as tmp:
        settings = Settings(database_url="sqlite:///unused.db", **overrides)
        engine = ReplayEngine(settings, Path(tmp))
        return [run_event(engine, i, seed, Path(tmp)) for i in indices]


def run_bank(events: int, seed: int, jobs: int = 1, overrides: dict[str, Any] | None = None) -> list[Outcome]:
    overrides = {"series_interval_s": 600.0, **(overrides or {})}
    chunks = [list(range(i, events, jobs)) for i in range(jobs)]
    if jobs <= 1:
        return _worker((chunks[0], seed, overrides))
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(_worker, [(c, seed, overrides) for c in chunks]))
    return sorted((o for r in results for o in r), key=lambda o: o.event.index)


# ------------------------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class Summary:
    events: int
    wrong_cancels: int
    low_events: int
    """Finals at most 60 % of the target."""
    cancelled_low: int
    high_events: int
    """Finals at least 105 % of the target."""
    needed_high: int
    missed_cancels: int
    median_lead_min: float | None
    forecast_error: dict[int, float]
    interval_coverage_90: float | None
    undecided_at_deadline: int

    @property
    def cancel_rate_low(self) -> float:
        return self.cancelled_low / self.low_events if self.low_events else float("nan")

    @property
    def needed_rate_high(self) -> float:
        return self.needed_high / self.high_events if self.high_events else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cancel_rate_low": self.cancel_rate_low, "needed_rate_high": self.needed_rate_high}


def summarise(outcomes: list[Outcome]) -> Summary:
    wrong = [o for o in outcomes if o.event.final >= o.event.target and o.cancelled_at]
    low = [o for o in outcomes if o.event.final <= 0.6 * o.event.target]
    high = [o for o in outcomes if o.event.final >= 1.05 * o.event.target]
    leads = [o.decided_min for o in outcomes if o.decided_min is not None]
    errors: dict[int, float] = {}
    for mark in (-120, -90, -60):
        e = [abs(o.p50_at[mark] - o.event.final) / o.event.final for o in outcomes if mark in o.p50_at and o.event.final > 0]
        errors[mark] = statistics.median(e) if e else float("nan")
    inside = [lo <= o.event.final <= hi for o in outcomes if -90 in o.band_at for lo, hi in [o.band_at[-90]]]
    return Summary(
        events=len(outcomes),
        wrong_cancels=len(wrong),
        low_events=len(low),
        cancelled_low=sum(o.cancelled_by_deadline for o in low),
        high_events=len(high),
        needed_high=sum(o.needed_by_deadline for o in high),
        missed_cancels=sum(not o.cancelled_by_deadline for o in low),
        median_lead_min=statistics.median(leads) if leads else None,
        forecast_error=errors,
        interval_coverage_90=sum(inside) / len(inside) if inside else None,
        undecided_at_deadline=sum(o.final_state == "undecided" for o in outcomes),
    )


def report(summary: Summary, outcomes: list[Outcome], verbose: bool = False) -> Iterator[str]:
    s = summary
    yield f"events: {s.events}"
    yield f"wrong cancels (final >= target, cancelled at any moment): {s.wrong_cancels}   [target 0]"
    yield (
        f"cancel by the deadline, final <= 60 % of target: {s.cancelled_low}/{s.low_events} = {s.cancel_rate_low:.1%}"
        "   [target >= 90 %]"
    )
    yield (
        f"overflow_needed by the deadline, final >= 105 % of target: {s.needed_high}/{s.high_events} = "
        f"{s.needed_rate_high:.1%}   [target >= 85 %]"
    )
    yield f"missed cancels: {s.missed_cancels}; undecided at the deadline (organizer decides): {s.undecided_at_deadline}"
    lead = "n/a" if s.median_lead_min is None else f"{s.median_lead_min:.0f} min before the start"
    yield f"median time of the decision: {lead}"
    for mark, err in s.forecast_error.items():
        yield f"median |p50 - final| / final at T{mark}: {err:.1%}"
    cov = "n/a" if s.interval_coverage_90 is None else f"{s.interval_coverage_90:.1%}"
    yield f"p05-p95 holds the final at T-90: {cov}   [target 85-95 %]"
    yield "by arrival shape: events | cancelled by the deadline (final <= 60 %) | needed (final >= 105 %) | wrong cancels"
    for shape in SHAPES:
        group = [o for o in outcomes if o.event.shape == shape]
        if not group:
            continue
        low = [o for o in group if o.event.final <= 0.6 * o.event.target]
        high = [o for o in group if o.event.final >= 1.05 * o.event.target]
        wrong = sum(1 for o in group if o.event.final >= o.event.target and o.cancelled_at)
        yield (
            f"  {shape:11s} {len(group):5d} | {sum(o.cancelled_by_deadline for o in low):4d}/{len(low):<4d}"
            f" | {sum(o.needed_by_deadline for o in high):4d}/{len(high):<4d} | {wrong}"
        )
    for o in outcomes:
        if o.event.final >= o.event.target and o.cancelled_at:
            yield f"  WRONG CANCEL: {o.event}"
    if verbose:
        for o in outcomes:
            if o.event.final <= 0.6 * o.event.target and not o.cancelled_by_deadline:
                yield f"  missed cancel: {o.event}"


def meets_targets(s: Summary) -> bool:
    """The targets of docs/benchmarks.md (issue 7)."""
    cov = s.interval_coverage_90
    return (
        s.wrong_cancels == 0
        and (s.low_events == 0 or s.cancel_rate_low >= 0.9)
        and (s.high_events == 0 or s.needed_rate_high >= 0.85)
        and cov is not None
        and 0.85 <= cov <= 0.95
    )
