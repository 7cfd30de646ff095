"""Tune the overflow decision offline: record a backtest bank's forecast inputs once, re-evaluate them fast.

``record`` replays a seeded bank (`server.backtest`) through the real server code and keeps, for every
evaluation tick, the arguments `forecast_final` was called with, whether the decision step was held
(coverage), and the event's decision rules. ``evaluate`` recomputes every forecast and decision from that
file with the code as it is *now* (plus optional rule/parameter overrides), so a change to
`server/forecast.py` or `server/decision.py` is judged on hundreds of events in minutes instead of a full
replay. With unchanged code it reproduces `turnout backtest` exactly.

    python benchmarks/backtest_reeval.py record --events 600 --seed 7 --out bank7.pkl
    python benchmarks/backtest_reeval.py evaluate bank7.pkl --rules '{"cancel_not_before": 0.3}'
    python benchmarks/backtest_reeval.py evaluate bank7.pkl --params '{"rate_sigma": 0.2}'
    python benchmarks/backtest_reeval.py census bank7.pkl   # what held each decision back at the deadline

Tune on one seed, check on another (docs/benchmarks.md, "An independent seed").
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import server.forecast as forecast
import server.live.evaluate as evaluate_module
from server import backtest
from server.decision import DecisionMemory, DecisionRules, DecisionState, step
from server.replay import ReplayEngine
from server.settings import Settings

_TICKS: dict[str, Any] = {}


def _recording_forecast(**kw: Any) -> Any:
    _TICKS["kw"] = {k: v for k, v in kw.items() if k != "shapes"}
    return _forecast_final(**kw)


def _recording_step(memory: Any, fc: Any, rules: Any, now: Any) -> Any:
    _TICKS.setdefault("ticks", []).append((now, _TICKS.pop("kw", None), fc is None))
    _TICKS["rules"] = rules
    return _step(memory, fc, rules, now)


_forecast_final, _step = evaluate_module.forecast_final, evaluate_module.step


def _record_chunk(args: tuple[list[int], int]) -> list[dict[str, Any]]:
    indices, seed = args
    evaluate_module.forecast_final, evaluate_module.step = _recording_forecast, _recording_step
    out = []
    with tempfile.TemporaryDirectory(prefix="turnout-reeval-") as tmp:
        engine = ReplayEngine(Settings(database_url="sqlite:///unused.db", series_interval_s=600.0), Path(tmp))
        for i in indices:
            event, setup, msgs = backtest.generate(i, seed, Path(tmp))
            reg = backtest.registrations_for(event, np.random.default_rng([seed, i, 1]))
            _TICKS.clear()
            engine.run(setup, msgs, lambda _line: None, event="ev", registrations_figures=reg, tick_s=60.0)
            out.append({"event": event, "ticks": _TICKS.get("ticks", []), "rules": _TICKS.get("rules")})
    return out


def record(events: int, seed: int, out: Path, jobs: int = 2) -> None:
    chunks = [(list(range(j, events, jobs)), seed) for j in range(jobs)]
    with ProcessPoolExecutor(jobs) as pool:
        bank = [e for chunk in pool.map(_record_chunk, chunks) for e in chunk]
    out.write_bytes(pickle.dumps(bank))
    print(f"recorded {len(bank)} events of seed {seed} to {out}")


def _outcome(e: dict[str, Any], rules_over: dict[str, Any], params_over: dict[str, Any], curve: Any) -> dict[str, Any]:
    event, rules = e["event"], replace(e["rules"], **rules_over)
    shapes = forecast.ShapeBank(forecast.build_shapes(curve, float(event.doors_min)))
    memory = DecisionMemory(state=DecisionState.undecided, since=e["ticks"][0][0])
    states: list[tuple[float, str]] = []
    for now, kw, held in e["ticks"]:
        minute = (now - rules.start).total_seconds() / 60
        if minute > event.deadline_min + 1:
            break
        fc = None
        if kw is not None:
            fc = forecast.forecast_final(**{**kw, "params": replace(kw["params"], **params_over)}, shapes=shapes)
        memory = step(memory, None if held else fc, rules, now)
        states.append((minute, memory.state.value))
    by_deadline = [s for m, s in states if m <= event.deadline_min]
    return {
        "ratio": event.final / event.target,
        "state": by_deadline[-1] if by_deadline else "undecided",
        "wrong": event.final >= event.target and any(s == "cancel_overflow" for _, s in states),
        "shape": event.shape,
        "index": event.index,
    }


def _evaluate_chunk(args: tuple[Path, int, int, dict[str, Any], dict[str, Any]]) -> list[dict[str, Any]]:
    path, part, parts, rules_over, params_over = args
    curve = tuple(map(tuple, Settings(database_url="sqlite:///unused.db").arrival_curve))
    bank = [
        e for e in pickle.loads(path.read_bytes())
        if e["rules"] is not None and (e["event"].final <= 0.6 * e["event"].target or e["event"].final >= e["event"].target)
    ][part::parts]
    return [_outcome(e, rules_over, params_over, curve) for e in bank]


def evaluate(path: Path, rules_over: dict[str, Any], params_over: dict[str, Any], jobs: int = 2) -> None:
    with ProcessPoolExecutor(jobs) as pool:
        res = [r for c in pool.map(_evaluate_chunk, [(path, k, jobs, rules_over, params_over) for k in range(jobs)]) for r in c]
    low = [r for r in res if r["ratio"] <= 0.6]
    high = [r for r in res if r["ratio"] >= 1.05]
    cancelled = sum(r["state"] == "cancel_overflow" for r in low)
    needed = sum(r["state"] == "overflow_needed" for r in high)
    wrong = sorted((r["index"], r["shape"], round(r["ratio"], 2)) for r in res if r["wrong"])
    print(f"cancelled by the deadline, final <= 60 % of target: {cancelled}/{len(low)}")
    print(f"overflow_needed by the deadline, final >= 105 % of target: {needed}/{len(high)}")
    print(f"wrong cancels: {len(wrong)} {wrong}")


def _blockers(fc: Any, rules: DecisionRules, held: bool) -> str:
    """Why `propose` could not cancel on this forecast (the checks of `server.decision.propose`, named)."""
    if fc is None or fc.p_reach_target is None:
        return "no forecast"
    why = []
    if held:
        why.append("too few cameras live")
    if fc.method == "registrations" or fc.fitted_points < rules.min_fitted_points:
        why.append("too few fitted points")
    if fc.method != "counted" and fc.expected_share_in < rules.min_share_in:
        why.append("under min_share_in of the crowd in")
    if fc.accelerating:
        why.append("accelerating")
    if fc.paused:
        why.append("paused")
    if fc.registrations_expect_target:
        why.append("honest registrations expect the target")
    if not why:
        why.append(f"p > {rules.cancel_max_risk:g}" if fc.p_reach_target > rules.cancel_max_risk else "hold not yet met")
    return ", ".join(why)


def _census_chunk(args: tuple[Path, int, int]) -> list[tuple[str, str, str]]:
    path, part, parts = args
    curve = tuple(map(tuple, Settings(database_url="sqlite:///unused.db").arrival_curve))
    bank = [e for e in pickle.loads(path.read_bytes()) if e["rules"] is not None and e["event"].final <= 0.6 * e["event"].target]
    out = []
    for e in bank[part::parts]:
        event, rules = e["event"], e["rules"]
        shapes = forecast.ShapeBank(forecast.build_shapes(curve, float(event.doors_min)))
        memory = DecisionMemory(state=DecisionState.undecided, since=e["ticks"][0][0])
        last: tuple[Any, bool] = (None, True)
        for now, kw, held in e["ticks"]:
            if (now - rules.start).total_seconds() / 60 > event.deadline_min:
                break
            fc = None if kw is None else forecast.forecast_final(**kw, shapes=shapes)
            memory = step(memory, None if held else fc, rules, now)
            last = (fc, held)
        reason = "cancelled" if memory.state == DecisionState.cancel_overflow else _blockers(last[0], rules, last[1])
        out.append((event.shape, memory.state.value, reason))
    return out


def census(path: Path, jobs: int = 2) -> None:
    """For the small events (final <= 60 % of target): what held the cancel back at the deadline, and by shape."""
    with ProcessPoolExecutor(jobs) as pool:
        res = [r for c in pool.map(_census_chunk, [(path, k, jobs) for k in range(jobs)]) for r in c]
    print(f"small events: {len(res)}, cancelled by the deadline: {sum(r[2] == 'cancelled' for r in res)}")
    for reason, n in collections.Counter(r[2] for r in res if r[2] != "cancelled").most_common():
        print(f"  {n:4d}  {reason}")
    by_shape = collections.Counter((r[0], r[2] == "cancelled") for r in res)
    for shape in sorted({r[0] for r in res}):
        print(f"  {shape:12s} cancelled {by_shape[(shape, True)]}/{by_shape[(shape, True)] + by_shape[(shape, False)]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="replay a seeded bank and keep every tick's forecast inputs")
    rec.add_argument("--events", type=int, default=600)
    rec.add_argument("--seed", type=int, default=7)
    rec.add_argument("--out", type=Path, required=True)
    ev = sub.add_parser("evaluate", help="recompute forecasts and decisions with today's code")
    ev.add_argument("bank", type=Path)
    ev.add_argument("--rules", default="{}", help="DecisionRules overrides, JSON")
    ev.add_argument("--params", default="{}", help="ForecastParams overrides, JSON")
    ce = sub.add_parser("census", help="what held each small event's cancel back at the deadline")
    ce.add_argument("bank", type=Path)
    args = ap.parse_args()
    if args.cmd == "census":
        census(args.bank)
    elif args.cmd == "record":
        record(args.events, args.seed, args.out)
    else:
        evaluate(args.bank, json.loads(args.rules), json.loads(args.params))


if __name__ == "__main__":
    main()
