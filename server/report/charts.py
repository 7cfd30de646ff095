"""The report's charts as inline SVG (matplotlib, no pyplot state): attendance curve and seating map."""

from __future__ import annotations

import io
import math
from datetime import datetime
from zoneinfo import ZoneInfo

from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from server.report.model import Report, SectionFill

RAMP = ("#2b3a4a", "#2f6f9f", "#4fb3d9", "#9be07a", "#ffd84d", "#ff7b5c")
"""The dashboard's seating-map colours, empty to full (server/dashboard/static/js/dashboard.js)."""
BAND_CLIP = 1.3
"""The forecast band is drawn up to 1.3 x capacity, as on the dashboard."""
DECISION_COLOURS = {"cancel_overflow": "#1a7f37", "overflow_needed": "#cf222e", "undecided": "#9a6700"}
_RC = {"svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9}


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or DOCTYPE


def attendance_chart(report: Report) -> str:
    """Attendance over time with the forecast band (p05-p95), capacity, target, key times and decisions."""
    import matplotlib

    ev = report.event
    tz = ZoneInfo(ev.timezone)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 3.3))
        ax = fig.add_subplot()
        pts = [p for p in report.series if p.ts <= max(ev.start, report.as_of)]
        t = [p.ts for p in pts]
        clip = ev.capacity * BAND_CLIP
        band = [p for p in pts if p.p05 is not None and p.p50 is not None and p.p95 is not None]
        if band:
            bt = [p.ts for p in band]
            lo = [min(p.p05 or 0.0, clip) for p in band]
            hi = [min(p.p95 or 0.0, clip) for p in band]
            ax.fill_between(bt, lo, hi, color="#58a6ff", alpha=0.25, linewidth=0, label="forecast p05–p95")
            mid = [min(p.p50 or 0.0, clip) for p in band]
            ax.plot(bt, mid, color="#2f6f9f", linestyle="--", linewidth=1, label="forecast (most likely)")
        ax.plot(t, [p.attendance for p in pts], color="#1f2328", linewidth=2, label="attendance")
        ax.axhline(ev.capacity, color="#57606a", linewidth=1, linestyle=":", label=f"capacity {ev.capacity:,}")
        if ev.target is not None:
            ax.axhline(ev.target, color="#d4a72c", linewidth=1.2, label=f"target {ev.target:,.0f}")
        for when, name in ((ev.doors_open, "doors"), (ev.deadline, "deadline"), (ev.start, "start")):
            if when is not None:
                ax.axvline(when, color="#8c959f", linewidth=0.8)
                ax.annotate(name, (when, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                            fontsize=7, color="#57606a")  # fmt: skip
        for step in report.timeline:
            if step.state == "undecided" and step.previous is None:
                continue
            colour = DECISION_COLOURS.get(step.state, "#57606a")
            ax.axvline(step.ts, color=colour, linewidth=1.4, linestyle="-.")
        ax.set_ylim(0, max(ev.capacity * 1.08, *(p.attendance for p in pts)) if pts else ev.capacity * 1.08)
        ax.set_xlim(ev.doors_open, max(ev.start, pts[-1].ts) if pts else ev.start)
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:,.0f}")
        ax.set_ylabel("people")
        ax.set_xlabel(f"time ({ev.timezone}, 24-hour); dash-dot lines: decision changes")
        ax.grid(True, color="#d0d7de", linewidth=0.5)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5, fontsize=7, frameon=False)
        return _svg(fig)


def colour(ratio: float) -> str:
    """The dashboard's ramp colour for a fill ratio."""
    return RAMP[min(len(RAMP) - 1, max(0, math.floor(ratio * len(RAMP))))]


def _text_on(bg: str) -> str:
    c = [int(bg[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
    return "#000000" if 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] > 0.18 else "#ffffff"


def seating_map(sections: tuple[SectionFill, ...], at: datetime | None, tz: str, columns: int = 8) -> str:
    """One rectangle per section, coloured by fill like the dashboard's seating map (queues hatched)."""
    import matplotlib

    order = sorted(sections, key=lambda x: (x.kind == "queue", x.id))
    rows = max(1, math.ceil(len(order) / columns))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.2, 0.62 * rows + 0.35))
        ax = fig.add_axes((0, 0, 1, 1))
        for i, sec in enumerate(order):
            x, y = i % columns, rows - 1 - i // columns
            if sec.kind == "queue":
                bg, fg, label = "#eaeef2", "#1f2328", f"{sec.people or 0:,} queueing"
                ax.add_patch(Rectangle((x + 0.04, y + 0.06), 0.92, 0.88, facecolor=bg, edgecolor="#8c959f", hatch="//"))
            else:
                fill = sec.fill
                bg = colour(fill) if fill is not None else "#ffffff"
                fg = _text_on(bg) if fill is not None else "#57606a"
                occ = f"{sec.occupied:,}" if sec.occupied is not None else "–"
                label = f"{occ} / {sec.seats:,}"
                over = sec.people is not None and sec.people > sec.seats
                ax.add_patch(Rectangle((x + 0.04, y + 0.06), 0.92, 0.88, facecolor=bg,
                                       edgecolor="#cf222e" if over else "#8c959f", linewidth=2 if over else 0.5))  # fmt: skip
            ax.text(x + 0.5, y + 0.62, sec.id.removeprefix("sim-"), ha="center", va="center", fontsize=7.5,
                    fontweight="bold", color=fg)  # fmt: skip
            ax.text(x + 0.5, y + 0.3, label, ha="center", va="center", fontsize=6.5, color=fg)
        ax.set_xlim(0, columns)
        ax.set_ylim(0, rows)
        ax.set_axis_off()
        return _svg(fig)
