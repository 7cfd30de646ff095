"""Registration import benchmark: 1,000,000 rows (Tulsa-like, two thirds pranks) on SQLite and PostgreSQL.

    python benchmarks/bench_registrations.py [--rows 1000000] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

Each import runs in a fresh process; peak memory is that process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa


def child(url: str, schema: str | None, path: str) -> None:
    from server.db.session import Database
    from server.migrations import upgrade
    from server.registrations import import_file
    from server.venues import EventIn, VenueIn, save_event, save_venue

    db = Database(url, schema)
    upgrade(db)
    with db.session() as s:
        save_venue(
            s,
            VenueIn(
                id="bench",
                name="bench",
                cameras=[{"id": "c"}],
                sections=[{"id": "s", "seats": 19000, "cameras": ["c"]}],
            ),
        )
        s.flush()
        save_event(
            s,
            EventIn(
                id="ev",
                venue="bench",
                name="bench",
                doors_open=datetime(2020, 6, 20, 20, tzinfo=UTC),
                start=datetime(2020, 6, 21, tzinfo=UTC),
                capacity=19000,
            ),
        )
        s.commit()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with db.session() as s:
        report = import_file(s, "ev", path)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert report.ok, report.errors[:5]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": report.imported,
                "base_mb": base / 1024,
                "peak_mb": peak / 1024,
                "suspect_share": report.summary["suspect_share"],
            }
        )
    )


def run(url: str, schema: str | None, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, schema or "", str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3] or None, sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    from server.sample_data import tulsa_registrations

    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    path = tulsa_registrations(tmp / "registrations.csv", args.rows)
    gen = time.perf_counter() - t0
    size_mb = path.stat().st_size / 1e6
    print(f"# registration import, {args.rows:,} rows ({size_mb:.0f} MB CSV, generated in {gen:.1f} s)")
    print(f"{'database':>11} {'seconds':>8} {'rows/s':>9} {'peak MB':>8} {'(base MB)':>9} {'suspect':>8}")
    targets: list[tuple[str, str, str | None]] = [("sqlite", f"sqlite:///{tmp}/bench.db", None)]
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    eng = sa.create_engine(args.pg)
    try:
        with eng.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        targets.append(("postgresql", args.pg, schema))
    except sa.exc.OperationalError:
        print(f"(PostgreSQL at {args.pg} not reachable: skipped)")
    try:
        for name, url, sch in targets:
            r = run(url, sch, path)
            print(
                f"{name:>11} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9.0f} {r['peak_mb']:>8.0f} "
                f"{r['base_mb']:>9.0f} {r['suspect_share']:>8.3f}"
            )
    finally:
        if len(targets) > 1:
            with eng.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
