"""Registration import (CSV or JSON) and registration quality.

An import is the ticketing system's full export for one event: it **replaces** the event's
registrations in one transaction, so re-importing the same file gives the same totals, and a file with
any bad row imports nothing (the report lists every bad row, line by line, with the reason).

Columns (CSV header or JSON keys): ``email`` and/or ``phone`` (at least one), optional ``id``/``ref``,
``name``, ``ticket_type`` (default ``general``), ``registered_at`` (ISO 8601; no offset means UTC).

Quality: a registration is *suspect* when its normalised email or phone repeats an earlier one, when
its email domain is a disposable-mail domain (the maintained ``disposable-email-domains`` list), or when
it belongs to the excess of a sign-up burst (a minute with more than ``burst_factor`` x the median
per-minute rate and at least ``burst_min`` sign-ups). ``suspect_share`` = suspect / total.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete
from sqlalchemy.orm import Session

from server.db.models import Event, Registration, RegistrationSummary

MAX_REPORTED_ERRORS = 200
CHUNK = 20_000
_EMAIL_RE = re.compile(r"^[^@\s,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_PHONE_STRIP = str.maketrans("", "", " -().+/")
COLUMNS = ("ref", "email", "phone", "name", "ticket_type", "registered_at")
_ALIASES = {"id": "ref", "created_at": "registered_at", "ticket": "ticket_type", "type": "ticket_type"}


class ImportError_(ValueError):
    """The file cannot be read at all (format, encoding, header)."""


class FileTooLarge(ImportError_):
    """The file is larger than the limit given to `import_registrations`."""


@dataclass
class RowError:
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.message}"


@dataclass
class ImportReport:
    ok: bool
    rows: int
    imported: int
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "imported": self.imported,
            "error_count": self.error_count,
            "errors": [{"row": e.row, "field": e.field, "message": e.message} for e in self.errors],
            "summary": self.summary,
        }


def _disposable_domains() -> frozenset[str]:
    from disposable_email_domains import blocklist

    return frozenset(blocklist)


def normalise_email(email: str) -> str:
    """Lower-case; drop ``+tag``; drop dots in Gmail local parts."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


