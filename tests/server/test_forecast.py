"""The final-attendance distribution (server.forecast) and the decision by risk (server.decision)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from server.decision import DecisionMemory, DecisionRules, DecisionState, propose, step
from server.forecast import (
    CountError,
    FinalForecast,
    Registrations,
    ShapeBank,
    build_shapes,
    forecast_final,
    prior_weight,
    shape_from_series,
)
from server.settings import DEFAULT_ARRIVAL_CURVE

CAP, TARGET = 19_000, 17_100
BANK = ShapeBank(build_shapes(DEFAULT_ARRIVAL_CURVE, -240))
CALIBRATED = CountError(1.0, 0.04, 0.0, 0)
START = datetime(2026, 6, 20, 23, 0, tzinfo=UTC)


def fc(series: list[tuple[float, float]], *, err: CountError = CALIBRATED, queue: float = 0.0,
       reg: Registrations | None = None, u_now: float | None = None) -> FinalForecast:
    u = series[-1][0] if u_now is None else u_now
    out = forecast_final(
        u_now=u, series=series, counted_now=series[-1][1] if series else 0.0, queue_now=queue, capacity=CAP,
        target=TARGET, count_error=err, shapes=BANK, registrations=reg,
    )
    assert out is not None
    return out


def minutes_series(fn, until: int) -> list[tuple[float, float]]:
    return [((m + 240) / 240, float(fn(m))) for m in range(-240, until + 1) if fn(m) > 0]


def test_same_count_now_but_accelerating_is_a_bigger_final_than_slowing() -> None:
    # both have 5,000 in at T-100; one is still accelerating (a late crowd), the other has levelled off
    accelerating = minutes_series(lambda m: 5000 * np.exp((m + 100) / 30), -100)
    slowing = minutes_series(lambda m: 5000 * (1 - np.exp(-(m + 240) / 30)) / (1 - np.exp(-140 / 30)), -100)
    late, flat = fc(accelerating), fc(slowing)
    assert late.p50 > 1.5 * flat.p50
    assert late.p_reach_target > 2.5 * flat.p_reach_target and flat.p50 < 10_000 < late.p50
    def lateish(f: FinalForecast) -> float:
        return f.families.get("late", 0) + f.families.get("walk-up", 0)

    # explained by late curves (the venue's usual curve, stretched late, takes the rest), the levelled one is not
    assert lateish(late) > 0.35 and lateish(flat) < 0.05, (late.families, flat.families)
    assert any("accelerating" in r for r in late.reasons)


def test_at_the_start_the_final_is_the_count_corrected_by_calibration() -> None:
    series = minutes_series(lambda m: 8000 * (m + 240) / 240, 0)
    exact = fc(series, err=CountError(1 / 0.8, 0.04, 0.0, 0))  # cameras see 80 %: counts divided by 0.8
    assert exact.p50 == pytest.approx(8000 / 0.8, rel=0.01)
    assert exact.p05 < exact.p50 < exact.p95 and (exact.p95 - exact.p05) / exact.p50 < 0.2
    unknown = fc(series, err=CountError(1.0, 0.03, 1.0, 5))  # uncalibrated: +-25 % either way
    assert (unknown.p95 - unknown.p05) > 2.5 * (exact.p95 - exact.p05)
    assert unknown.p05 < 8000 * 0.75 < 8000 * 1.25 < unknown.p95
    assert any("uncalibrated" in r for r in unknown.reasons)


def test_a_queue_outside_raises_the_forecast_and_its_floor() -> None:
    series = minutes_series(lambda m: 6000 / (1 + np.exp(-(m + 110) / 25)), -90)  # a usual-looking crowd
    without = fc(series)
    with_queue = fc([(u, a + 1500 * u) for u, a in series], queue=1500.0)
    # most of the queue is added (not all: without a queue camera the forecast already allows a line outside)
    assert with_queue.p50 > without.p50 + 0.6 * 1500 and with_queue.p05 > without.p05 + 1000
    assert with_queue.p05 >= (series[-1][1] + 0.9 * 1500) * 0.9
    assert any("queueing" in r for r in with_queue.reasons)


def test_registrations_weigh_less_as_they_look_inflated_and_never_switch() -> None:
    shares = np.linspace(0.0, 0.9, 91)
    weights = [prior_weight(Registrations(30_000, float(s), 0.6, 0.5), CAP, 0.8) for s in shares]
    assert all(a >= b for a, b in pairwise(weights))
    assert weights[0] > 0.7 and weights[-1] < 0.01
    assert max(a - b for a, b in pairwise(weights)) < 0.03  # smooth, no switch
    # a million registrations for 19,000 seats count for almost nothing even before any are suspect
    assert prior_weight(Registrations(1_000_000, 0.0, 0.6, 0.5), CAP, 0.8) < 0.1
    # and the forecast moves smoothly with them: no minute-to-minute jumps from a prior turning on and off
    series = minutes_series(lambda m: 9000 * max(m + 210, 0) / 120, -90)
    counts = list(range(10_000, 60_001, 2_500))
    runs = [fc(series, reg=Registrations(n, 0.1, 0.6, 0.5)) for n in counts]
    for (n0, a), (n1, b) in pairwise(zip(counts, runs, strict=True)):
        # the forecast follows the registrations less than one for one, and the weight drifts, never jumps
        assert abs(np.log(b.p50 / a.p50)) < 0.6 * np.log(n1 / n0)
        assert abs(b.prior_weight - a.prior_weight) < 0.2


def test_registrations_that_agree_narrow_the_band_and_ones_that_disagree_are_ignored() -> None:
    series = minutes_series(lambda m: 6000 * max(m + 220, 0) / 130, -90)
    plain = fc(series)
    agree = fc(series, reg=Registrations(int(plain.p50 / 0.6), 0.02, 0.6, 0.5))
    assert agree.prior_weight > 0.5 and (agree.p50 - agree.p05) < (plain.p50 - plain.p05)
    far = fc(series, reg=Registrations(400_000, 0.02, 0.6, 0.5))
    assert far.prior_weight < 0.05 and far.p50 == pytest.approx(plain.p50, rel=0.05)


def test_past_events_of_the_venue_become_shapes() -> None:
    pts = [(u, 10_000 * u**3) for u in np.linspace(0.05, 1.0, 30)]
    shape = shape_from_series("event:x", pts, 0.1)
    assert shape is not None and shape.family == "history"
    assert shape.at(0.5) == pytest.approx(0.125, abs=0.01)
    assert shape_from_series("short", pts[:3], 0.1) is None  # too little to learn from
    bank = ShapeBank(build_shapes(DEFAULT_ARRIVAL_CURVE, -240, history=[shape]))
    series = [(u, 15_000 * u**3) for u in np.linspace(0.3, 0.7, 20)]
    f = forecast_final(u_now=0.7, series=series, counted_now=series[-1][1], queue_now=0, capacity=CAP,
                       target=TARGET, count_error=CALIBRATED, shapes=bank, registrations=None)
    assert f is not None and f.families.get("history", 0) > 0.3
    assert f.p50 == pytest.approx(15_000, rel=0.15)


def _rules(**kw) -> DecisionRules:
    base = {"capacity": CAP, "threshold": 0.9, "doors_open": START - timedelta(hours=4),
            "deadline": START - timedelta(minutes=60), "hold_s": 300.0, "needed_hold_s": 300.0}
    return DecisionRules(**(base | kw))


def _f(p: float, *, share: float = 0.5, points: int = 10, method: str = "arrivals") -> FinalForecast:
    return FinalForecast(10_000, 15_000, 20_000, TARGET, p, share, None, 0.0, {}, points, method)


def test_decision_is_asymmetric_held_and_reversible_before_the_deadline() -> None:
    r = _rules()
    assert propose(_f(0.021), r) is None and propose(_f(0.02), r) == DecisionState.cancel_overflow
    assert propose(_f(0.79), r) is None and propose(_f(0.8), r) == DecisionState.overflow_needed
    assert propose(_f(0.001, points=2), r) is None  # too few counts behind it
    assert propose(_f(0.001, share=0.1), r) is None  # most of the crowd not in yet: the prior would decide
    assert propose(_f(0.001, method="registrations"), r) is None
    t = START - timedelta(minutes=150)
    m = DecisionMemory(DecisionState.undecided, t)
    m = step(m, _f(0.01), r, t)
    assert m.state == DecisionState.undecided and m.candidate == DecisionState.cancel_overflow
    m = step(m, _f(0.01), r, t + timedelta(seconds=299))
    assert m.state == DecisionState.undecided
    m = step(m, _f(0.5), r, t + timedelta(seconds=300))  # evidence wavered: the hold starts again
    m = step(m, _f(0.01), r, t + timedelta(seconds=360))
    m = step(m, _f(0.01), r, t + timedelta(seconds=660))
    assert m.state == DecisionState.cancel_overflow and m.reversed_from is None
    m = step(m, _f(0.5), r, t + timedelta(seconds=700))
    assert m.state == DecisionState.cancel_overflow  # unclear evidence never brings back "undecided"
    m = step(m, _f(0.9), r, t + timedelta(seconds=800))
    m = step(m, _f(0.9), r, t + timedelta(seconds=1100))
    assert m.state == DecisionState.overflow_needed and m.reversed_from == DecisionState.cancel_overflow
    # "overflow needed" is cheap to undo, so it may hold for less time than a cancel
    quick = _rules(needed_hold_s=60.0)
    n = step(DecisionMemory(DecisionState.undecided, t), _f(0.9), quick, t)
    assert step(n, _f(0.9), quick, t + timedelta(seconds=60)).state == DecisionState.overflow_needed
    c = step(DecisionMemory(DecisionState.undecided, t), _f(0.01), quick, t)
    assert step(c, _f(0.01), quick, t + timedelta(seconds=60)).state == DecisionState.undecided
    # the last evaluation before the deadline takes a proposal without the hold (the state freezes next)
    last = _rules(final_call_s=60.0)
    late = step(DecisionMemory(DecisionState.undecided, t), _f(0.01), last, START - timedelta(minutes=62))
    assert late.state == DecisionState.undecided  # two minutes before: still held
    assert step(late, _f(0.01), last, START - timedelta(minutes=61)).state == DecisionState.cancel_overflow
    assert step(late, _f(0.01), r, START - timedelta(minutes=61)).state == DecisionState.undecided
    fresh = step(DecisionMemory(DecisionState.undecided, t), _f(0.9), last, START - timedelta(seconds=3630))
    assert fresh.state == DecisionState.overflow_needed  # first proposed at the last evaluation: taken
    assert step(DecisionMemory(DecisionState.undecided, t), _f(0.5), last, START - timedelta(minutes=61)).state == (
        DecisionState.undecided
    )
    frozen = step(m, _f(0.0), r, START - timedelta(minutes=60))
    assert frozen.frozen and frozen.state == DecisionState.overflow_needed
    assert step(frozen, _f(0.0), _rules(hold_s=0), START - timedelta(minutes=30)) == frozen
