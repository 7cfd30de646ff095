"""Which occupancy messages the server applies: the per-camera sequence rule (docs/mqtt.md, "Sequence rule").

Pure functions, no I/O: the caller keeps one `SeqMark` per camera (in memory and in the database) and calls
`accept` for every decoded occupancy message, in arrival order.

The rule
--------
An edge numbers its occupancy messages with ``seq`` (``0 <= seq < 2**53``, enforced by the contract) within
a **stream**: the identity of its seq counter (``Occupancy.stream``, one random id per edge state file; an
edge without it, contract v1 before streams, is the stream ``None``). A message is applied when

1. the camera has no mark yet (first message ever), or
2. it belongs to the camera's current stream and its ``seq`` is larger than the last applied one, or
3. it belongs to a **new** stream: one that is neither the current stream nor the one retired just before it.
   The new stream becomes current whatever its ``seq`` (smaller numbers included), and the old one is
   retired.

Everything else is refused: a repeat or an older ``seq`` of the current stream (at-least-once duplicates,
re-deliveries) and any message of the retired stream (a late duplicate from before the device was reset must
not switch the camera back). So a device reset, a wiped state folder or a clock that was wrong when the state
file was created starts a new stream that is accepted at once; no single ``seq`` value can lock a camera out,
because the next new stream is accepted regardless of it. Forged streams from other clients are stopped by
the broker's ACL (a camera user writes only its own topic).
"""

from __future__ import annotations

from dataclasses import dataclass

LEGACY = ""
"""How a retired stream ``None`` (an edge without ``stream``) is written in `SeqMark.retired`: never a stream id."""


@dataclass(frozen=True)
class SeqMark:
    """Where a camera's sequence stands: its current stream, the last applied seq, and the retired stream.

    Persist the three fields per camera (e.g. columns ``last_stream``, ``last_seq``, ``prev_stream``; all
    nullable, ``last_seq`` a 64-bit integer). ``stream`` is ``None`` for edges that send no ``stream`` field;
    ``retired`` is ``None`` when no stream was retired yet and `LEGACY` (``""``) when that was the ``None`` one.
    """

    stream: str | None
    seq: int
    retired: str | None = None


def _key(stream: str | None) -> str:
    return LEGACY if stream is None else stream


def accept(last: SeqMark | None, stream: str | None, seq: int) -> tuple[bool, SeqMark]:
    """Apply the sequence rule to one message; return ``(applied, mark to keep)``.

    ``last`` is the camera's mark (``None``: nothing applied yet). When the message is refused the returned
    mark is ``last`` itself.
    """
    if last is None:
        return True, SeqMark(stream, seq)
    if stream == last.stream:
        if seq > last.seq:
            return True, SeqMark(stream, seq, last.retired)
        return False, last
    if last.retired is not None and _key(stream) == last.retired:
        return False, last  # a late message of the stream this camera already left
    return True, SeqMark(stream, seq, _key(last.stream))
