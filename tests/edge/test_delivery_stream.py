"""The edge's stream identity (issue 8, rows 1-2): one per state file, persisted, sent in every occupancy message;
a reset device (wiped state, clock behind) starts a new stream that the server's rule accepts."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from edge import spool as spool_module
from edge.config import MqttConfig
from edge.publisher import Publisher
from server.sequence import accept
from tests.edge.mqtt_tools import occupancy
from turnout import contract


def publish(state: Path, n: int) -> list[contract.Occupancy]:
    """n occupancy messages through a real Publisher (not connected: they stay in its on-disk queue)."""
    pub = Publisher(MqttConfig(url="mqtt://127.0.0.1:9"), venue="tulsa", camera="north", state_dir=state)
    try:
        for _ in range(n):
            pub.publish_occupancy(occupancy("tulsa", "north", pub.next_seq()))
        return [contract.decode(contract.Occupancy, item.payload) for item in pub.spool.peek(10_000)]
    finally:
        pub.stop(flush_s=0)


def test_stream_is_persisted_per_state_file_and_sent_in_every_message(tmp_path: Path) -> None:
    first = publish(tmp_path / "state", 3)
    streams = {m.stream for m in first}
    assert len(streams) == 1 and None not in streams
    (stream,) = streams
    assert len(stream) == 16 and int(stream, 16) >= 0
    after_restart = publish(tmp_path / "state", 2)[3:]  # same file (kill -9 or restart): same stream, seq goes on
    assert {m.stream for m in after_restart} == {stream}
    assert [m.seq for m in first + after_restart] == list(range(first[0].seq, first[0].seq + 5))
    other = publish(tmp_path / "other", 1)
    assert other[0].stream != stream


def test_reset_device_with_clock_behind_is_accepted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 1 the way it happens: numbers from a good clock, then the state is wiped and the clock is a day behind."""
    before = publish(tmp_path / "state", 5)
    mark = None
    for m in before:
        ok, mark = accept(mark, m.stream, m.seq)
        assert ok
    shutil.rmtree(tmp_path / "state")
    real = time.time
    monkeypatch.setattr(spool_module.time, "time", lambda: real() - 86400)
    after = publish(tmp_path / "state", 3)
    assert after[0].seq < before[-1].seq, "the clock is behind: seq restarts lower"
    applied = []
    for m in after:
        ok, mark = accept(mark, m.stream, m.seq)
        applied.append(ok)
    assert applied == [True, True, True]
    assert accept(mark, before[-1].stream, before[-1].seq)[0] is False, "a late old message must not switch back"


def test_an_explicit_stream_is_kept(tmp_path: Path) -> None:
    pub = Publisher(MqttConfig(url="mqtt://127.0.0.1:9"), venue="tulsa", camera="north", state_dir=tmp_path)
    try:
        msg = occupancy("tulsa", "north", pub.next_seq()).model_copy(update={"stream": "sim-1"})
        pub.publish_occupancy(msg)
        assert json.loads(pub.spool.peek(1)[0].payload)["stream"] == "sim-1"
    finally:
        pub.stop(flush_s=0)


def test_seq_of_a_new_file_stays_within_the_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock far in the future (a broken RTC) must not start seq beyond what the contract accepts."""
    monkeypatch.setattr(spool_module.time, "time", lambda: 1e16)
    msgs = publish(tmp_path, 2)
    assert all(m.seq < contract.SEQ_LIMIT for m in msgs)
