"""The report as one self-contained HTML page (inline CSS and SVG, no external resources; also the PDF's source)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from server.report.charts import RAMP, attendance_chart, seating_map
from server.report.model import Report

DECISION_WORDS = {
    "cancel_overflow": "Cancel the overflow event",
    "overflow_needed": "Overflow event needed",
    "undecided": "Undecided",
}
ALERT_KINDS = {
    "overflow_decision": "Overflow decision",
    "camera_stale": "Camera silent",
    "camera_offline": "Camera offline",
    "section_over_capacity": "Section over capacity",
}

CSS = """
@page { size: A4; margin: 14mm 12mm 16mm; @bottom-right { content: "page " counter(page) " of " counter(pages);
  font-size: 8pt; color: #57606a; } }
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 9.5pt; color: #1f2328; margin: 0 auto; max-width: 190mm; }
h1 { font-size: 17pt; margin: 0 0 2pt; } h2 { font-size: 12pt; margin: 14pt 0 4pt; border-bottom: 1px solid #d0d7de; }
.sub { color: #57606a; margin: 0 0 6pt; }
.banner { padding: 5pt 8pt; border-radius: 4pt; font-weight: bold; margin: 6pt 0; }
.banner.final { background: #dafbe1; border: 1px solid #1a7f37; }
.banner.provisional { background: #fff8c5; border: 1px solid #9a6700; }
.figures { display: flex; flex-wrap: wrap; gap: 6pt; margin: 6pt 0; }
.fig { border: 1px solid #d0d7de; border-radius: 4pt; padding: 4pt 8pt; min-width: 30mm; flex: 1; }
.fig .label { display: block; color: #57606a; font-size: 8pt; }
.fig .value { display: block; font-size: 15pt; font-weight: bold; font-variant-numeric: tabular-nums; }
.fig[data-figure="decision"] .value { font-size: 11pt; }
.fig .detail { display: block; font-size: 8pt; color: #57606a; }
table { border-collapse: collapse; width: 100%; margin: 4pt 0; }
th, td { text-align: left; padding: 2pt 5pt; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { font-size: 8pt; color: #57606a; font-weight: normal; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr { page-break-inside: avoid; }
.chart svg { width: 100%; height: auto; }
.note { color: #57606a; font-size: 8pt; }
.ramp { display: inline-block; width: 60pt; height: 8pt; vertical-align: middle;
  background: linear-gradient(90deg, %RAMP%); }
.ok { color: #1a7f37; } .bad { color: #cf222e; }
section { page-break-inside: auto; }
""".replace("%RAMP%", ", ".join(RAMP))


class _Fmt:
    """Times in the event's zone (24-hour) and numbers with thousands separators."""

    def __init__(self, tz: str) -> None:
        self.tz = ZoneInfo(tz)

    def t(self, ts: datetime | None) -> str:
        return ts.astimezone(self.tz).strftime("%H:%M") if ts else "–"

    def dt(self, ts: datetime | None) -> str:
        return ts.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if ts else "–"

    @staticmethod
    def n(v: float | None) -> str:
        return f"{round(v):,}" if v is not None else "–"

    @staticmethod
    def pct(v: float | None, digits: int = 0) -> str:
        return f"{100 * v:.{digits}f} %" if v is not None else "–"


def _row(*cells: str, num: tuple[int, ...] = ()) -> str:
    return "<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(cells)) + "</tr>"


def _head(*cells: str, num: tuple[int, ...] = ()) -> str:
    return "<tr>" + "".join(f'<th class="num">{c}</th>' if i in num else f"<th>{c}</th>" for i, c in enumerate(cells)) + "</tr>"


def decision_words(state: str | None) -> str:
    return DECISION_WORDS.get(state or "", state.replace("_", " ") if state else "no decision")


def status_line(r: Report, f: _Fmt | None = None) -> str:
    """Final or provisional, in words (also the CSV's comment line)."""
    f = f or _Fmt(r.event.timezone)
    if r.final:
        return f"Final report: the event started at {f.dt(r.event.start)} ({r.event.timezone}); figures as of {f.dt(r.as_of)}."
    return (
        f"PROVISIONAL: the event has not started yet (start {f.dt(r.event.start)}); figures as of {f.dt(r.as_of)} "
        "and will change."
    )


def render_html(r: Report) -> str:
    ev, f = r.event, _Fmt(r.event.timezone)
    e = escape
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>Turnout report · {e(ev.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(ev.name)}</h1>",
        f'<p class="sub">{e(ev.venue_name)} · event {e(ev.id)} · {ev.start.astimezone(f.tz):%A %d %B %Y} · '
        f"all times {e(ev.timezone)}, 24-hour</p>",
        f'<p class="sub">Doors {f.t(ev.doors_open)} · decision deadline {f.t(ev.deadline)} · start {f.t(ev.start)}</p>',
        f'<p class="banner {"final" if r.final else "provisional"}" data-status="{"final" if r.final else "provisional"}">'
        f"{e(status_line(r, f))}</p>",
        _figures(r, f),
        '<section><h2>Attendance and forecast</h2><div class="chart">',
        attendance_chart(r),
        '</div><p class="note">Black: attendance counted by the cameras. Blue band: the forecast of the final '
        "attendance (p05–p95, 9 times in 10), dashed: its most likely value. Yellow: the overflow target.</p></section>",
        _timeline(r, f),
        _checks(r, f),
        _showup(r, f),
        '<section><h2>Fill per section</h2><div class="chart">',
        seating_map(r.sections, r.sections_at, ev.timezone),
        f'</div><p class="note">At {f.t(r.sections_at)}. Seats occupied / seats. Colour: empty '
        '<span class="ramp"></span> full (as on the dashboard); hatched: people queueing outside; '
        "red border: more people than seats.</p></section>",
        _cameras(r, f),
        _alerts(r, f),
        _deliveries(r, f),
        f'<p class="note">Made by Turnout from the stored series (one point per series interval), decision and alert '
        f"logs at {f.dt(r.as_of)}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _figures(r: Report, f: _Fmt) -> str:
    ev = r.event
    final_label = "Final attendance" if r.final else "Attendance so far"
    fill = r.final_attendance / ev.capacity if r.final_attendance is not None and ev.capacity else None
    reg = r.registrations
    showup = (
        f"show-up {f.pct(r.show_up, 1)}" + (f" ({f.pct(r.final_attendance / reg.plausible, 1)} of plausible)" if reg and reg.plausible and r.final_attendance is not None else "")
        if r.show_up is not None
        else "no registrations imported"
    )
    decided = decision_words(r.decision_state)
    how = "set by " + r.decision_override_by if r.decision_override_by else ("final" if r.decision_frozen else "provisional")
    target = f"target {f.n(ev.target)}" if ev.target is not None else "no overflow event"
    items = [
        (final_label, f.n(r.final_attendance), f"at {f.t(r.final_at)} · {f.pct(fill)} of the seats", "final"),
        ("Capacity", f.n(ev.capacity), target, "capacity"),
        ("Registrations", f.n(reg.total if reg else None), showup, "registrations"),
        ("Overflow decision", e(decided), e(how), "decision"),
        ("Peak", f.n(r.peak_attendance), "people in at once", "peak"),
    ]
    return '<div class="figures">' + "".join(
        f'<div class="fig" data-figure="{k}"><span class="label">{lab}</span><span class="value">{v}</span>'
        f'<span class="detail">{d}</span></div>'
        for lab, v, d, k in items
    ) + "</div>"


def e(text: str) -> str:
    return escape(text)


def _timeline(r: Report, f: _Fmt) -> str:
    rows = []
    for s in r.timeline:
        if s.state == "undecided" and s.previous is None and not s.by:
            continue  # the start of the automatic decision, not a change
        what = decision_words(s.state)
        notes = []
        if s.reversed_from and not s.by:
            notes.append(f"reverses the earlier decision ({decision_words(s.reversed_from).lower()})")
        if s.by and s.frozen:
            notes.append("override: frozen here")
        elif s.by:
            notes.append("handed back to automatic")
        elif s.frozen and s.previous == s.state:
            notes.append("deadline passed: final")
        elif s.frozen:
            notes.append("deadline passed")
        who = f"operator {e(s.by)}" if s.by else "automatic"
        chance = f.pct(s.p_reach_target) if s.p_reach_target is not None else "–"
        rows.append(_row(f.t(s.ts), e(what), who, f.n(s.attendance), chance, e("; ".join(notes)), num=(3, 4)))
    if not rows:
        rows.append('<tr><td colspan="6">No decision was taken.</td></tr>')
    return (
        "<section><h2>Decision timeline</h2><table>"
        + _head("time", "decision", "by", "attendance", "chance of target", "note", num=(3, 4))
        + "".join(rows)
        + "</table></section>"
    )


def _checks(r: Report, f: _Fmt) -> str:
    rows = []
    for c in r.forecast_checks:
        band = f"{f.n(c.p05)} – {f.n(c.p95)}" if c.p05 is not None else "–"
        err = f"{100 * c.error:+.1f} %" if c.error is not None else "–"
        inside = "–" if c.within_band is None else ('<span class="ok">yes</span>' if c.within_band else '<span class="bad">no</span>')
        rows.append(_row(f"T−{c.minutes_before} min", f.t(c.ts), f.n(c.p50), band, f.n(c.final), err, inside, num=(2, 3, 4, 5)))
    final = "final" if r.final else "final (not known yet)"
    return (
        "<section><h2>Forecast against the final attendance</h2><table>"
        + _head("when", "forecast at", "most likely", "range p05–p95", final, "error", "final in range", num=(2, 3, 4, 5))
        + "".join(rows)
        + "</table></section>"
    )


def _showup(r: Report, f: _Fmt) -> str:
    reg = r.registrations
    if reg is None:
        return "<section><h2>Show-up</h2><p>No registrations were imported for this event.</p></section>"
    rows = [
        _row(e(t.ticket_type), f.n(t.registered), f.pct(t.registered / reg.total if reg.total else None, 1), f.n(t.suspect),
             num=(1, 2, 3))
        for t in reg.by_ticket_type
    ]
    rows.append(_row("<b>all</b>", f"<b>{f.n(reg.total)}</b>", "100 %", f.n(reg.suspect), num=(1, 2, 3)))
    per_type = len(reg.by_ticket_type) > 1
    note = (
        "Cameras count seats, not tickets: the show-up ratio is measured for the whole crowd; the table shows how "
        "the registrations split by ticket type."
        if per_type
        else "The registrations have no ticket types: the show-up ratio is overall."
    )
    return (
        f"<section><h2>Show-up</h2><p>{f.n(r.final_attendance)} came of {f.n(reg.total)} registered: "
        f"<b>show-up {f.pct(r.show_up, 1)}</b>; {f.n(reg.plausible)} registrations look genuine "
        f"({f.pct(r.final_attendance / reg.plausible if reg.plausible and r.final_attendance is not None else None, 1)} of them came).</p>"
        "<table>" + _head("ticket type", "registered", "share", "duplicates / disposable", num=(1, 2, 3)) + "".join(rows)
        + f'</table><p class="note">{note}</p></section>'
    )


def _cameras(r: Report, f: _Fmt) -> str:
    rows = []
    for c in r.cameras:
        up = "never reported" if c.never_reported else f.pct(c.uptime, 1)
        rows.append(_row(e(c.id), e(c.name), e(", ".join(c.sections)), up, f"{c.down_minutes:,.1f}", str(c.incidents), num=(3, 4, 5)))
    return (
        "<section><h2>Camera uptime</h2><table>"
        + _head("camera", "name", "sections", "uptime", "minutes down", "outages", num=(3, 4, 5))
        + "".join(rows)
        + '</table><p class="note">From doors-open to the start: time neither silent (stale) nor offline.</p></section>'
    )


def _alerts(r: Report, f: _Fmt) -> str:
    rows = []
    for a in r.alerts:
        kind = ALERT_KINDS.get(a.kind, a.kind)
        state = "" if a.state in ("active", "cleared") else f" · {decision_words(a.state).lower()}"
        ack = f"{e(a.acknowledged_by)} at {f.t(a.acknowledged_at)}" if a.acknowledged_by else "not acknowledged"
        rows.append(_row(f.t(a.raised_at), e(kind + state), e(a.message), f.t(a.cleared_at) if a.cleared_at else "–", ack))
    if not rows:
        rows.append('<tr><td colspan="5">No alerts.</td></tr>')
    return (
        "<section><h2>Alerts</h2><table>"
        + _head("raised", "alert", "message", "cleared", "acknowledged by")
        + "".join(rows)
        + "</table></section>"
    )


def _deliveries(r: Report, f: _Fmt) -> str:
    rows = [
        _row(f.t(d.created_at), e(d.alert_id), e(decision_words(d.alert_state).lower() if d.alert_state in DECISION_WORDS else d.alert_state),
             e(d.target), e(d.status), str(d.attempts), f.t(d.delivered_at) if d.delivered_at else e(d.error or "–"),
             num=(5,))
        for d in r.deliveries
    ]
    if not rows:
        rows.append('<tr><td colspan="7">No organizer notifications were configured or sent.</td></tr>')
    return (
        "<section><h2>Organizer notifications</h2><table>"
        + _head("queued", "alert", "state", "channel", "status", "tries", "delivered / last error", num=(5,))
        + "".join(rows)
        + "</table></section>"
    )