# ------------------------------------------------------------------------------------ reading
def read_rows(data: BinaryIO, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, raw_row)``; CSV rows are numbered by line (header = 1), JSON from 1."""
    if fmt == "json":
        try:
            doc = json.load(io.TextIOWrapper(data, encoding="utf-8"))
        except FileTooLarge:
            raise
        except (UnicodeDecodeError, ValueError) as exc:
            raise ImportError_(f"not valid UTF-8 JSON: {exc}") from None
        items = doc.get("registrations") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise ImportError_('expected a JSON list of registrations (or {"registrations": [...]})')
        for i, item in enumerate(items, 1):
            yield i, item if isinstance(item, dict) else {"__invalid__": item}
        return
    text = io.TextIOWrapper(data, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            raise ImportError_("empty file: expected a header row")
        names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
        if "email" not in names and "phone" not in names:
            raise ImportError_(f"header {header} has neither an 'email' nor a 'phone' column")
        width = len(names)
        for line, values in enumerate(reader, 2):
            if len(values) != width:
                if not values:
                    continue
                yield line, {"__width__": len(values), "__expected__": width}
                continue
            yield line, dict(zip(names, values, strict=True))
    except UnicodeDecodeError as exc:
        raise ImportError_(f"file is not UTF-8: {exc}") from None
    except csv.Error as exc:
        raise ImportError_(f"CSV error: {exc}") from None


def validate(line: int, raw: dict[str, Any], errors: list[RowError]) -> tuple | None:
    """One raw row -> ``(ref, email, phone, name, ticket_type, registered_at)`` or None (error appended)."""
    if "__width__" in raw:
        errors.append(RowError(line, "(row)", f"{raw['__width__']} fields, header has {raw['__expected__']}"))
        return None
    if "__invalid__" in raw:
        errors.append(RowError(line, "(row)", "expected an object"))
        return None
    for key in COLUMNS:
        value = raw.get(key)
        if isinstance(value, str) and "\x00" in value:
            errors.append(RowError(line, key, "contains a NUL character"))
            return None
    email = raw.get("email") or None
    phone = raw.get("phone") or None
    if email is not None:
        if not isinstance(email, str) or not _EMAIL_RE.match(email.strip()) or len(email) > 320:
            errors.append(RowError(line, "email", f"not an email address: {str(email)[:80]!r}"))
            return None
        email = email.strip().lower()
    if phone is not None:
        digits = str(phone).translate(_PHONE_STRIP)
        if not digits.isdigit() or not 7 <= len(digits) <= 15:
            errors.append(RowError(line, "phone", f"not a phone number (7-15 digits): {str(phone)[:40]!r}"))
            return None
        phone = digits
    if email is None and phone is None:
        errors.append(RowError(line, "email/phone", "needs an email or a phone"))
        return None
    ticket = raw.get("ticket_type") or "general"
    if not isinstance(ticket, str) or len(ticket) > 64:
        errors.append(RowError(line, "ticket_type", "must be text of at most 64 characters"))
        return None
    when = raw.get("registered_at") or None
    if when is not None:
        try:
            parsed = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
            when = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            errors.append(RowError(line, "registered_at", f"not an ISO 8601 time in range: {str(when)[:40]!r}"))
            return None
    ref = raw.get("ref")
    name = raw.get("name")
    return (
        str(ref)[:128] if ref not in (None, "") else None,
        email,
        phone,
        str(name)[:200] if name not in (None, "") else None,
        ticket.strip(),
        when,
    )


# ------------------------------------------------------------------------------------ import
@dataclass
class _Quality:
    disposable_domains: frozenset[str]
    seen: set[int] = field(default_factory=set)
    by_ticket: Counter[str] = field(default_factory=Counter)
    per_minute: Counter[int] = field(default_factory=Counter)
    duplicates: int = 0
    disposable: int = 0
    dup_or_disp: int = 0

    def flags(self, email: str | None, phone: str | None, ticket: str, when: datetime | None) -> tuple[bool, bool]:
        dup = False
        if email is not None:
            h = hash(normalise_email(email))
            dup = h in self.seen
            self.seen.add(h)
        if phone is not None:
            h = hash(phone[-10:])  # never equal to an email (no "@")
            dup = dup or h in self.seen
            self.seen.add(h)
        disp = email is not None and email.rpartition("@")[2] in self.disposable_domains
        self.duplicates += dup
        self.disposable += disp
        self.dup_or_disp += dup or disp
        self.by_ticket[ticket] += 1
        if when is not None:
            self.per_minute[int(when.timestamp() // 60)] += 1
        return dup, disp

    def burst_excess(self, factor: float, minimum: int) -> int:
        if not self.per_minute:
            return 0
        median = statistics.median(self.per_minute.values())
        limit = max(minimum, factor * median)
        return int(sum(c - median for c in self.per_minute.values() if c > limit))


def import_registrations(
    session: Session,
    event_id: str,
    data: BinaryIO,
    *,
    fmt: str = "csv",
    source_name: str = "upload",
    burst_factor: float = 10.0,
    burst_min: int = 50,
    max_bytes: int | None = None,
) -> ImportReport:
    """Replace ``event_id``'s registrations with the file's, atomically. See the module docstring.

    `FileTooLarge` when the file has more than ``max_bytes`` (nothing is imported).
    """
    if session.get(Event, event_id) is None:
        raise ImportError_(f"no event {event_id!r}; create it first")
    if fmt not in ("csv", "json"):
        raise ImportError_(f"unknown format {fmt!r}: use csv or json")
    digest = hashlib.sha256()
    data = io.BufferedReader(_Hashing(data, digest, max_bytes), 1 << 20)  # type: ignore[assignment]
    quality = _Quality(_disposable_domains())
    errors: list[RowError] = []
    error_count = 0
    rows = imported = 0
    conn = session.connection()
    writer = _writer(conn, event_id)
    try:
        conn.execute(delete(Registration).where(Registration.event_id == event_id))
        batch: list[tuple] = []
        for line, raw in read_rows(data, fmt):
            rows += 1
            valid = validate(line, raw, errors if len(errors) < MAX_REPORTED_ERRORS else [])
            if valid is None:
                error_count += 1
                continue
            if error_count:
                continue  # keep validating to report every bad row, but write nothing more
            dup, disp = quality.flags(valid[1], valid[2], valid[4], valid[5])
            batch.append((*valid, dup, disp))
            if len(batch) >= CHUNK:
                writer(batch)
                imported += len(batch)
                batch = []
        if error_count:
            session.rollback()
            return ImportReport(False, rows, 0, error_count, errors)
        if rows == 0:
            session.rollback()
            raise ImportError_("no registrations in the file")
        if batch:
            writer(batch)
            imported += len(batch)
        burst = quality.burst_excess(burst_factor, burst_min)
        suspect = min(imported, quality.dup_or_disp + burst)
        summary = RegistrationSummary(
            event_id=event_id,
            total=imported,
            by_ticket_type=dict(quality.by_ticket),
            duplicates=quality.duplicates,
            disposable=quality.disposable,
            burst=burst,
            suspect=suspect,
            suspect_share=suspect / imported if imported else 0.0,
            source_sha256=digest.hexdigest(),
            source_name=source_name[:300],
            imported_at=datetime.now(UTC),
        )
        session.merge(summary)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return ImportReport(True, rows, imported, 0, [], summary_dict(summary))


def summary_dict(s: RegistrationSummary) -> dict[str, Any]:
    return {
        "event": s.event_id,
        "total": s.total,
        "by_ticket_type": s.by_ticket_type,
        "duplicates": s.duplicates,
        "disposable": s.disposable,
        "burst": s.burst,
        "suspect": s.suspect,
        "suspect_share": round(s.suspect_share, 4),
        "plausible": s.total - s.suspect,
        "source_sha256": s.source_sha256,
        "source_name": s.source_name,
        "imported_at": s.imported_at.isoformat(),
    }


class _Hashing(io.RawIOBase):
    """Wraps a binary stream and feeds everything read into a hash (for the import's fingerprint)."""

    def __init__(self, inner: BinaryIO, digest: Any, max_bytes: int | None = None) -> None:
        self.inner, self.digest, self.max_bytes, self.read_bytes = inner, digest, max_bytes, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        chunk = self.inner.read(len(buf))
        n = len(chunk)
        self.read_bytes += n
        if self.max_bytes is not None and self.read_bytes > self.max_bytes:
            raise FileTooLarge(f"file larger than the limit of {self.max_bytes:,} bytes; nothing imported")
        buf[:n] = chunk
        self.digest.update(chunk)
        return n


_INSERT_COLS = ("event_id", *COLUMNS, "duplicate", "disposable")


def _writer(conn: Any, event_id: str):  # type: ignore[no-untyped-def]
    """A fast bulk writer on the session's own connection: COPY on PostgreSQL, executemany on SQLite."""
    dbapi = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        sql = f"COPY registrations ({', '.join(_INSERT_COLS)}) FROM STDIN"

        def write_pg(batch: Iterable[tuple]) -> None:
            with dbapi.cursor() as cur, cur.copy(sql) as copy:
                for row in batch:
                    copy.write_row((event_id, *row))

        return write_pg
    sql = f"INSERT INTO registrations ({', '.join(_INSERT_COLS)}) VALUES ({', '.join('?' * len(_INSERT_COLS))})"

    def write_sqlite(batch: list[tuple]) -> None:
        cur = dbapi.cursor()
        cur.executemany(
            sql,
            [(event_id, r[0], r[1], r[2], r[3], r[4], _sqlite_ts(r[5]), int(r[6]), int(r[7])) for r in batch],
        )
        cur.close()

    return write_sqlite


def _sqlite_ts(ts: datetime | None) -> str | None:
    return str(ts.replace(tzinfo=None)) if ts else None  # already UTC; the format SQLAlchemy reads back


def import_file(session: Session, event_id: str, path: str | Path, fmt: str | None = None) -> ImportReport:
    p = Path(path)
    if not p.is_file():
        raise ImportError_(f"{p}: file not found")
    fmt = fmt or ("json" if p.suffix.lower() == ".json" else "csv")
    with p.open("rb") as fh:
        return import_registrations(session, event_id, fh, fmt=fmt, source_name=p.name)
