"""Synthetic registration exports (clearly fake people) and seating charts for tests, benchmarks and the demo.

`write_registrations_csv` writes ``n`` rows quickly (numpy + one formatted line per row). A share of the
rows imitates the Tulsa 2020 pranks: repeated addresses (``+tag`` and Gmail-dot variants), disposable
mail domains, and sign-up bursts within single minutes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

TICKETS = ("general", "general", "general", "vip", "press")
DISPOSABLE = ("mailinator.com", "guerrillamail.com", "10minutemail.com", "yopmail.com")


def write_registrations_csv(
    path: str | Path,
    n: int,
    *,
    duplicate_share: float = 0.0,
    disposable_share: float = 0.0,
    burst_share: float = 0.0,
    start: datetime = datetime(2020, 6, 10, tzinfo=UTC),
    days: float = 8.0,
    seed: int = 7,
) -> Path:
    """Write a registrations CSV of ``n`` rows; the shares say how many rows are of each fake kind."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    kinds = rng.choice(
        4,
        size=n,
        p=[1 - duplicate_share - disposable_share - burst_share, duplicate_share, disposable_share, burst_share],
    )
    seconds = rng.uniform(0, days * 86400, size=n)
    n_bursts = max(1, int(burst_share * n / 2000))
    burst_minutes = rng.uniform(0, days * 86400, size=n_bursts) // 60 * 60
    burst_at = burst_minutes[rng.integers(0, n_bursts, size=n)] + rng.uniform(0, 59, size=n)
    seconds = np.where(kinds == 3, burst_at, seconds)
    order = np.argsort(seconds, kind="stable")
    tickets = rng.integers(0, len(TICKETS), size=n)
    disp = rng.integers(0, len(DISPOSABLE), size=n)
    t0 = start.timestamp()
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("id,email,phone,name,ticket_type,registered_at\n")
        lines = []
        for rank, i in enumerate(order):
            kind = kinds[i]
            if kind == 1 and rank > 0:  # repeat an earlier person with a +tag
                j = int(order[int(rng.integers(0, rank))])
                email = f"fan{j}+{rank}@example.org"
            elif kind == 2:
                email = f"fan{i}@{DISPOSABLE[disp[i]]}"
            else:
                email = f"fan{i}@example.org"
            when = datetime.fromtimestamp(t0 + float(seconds[i]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            phone = f"+1918{5550000 + i % 10_000_000:07d}" if i % 4 == 0 else ""
            lines.append(f"r{i},{email},{phone},Test Person {i},{TICKETS[tickets[i]]},{when}\n")
            if len(lines) >= 50_000:
                fh.writelines(lines)
                lines = []
        fh.writelines(lines)
    return path


def tulsa_registrations(path: str | Path, n: int = 1_000_000, seed: int = 2020) -> Path:
    """1,000,000 registrations, about two thirds of them pranks, like the Tulsa 2020 rally."""
    return write_registrations_csv(
        path,
        n,
        duplicate_share=0.35,
        disposable_share=0.15,
        burst_share=0.2,
        start=datetime(2020, 6, 11, tzinfo=UTC),
        seed=seed,
    )


def arrival_share(minutes_to_start: float, *, midpoint: float = -75.0, width: float = 28.0) -> float:
    """A realistic cumulative arrival share (logistic, normalised to 0 at -240 min and 1 at the start)."""
    lo = 1 / (1 + np.exp(-(-240 - midpoint) / width))
    hi = 1 / (1 + np.exp(-(0 - midpoint) / width))
    x = 1 / (1 + np.exp(-(min(max(minutes_to_start, -240), 0) - midpoint) / width))
    return float((x - lo) / (hi - lo))


def bowl_chart_csv(sections: int = 20, rows: int = 25, seats: int = 21) -> bytes:
    """A seating chart of an arena bowl (CSV, ``;``-separated, an export's header spelling): ``sections``
    wedges named 101, 102, ... of ``rows`` x ``seats`` (10,500 seats by default) around the plan's centre."""
    lines = ["Section;Row Name;Seat Number;pos_x;pos_y"]
    for s in range(sections):
        a0 = 2 * math.pi * s / sections
        for r in range(rows):
            rad = 60.0 + r
            for k in range(seats):
                a = a0 + (k - seats // 2) * 0.6 / rad
                lines.append(f"{101 + s};R{r + 1};{k + 1};{rad * math.cos(a):.3f};{rad * math.sin(a):.3f}")
    return ("\n".join(lines) + "\n").encode()
