"""The report as PDF: WeasyPrint renders the same self-contained HTML (no network access)."""

from __future__ import annotations

from server.report.html import render_html
from server.report.model import Report


class PdfUnavailable(RuntimeError):
    """WeasyPrint or its system libraries (Pango) are missing."""


def _no_fetch(url: str, *args: object, **kwargs: object) -> dict:
    raise ValueError(f"the report fetches nothing: {url}")


def render_pdf(report: Report) -> bytes:
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:
        raise PdfUnavailable(
            f"PDF needs WeasyPrint and Pango ({exc}): pip install 'turnout[server]'; apt-get install libpango-1.0-0"
        ) from exc
    return HTML(string=render_html(report), url_fetcher=_no_fetch).write_pdf()
