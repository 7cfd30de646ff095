"""How well could *any* overflow decider do on the backtest bank? A learned oracle, as a ceiling.

The oracle knows the bank's generator (`server.backtest.simulate`) exactly: it is trained on a large pool
of events drawn from it (a seed the bank never uses) to predict P(final >= target) from what the server
can see at the overflow deadline — bias-corrected counts at several moments before it, the queue, whether
cameras are calibrated, the registrations — measured as the bank's cameras measure (per-camera bias,
calibration error, 3 % noise), but without outages and without the 5-minute smoothing (it has it
easier than the server). Then it is asked to decide the bank's own events (same truth as
`turnout backtest --seed S`) with the issue's risk settings: cancel when P <= cancel_max_risk, overflow
needed when P >= needed_min_probability.

Its hit rates are a ceiling for a decider that respects those risk settings on this bank: a decider that
does better than a posterior fitted to the generator itself is taking risks the settings forbid.

    python benchmarks/backtest_bound.py                       # pool 300,000, bank seed 2020 (1,000 events)
    python benchmarks/backtest_bound.py --pool 50000 --bank-seed 7 --events 600
    python benchmarks/backtest_bound.py --turnout bank2020.pkl   # + reliability of both, side by side

``--turnout`` takes a bank recorded by ``benchmarks/backtest_reeval.py record`` (same seed and events) and
tabulates, by the probability each gave at the last evaluation before the deadline, how many events reached
the target: Turnout's forecast against the oracle's.

Needs scikit-learn (``pip install scikit-learn``; the ``quantize`` extra brings it). About 2 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from server import backtest

LAGS_MIN = (0, 10, 20, 30, 45, 60, 90, 120)
"""Counts at the deadline and this many minutes before it."""
POOL_SEED = 990_001


def observe(truth: backtest.Truth, index: int, seed: int, rng: np.random.Generator) -> list[float]:
    """What the server can know at the deadline, as numbers (counts per capacity)."""
    t = truth
    k = int(np.searchsorted(t.minutes, t.deadline_min))
    cams = np.arange(len(t.seats)) % t.n_cams
    measured = t.bias * (1 + rng.normal(0, 0.04, t.n_cams))  # what `turnout edge calibrate` reports
    counts = []
    for lag in LAGS_MIN:
        if k - lag < 0:
            counts.append(0.0)
            continue
        secs = backtest.spread_over_sections(float(t.inside[k - lag]), t.seats, t.fill_pref)
        seen = np.clip(secs * t.bias[cams] * (1 + rng.normal(0, 0.03, secs.size)), 0, t.seats)
        counts.append(float((seen / measured[cams]).sum() if t.calibrated else seen.sum()) / t.capacity)
    queue = float(t.queue[k] * rng.uniform(0.8, 1.05)) / t.capacity if t.queue_camera else -1.0
    reg = backtest.registrations_for(
        SimpleNamespace(demand=t.demand, registrations=t.registrations), np.random.default_rng([seed, index, 1])
    )
    regs = [-1.0, -1.0] if reg is None else [reg.total * 0.6 / t.capacity, reg.suspect / max(reg.total, 1)]
    return [float(t.doors_min), float(t.deadline_min), float(t.calibrated), *counts, queue, *regs]


def sample(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, list[backtest.Truth]]:
    rng = np.random.default_rng([seed, 12345])
    xs, ratios, truths = [], [], []
    for i in range(n):
        truth, _ = backtest.simulate(i, seed)
        xs.append(observe(truth, i, seed, rng))
        ratios.append(truth.final / (truth.capacity * truth.threshold))
        truths.append(truth)
    return np.array(xs), np.array(ratios), truths


def turnout_probabilities(bank_path: Path) -> dict[int, float]:
    """P(final >= target) of Turnout's forecast at the last evaluation before each event's deadline."""
    import server.forecast as forecast
    from server.settings import Settings

    curve = tuple(map(tuple, Settings(database_url="sqlite:///unused.db").arrival_curve))
    out: dict[int, float] = {}
    for e in pickle.loads(bank_path.read_bytes()):
        event, rules = e["event"], e["rules"]
        if rules is None:
            continue
        last = None
        for now, kw, _held in e["ticks"]:
            if (now - rules.start).total_seconds() / 60 > event.deadline_min - 1:
                break
            last = kw if kw is not None else last
        if last is None:
            continue
        shapes = forecast.ShapeBank(forecast.build_shapes(curve, float(event.doors_min)))
        fc = forecast.forecast_final(**last, shapes=shapes)
        if fc is not None and fc.p_reach_target is not None:
            out[event.index] = fc.p_reach_target
    return out


def reliability(name: str, p: np.ndarray, ratio: np.ndarray) -> None:
    print(f"{name}: events and share that reached the target, by P(final >= target) at the deadline")
    edges = (0.0, 0.005, 0.02, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0001)
    for lo, hi in itertools.pairwise(edges):
        m = (p >= lo) & (p < hi)
        if m.any():
            print(f"  P {lo:5.3f}-{min(hi, 1):5.3f}: {m.sum():4d} events, {np.mean(ratio[m] >= 1.0):6.1%} reached")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=300_000, help="events the oracle learns from")
    ap.add_argument("--bank-seed", type=int, default=2020)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--cancel-max-risk", type=float, default=0.02)
    ap.add_argument("--needed-min-probability", type=float, default=0.8)
    ap.add_argument("--turnout", type=Path, help="a bank recorded by backtest_reeval.py record, to compare with")
    args = ap.parse_args()
    from sklearn.ensemble import HistGradientBoostingClassifier

    t0 = time.monotonic()
    x_pool, r_pool, _ = sample(POOL_SEED, args.pool)
    x_bank, r_bank, truths = sample(args.bank_seed, args.events)
    oracle = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.08, max_leaf_nodes=63, random_state=0)
    oracle.fit(x_pool, r_pool >= 1.0)
    p = oracle.predict_proba(x_bank)[:, 1]
    small, large, reach = r_bank <= 0.6, r_bank >= 1.05, r_bank >= 1.0
    cancel = p <= args.cancel_max_risk
    needed = p >= args.needed_min_probability
    print(f"oracle trained on {args.pool:,} generated events; bank seed {args.bank_seed}, {args.events} events "
          f"({time.monotonic() - t0:.0f} s)")
    print(f"cancel (P <= {args.cancel_max_risk:g}) by the deadline, final <= 60 % of target: "
          f"{(cancel & small).sum()}/{small.sum()} = {(cancel & small).sum() / small.sum():.1%}   [issue target >= 90 %]")
    print(f"  of which wrong (final >= target): {(cancel & reach).sum()}")
    print(f"overflow_needed (P >= {args.needed_min_probability:g}), final >= 105 % of target: "
          f"{(needed & large).sum()}/{large.sum()} = {(needed & large).sum() / large.sum():.1%}   [issue target >= 85 %]")
    print(f"  of which not reached (final < target): {(needed & ~reach).sum()}")
    lowest = p[reach].min() if reach.any() else 1.0
    print(f"with no wrong cancel (cancel below the lowest P of any event that reached the target, {lowest:.4f}): "
          f"{(small & (p < lowest)).sum() / small.sum():.1%} of small events")
    print("by how far into the doors window the deadline falls (u = share of doors-to-start passed):")
    u = np.array([1 - t.deadline_min / t.doors_min for t in truths])
    for lo, hi in ((0.3, 0.5), (0.5, 0.65), (0.65, 0.75), (0.75, 0.85)):
        m = (u >= lo) & (u < hi)
        if (m & small).any() and (m & large).any():
            print(f"  u {lo:.2f}-{hi:.2f}: cancel {(cancel & small & m).sum()}/{(small & m).sum()}"
                  f"  needed {(needed & large & m).sum()}/{(large & m).sum()}")
    print("by arrival shape: cancelled small | needed large")
    shapes = np.array([t.shape for t in truths])
    for s in backtest.SHAPES:
        m = shapes == s
        print(f"  {s:11s} {(cancel & small & m).sum():4d}/{(small & m).sum():<4d} | "
              f"{(needed & large & m).sum():4d}/{(large & m).sum():<4d}")

    if args.turnout is not None:
        ours = turnout_probabilities(args.turnout)
        idx = np.array(sorted(i for i in ours if i < len(p)))
        reliability("Turnout", np.array([ours[i] for i in idx]), r_bank[idx])
        reliability("oracle", p[idx], r_bank[idx])


if __name__ == "__main__":
    main()
