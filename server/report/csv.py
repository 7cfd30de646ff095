"""The report as CSV: one row per series point, then one per decision change, alert and delivery.

Header (documented in docs/server.md, "Post-event report")::

    record,ts,local_time,attendance,queue,forecast_p05,forecast_p50,forecast_p95,p_reach_target,decision,by,detail

``record`` is ``sample`` (the event's series), ``decision`` (a change of the overflow decision), ``alert``
(raised, with who acknowledged it in ``by``), ``delivery`` (an organizer notification) or ``summary`` (the
final attendance, first row; ``detail`` says ``final`` or ``provisional``). ``ts`` is ISO 8601 UTC,
``local_time`` the event's time zone.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from server.report.model import Report

HEADER = (
    "record", "ts", "local_time", "attendance", "queue", "forecast_p05", "forecast_p50", "forecast_p95",
    "p_reach_target", "decision", "by", "detail",
)  # fmt: skip


def _num(v: float | None) -> str:
    return "" if v is None else str(round(v))


def render_csv(r: Report) -> str:
    tz = ZoneInfo(r.event.timezone)

    def when(ts: datetime | None) -> tuple[str, str]:
        return (ts.isoformat(), ts.astimezone(tz).strftime("%Y-%m-%d %H:%M")) if ts else ("", "")

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    status = "final" if r.final else "provisional"
    w.writerow(("summary", *when(r.final_at), _num(r.final_attendance), "", "", "", "", "", r.decision_state or "",
                r.decision_override_by or "", status))  # fmt: skip
    for p in r.series:
        w.writerow(("sample", *when(p.ts), p.attendance, p.queue, _num(p.p05), _num(p.p50), _num(p.p95),
                    "" if p.p_reach_target is None else f"{p.p_reach_target:.4f}", p.decision or "", "", ""))  # fmt: skip
    for s in r.timeline:
        detail = "; ".join(
            x for x in (f"from {s.previous}" if s.previous else "", "frozen" if s.frozen else "",
                        f"reverses {s.reversed_from}" if s.reversed_from else "") if x
        )  # fmt: skip
        w.writerow(("decision", *when(s.ts), "" if s.attendance is None else s.attendance, "", "", _num(s.p50), "",
                    "" if s.p_reach_target is None else f"{s.p_reach_target:.4f}", s.state, s.by or "automatic", detail))  # fmt: skip
    for a in r.alerts:
        w.writerow(("alert", *when(a.raised_at), "", "", "", "", "", "", a.state, a.acknowledged_by or "",
                    f"{a.kind}: {a.message}"))  # fmt: skip
    for d in r.deliveries:
        w.writerow(("delivery", *when(d.created_at), "", "", "", "", "", "", d.alert_state, d.target,
                    f"{d.status} after {d.attempts} tries" + (f": {d.error}" if d.error else "")))  # fmt: skip
    return buf.getvalue()
