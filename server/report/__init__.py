"""The post-event report: what happened at an event, from the stored series, decisions and alert logs.

`gather.gather(session, event_id, now) -> Report` reads the database into one typed value (`model`);
the renderers turn it into HTML (`html`, self-contained, charts as inline SVG from `charts`), PDF
(`pdf`, WeasyPrint from the same HTML) and CSV (`csv`). `turnout report` (`cli`) and
``GET /api/v1/events/{id}/report`` use them.
"""

from __future__ import annotations

FORMATS = ("html", "pdf", "csv")
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}


def render(report: object, fmt: str) -> bytes:
    """``report`` (a `model.Report`) in ``fmt`` (html, pdf or csv)."""
    from server.report.model import Report

    assert isinstance(report, Report)
    if fmt == "html":
        from server.report.html import render_html

        return render_html(report).encode("utf-8")
    if fmt == "pdf":
        from server.report.pdf import render_pdf

        return render_pdf(report)
    if fmt == "csv":
        from server.report.csv import render_csv

        return render_csv(report).encode("utf-8")
    raise ValueError(f"unknown report format {fmt!r}: use {', '.join(FORMATS)}")
