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
Phones are compared by their last 10 digits; digits of any script (Arabic-Indic, Persian, fullwidth, ...)
are read as the ASCII digits they stand for, so the same number written two ways is a duplicate.

Streaming: the file is read row by row (CSV with the ``csv`` module, JSON with the incremental ``ijson``
parser), so memory stays bounded whatever the file size (the duplicate check keeps 8 bytes per distinct
email/phone in sorted numpy runs). Rows are written in chunks, each in its own short transaction, under a
new *import generation* (``registrations.import_id``) that readers do not see; one short transaction then
points the event's summary at the new generation, and the previous generation is deleted in chunks. The
database write lock is never held for longer than one chunk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import statistics
import threading
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.db.models import Event, RegistrationSummary

MAX_REPORTED_ERRORS = 200
CHUNK = 5_000  # rows per write transaction (a few tens of ms of write lock on SQLite)
DELETE_CHUNK = 20_000
MAX_TICKET_TYPES = 1_000
_RUN_MAX = 1 << 20  # keys per sorted run of the duplicate check (merges stay small)
_EMAIL_RE = re.compile(r"^[^@\s,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_PHONE_STRIP = str.maketrans("", "", " -().+/\u00a0\u200e\u200f\u202a\u202c")
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
    """Yield ``(row_number, raw_row)``; CSV rows are numbered by line (header = 1), JSON from 1.

    Both formats are streamed: memory does not grow with the file.
    """
    if fmt == "json":
        yield from _read_json(data)
        return
    text_ = io.TextIOWrapper(data, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text_)
        header = next(reader, None)
        if header is None:
            raise ImportError_("empty file: expected a header row")
        names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
        first: dict[str, int] = {}
        for i, n in enumerate(names):
            if n in first:
                j = first[n]
                raise ImportError_(
                    f"header names the column {n!r} twice (column {j + 1} {header[j].strip()!r} and column "
                    f"{i + 1} {header[i].strip()!r}); keep one"
                )
            first[n] = i
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


def _read_json(data: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """A JSON list of objects, or ``{"registrations": [...]}``, parsed incrementally (ijson)."""
    import ijson

    reader = data if isinstance(data, io.BufferedReader) else io.BufferedReader(data)  # type: ignore[arg-type]
    head = reader.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"[":
        prefix = "item"
    elif head == b"{":
        prefix = "registrations.item"
    elif not head:
        raise ImportError_("empty file: expected a JSON list of registrations")
    else:
        raise ImportError_('expected a JSON list of registrations (or {"registrations": [...]})')
    n = 0
    try:
        for n, item in enumerate(ijson.items(reader, prefix, use_float=True), 1):
            yield n, item if isinstance(item, dict) else {"__invalid__": item}
    except FileTooLarge:
        raise
    except (ijson.JSONError, UnicodeDecodeError, ValueError) as exc:
        raise ImportError_(f"not valid UTF-8 JSON: {exc}") from None
    if n == 0 and head == b"{":
        raise ImportError_('expected a JSON list of registrations (or {"registrations": [...]})')


def normalise_phone(phone: Any) -> str | None:
    """ASCII digits of a phone number (digits of any script converted), or None when it is not one."""
    raw = str(phone).translate(_PHONE_STRIP)
    if not raw or not raw.isdecimal():  # isdecimal: no superscripts or other non-decimal "digits"
        return None
    digits = raw if raw.isascii() else "".join(str(unicodedata.decimal(c)) for c in raw)
    return digits if 7 <= len(digits) <= 15 else None


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
        digits = normalise_phone(phone)
        if digits is None:
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
class _SeenKeys:
    """A set of 64-bit keys in sorted numpy runs: 8 bytes per distinct key, bounded merge cost."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def add_and_check(self, keys: np.ndarray) -> np.ndarray:
        """Add ``keys`` (in order); return which of them were seen before (earlier in ``keys`` or an earlier call)."""
        if keys.size == 0:
            return np.zeros(0, dtype=bool)
        uniq, first = np.unique(keys, return_index=True)
        dup = np.ones(keys.size, dtype=bool)
        dup[first] = False
        seen_before = np.zeros(uniq.size, dtype=bool)
        for run in self.runs:
            idx = np.searchsorted(run, uniq)
            idx[idx == run.size] = run.size - 1
            seen_before |= run[idx] == uniq
        dup[first[seen_before]] = True
        new = uniq[~seen_before]
        if new.size:
            self.runs.append(new)
            # merge the newest runs while they are of similar size (like a binary counter), up to _RUN_MAX
            while (
                len(self.runs) > 1
                and self.runs[-2].size <= 2 * self.runs[-1].size
                and self.runs[-2].size + self.runs[-1].size <= _RUN_MAX
            ):
                b, a = self.runs.pop(), self.runs.pop()
                merged = np.concatenate((a, b))
                merged.sort()
                self.runs.append(merged)
        return dup


def _email_key(email: str) -> int:
    digest = hashlib.blake2b(normalise_email(email).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@dataclass
class _Quality:
    disposable_domains: frozenset[str]
    emails: _SeenKeys = field(default_factory=_SeenKeys)
    phones: _SeenKeys = field(default_factory=_SeenKeys)
    by_ticket: Counter[str] = field(default_factory=Counter)
    per_minute: Counter[int] = field(default_factory=Counter)
    duplicates: int = 0
    disposable: int = 0
    dup_or_disp: int = 0

    def flags(self, batch: list[tuple]) -> list[tuple]:
        """Rows ``(ref, email, phone, name, ticket, when)`` in file order -> the same with ``duplicate, disposable``."""
        n = len(batch)
        dup = np.zeros(n, dtype=bool)
        for column, seen, key in ((1, self.emails, _email_key), (2, self.phones, lambda p: int(p[-10:]))):
            pos = [i for i, r in enumerate(batch) if r[column] is not None]
            if pos:
                keys = np.fromiter((key(batch[i][column]) for i in pos), dtype=np.int64, count=len(pos))
                dup[pos] |= seen.add_and_check(keys)
        out = []
        for i, r in enumerate(batch):
            email, ticket, when = r[1], r[4], r[5]
            disp = email is not None and email.rpartition("@")[2] in self.disposable_domains
            d = bool(dup[i])
            self.duplicates += d
            self.disposable += disp
            self.dup_or_disp += d or disp
            self.by_ticket[ticket] += 1
            if when is not None:
                self.per_minute[int(when.timestamp() // 60)] += 1
            out.append((*r, d, disp))
        if len(self.by_ticket) > MAX_TICKET_TYPES:
            raise ImportError_(f"more than {MAX_TICKET_TYPES} different ticket types; is ticket_type the right column?")
        return out

    def burst_excess(self, factor: float, minimum: int) -> int:
        if not self.per_minute:
            return 0
        median = statistics.median(self.per_minute.values())
        limit = max(minimum, factor * median)
        return int(sum(c - median for c in self.per_minute.values() if c > limit))


_active_imports: Counter[str] = Counter()  # event id -> imports running in this process
_active_lock = threading.Lock()


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
    session.rollback()  # no transaction (and no lock) held while the file is read
    with _active_lock:
        alone = _active_imports[event_id] == 0
        _active_imports[event_id] += 1
    try:
        if alone:
            _delete_orphans(session, event_id)
        return _import(session, event_id, data, fmt, source_name, burst_factor, burst_min, max_bytes)
    finally:
        with _active_lock:
            _active_imports[event_id] -= 1


def _import(
    session: Session,
    event_id: str,
    data: BinaryIO,
    fmt: str,
    source_name: str,
    burst_factor: float,
    burst_min: int,
    max_bytes: int | None,
) -> ImportReport:
    digest = hashlib.sha256()
    data = io.BufferedReader(_Hashing(data, digest, max_bytes), 1 << 20)  # type: ignore[assignment]
    quality = _Quality(_disposable_domains())
    import_id = uuid.uuid4().hex
    errors: list[RowError] = []
    error_count = 0
    rows = imported = 0
    wrote = False

    def write(batch: list[tuple]) -> None:
        nonlocal imported, wrote
        flagged = quality.flags(batch)
        wrote = True
        _writer(session.connection(), event_id, import_id)(flagged)
        session.commit()  # one short write transaction per chunk
        imported += len(flagged)

    try:
        batch: list[tuple] = []
        for line, raw in read_rows(data, fmt):
            rows += 1
            valid = validate(line, raw, errors if len(errors) < MAX_REPORTED_ERRORS else [])
            if valid is None:
                error_count += 1
                batch = []
                continue
            if error_count:
                continue  # keep validating to report every bad row, but write nothing more
            batch.append(valid)
            if len(batch) >= CHUNK:
                write(batch)
                batch = []
        if error_count:
            _delete_generation(session, event_id, import_id)
            return ImportReport(False, rows, 0, error_count, errors)
        if rows == 0:
            raise ImportError_("no registrations in the file")
        if batch:
            write(batch)
        burst = quality.burst_excess(burst_factor, burst_min)
        suspect = min(imported, quality.dup_or_disp + burst)
        # the swap: one short transaction points the event at the new generation
        previous = session.scalar(
            select(RegistrationSummary.import_id).where(RegistrationSummary.event_id == event_id)
        )
        had_summary = session.get(RegistrationSummary, event_id) is not None
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
            import_id=import_id,
        )
        session.merge(summary)
        session.commit()
    except BaseException:
        session.rollback()
        if wrote:
            _delete_generation(session, event_id, import_id)
        raise
    _delete_generation(session, event_id, previous, legacy=not had_summary or previous is None)
    return ImportReport(True, rows, imported, 0, [], summary_dict(summary))


def visible_import_id(session: Session, event_id: str) -> tuple[bool, str | None]:
    """``(has_rows, import_id)``: the generation of ``event_id``'s registrations that readers see."""
    row = session.get(RegistrationSummary, event_id)
    return (row is not None, row.import_id if row is not None else None)


def _delete_generation(session: Session, event_id: str, import_id: str | None, legacy: bool = False) -> None:
    """Delete one generation of an event's rows, in chunks (each its own short transaction)."""
    session.rollback()
    cond = "import_id IS NULL" if import_id is None else "import_id = :gen"
    if import_id is None and not legacy:
        return
    sql = text(
        f"DELETE FROM registrations WHERE pk IN (SELECT pk FROM registrations WHERE event_id = :ev AND {cond} "
        f"LIMIT {DELETE_CHUNK})"
    )
    while True:
        n = session.execute(sql, {"ev": event_id, "gen": import_id}).rowcount
        session.commit()
        if not n or n < DELETE_CHUNK:
            return


def _delete_orphans(session: Session, event_id: str) -> None:
    """Rows of generations that no summary points at (an import interrupted by a crash)."""
    current = session.scalar(select(RegistrationSummary.import_id).where(RegistrationSummary.event_id == event_id))
    has_summary = session.get(RegistrationSummary, event_id) is not None
    gens = session.execute(
        text("SELECT DISTINCT import_id FROM registrations WHERE event_id = :ev"), {"ev": event_id}
    ).scalars()
    stale = [g for g in gens if not (has_summary and g == current)]
    session.rollback()
    for gen in stale:
        _delete_generation(session, event_id, gen, legacy=True)


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


_INSERT_COLS = ("event_id", *COLUMNS, "duplicate", "disposable", "import_id")


def _writer(conn: Any, event_id: str, import_id: str):  # type: ignore[no-untyped-def]
    """A fast bulk writer on the session's own connection: COPY on PostgreSQL, executemany on SQLite."""
    dbapi = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        sql = f"COPY registrations ({', '.join(_INSERT_COLS)}) FROM STDIN"

        def write_pg(batch: Iterable[tuple]) -> None:
            with dbapi.cursor() as cur, cur.copy(sql) as copy:
                for row in batch:
                    copy.write_row((event_id, *row, import_id))

        return write_pg
    sql = f"INSERT INTO registrations ({', '.join(_INSERT_COLS)}) VALUES ({', '.join('?' * len(_INSERT_COLS))})"

    def write_sqlite(batch: list[tuple]) -> None:
        cur = dbapi.cursor()
        cur.executemany(
            sql,
            [
                (event_id, r[0], r[1], r[2], r[3], r[4], _sqlite_ts(r[5]), int(r[6]), int(r[7]), import_id)
                for r in batch
            ],
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
