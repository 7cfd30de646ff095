"""The store-and-forward queue: order, bound and overflow policy, persistence, seq across restarts and kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edge.spool import Spool


def fill(spool: Spool, n: int) -> list[int]:
    """Put `n` messages, each under a fresh seq; return the seqs in put order."""
    seqs = []
    for _ in range(n):
        seq = spool.next_seq()
        spool.put("t/occupancy", f'{{"seq":{seq}}}'.encode(), seq)
        seqs.append(seq)
    return seqs


def test_fifo_order_and_ack(tmp_path: Path) -> None:
    with Spool(tmp_path / "q.sqlite") as spool:
        seqs = fill(spool, 6)
        assert [i.seq for i in spool.peek(10)] == seqs
        assert spool.peek(1)[0].payload == f'{{"seq":{seqs[0]}}}'.encode()
        first_two = spool.peek(2)
        spool.ack(*(i.id for i in first_two))
        assert [i.seq for i in spool.peek(10)] == seqs[2:]
        assert [i.seq for i in spool.peek(2, after_id=spool.peek(1)[0].id)] == seqs[3:5]
        assert len(spool) == 4
        spool.ack(first_two[0].id)  # already gone: ignored, count unchanged
        assert len(spool) == 4


def test_drop_oldest_keeps_the_newest_and_counts(tmp_path: Path) -> None:
    with Spool(tmp_path / "q.sqlite", max_messages=10, overflow="drop_oldest") as spool:
        seqs = fill(spool, 15)
        assert len(spool) == 10
        assert spool.dropped == 5
        assert [i.seq for i in spool.peek(100)] == seqs[5:]


def test_drop_newest_keeps_the_oldest_and_counts(tmp_path: Path) -> None:
    with Spool(tmp_path / "q.sqlite", max_messages=10, overflow="drop_newest") as spool:
        accepted = []
        for _ in range(15):
            seq = spool.next_seq()
            accepted.append(spool.put("t", b"x", seq))
        assert accepted == [True] * 10 + [False] * 5
        assert len(spool) == 10
        assert spool.dropped == 5
        assert [i.seq for i in spool.peek(100)] == sorted(i.seq for i in spool.peek(100))


def test_queue_dropped_and_seq_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    with Spool(path, max_messages=10) as spool:
        seqs = fill(spool, 12)
        last = spool.last_seq
    with Spool(path, max_messages=10) as spool:
        assert [i.seq for i in spool.peek(100)] == seqs[2:]
        assert spool.dropped == 2
        assert spool.last_seq == last
        assert spool.next_seq() == last + 1


def test_seq_is_strictly_increasing_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    seen: list[int] = []
    for _ in range(3):
        with Spool(path) as spool:
            seen += [spool.next_seq() for _ in range(4)]
    assert seen == list(range(seen[0], seen[0] + 12))


def test_new_file_starts_above_a_wiped_one(tmp_path: Path) -> None:
    """A wiped state folder must not make the device reuse seqs the server has already seen."""
    path = tmp_path / "q.sqlite"
    with Spool(path) as spool:
        old = spool.next_seq()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    time.sleep(0.01)
    with Spool(path) as spool:
        assert spool.next_seq() > old


def test_concurrent_producer_and_consumer_keep_order(tmp_path: Path) -> None:
    with Spool(tmp_path / "q.sqlite") as spool:
        produced: list[int] = []
        consumed: list[int] = []

        def produce() -> None:
            produced.extend(fill(spool, 60))

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.monotonic() + 20
        while (producer.is_alive() or len(spool)) and time.monotonic() < deadline:
            items = spool.peek(5)
            consumed += [i.seq for i in items]
            spool.ack(*(i.id for i in items))
        producer.join()
        assert consumed == produced


def test_committed_messages_and_seq_survive_kill_9(tmp_path: Path) -> None:
    """A producer killed with SIGKILL loses nothing it reported as committed, and no seq is reused."""
    path = tmp_path / "q.sqlite"
    code = textwrap.dedent(
        f"""
        import sys
        from edge.spool import Spool
        spool = Spool({str(path)!r})
        while True:
            seq = spool.next_seq()
            spool.put("t", str(seq).encode(), seq)
            print(seq, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = [int(proc.stdout.readline()) for _ in range(30)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with Spool(path) as spool:
        queued = [i.seq for i in spool.peek(1_000_000)]
        assert set(reported) <= set(queued)
        assert queued == list(range(queued[0], queued[-1] + 1))
        assert spool.next_seq() > queued[-1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_messages": 0}, "max_messages"), ({"overflow": "drop_all"}, "overflow")],
)
def test_bad_bound_is_rejected(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Spool(tmp_path / "q.sqlite", **kwargs)


def test_unwritable_location_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="file"):
        Spool(blocker / "q.sqlite")
