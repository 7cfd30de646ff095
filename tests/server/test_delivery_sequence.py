"""Sequence numbers that cannot lock a camera out (issue 8, rows 1 and 2): the contract bound on `seq`, the
optional `stream`, and the pure acceptance rule in server/sequence.py."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from server.sequence import LEGACY, SeqMark, accept
from tests.edge.mqtt_tools import occupancy
from turnout import contract

A, B, C = "0123456789abcdef", "fedcba9876543210", "00000000000000c1"


def body(**kw: object) -> bytes:
    data = json.loads(occupancy("tulsa", "north", 1).to_json())
    data.update(kw)
    return json.dumps(data).encode()


# ----------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("seq", [2**63 - 1, 10**30, 2**53, -1])
def test_out_of_range_seq_is_refused_at_the_boundary(seq: int) -> None:
    """Rows 1 and 2: 2^63-1 used to lock the camera out, 10^30 to stop every save with OverflowError."""
    with pytest.raises(contract.PayloadError, match="seq"):
        contract.decode(contract.Occupancy, body(seq=seq))
    schema = contract.json_schema()["$defs"]["occupancy"]
    assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(body(seq=seq)))


def test_largest_seq_and_stream_are_accepted_and_stream_is_optional() -> None:
    msg = contract.decode(contract.Occupancy, body(seq=2**53 - 1, stream=A))
    assert (msg.seq, msg.stream) == (2**53 - 1, A)
    legacy = contract.decode(contract.Occupancy, body(seq=5))  # a v1 edge from before streams
    assert legacy.stream is None and b"stream" not in legacy.to_json()
    for bad in ("", "a b", "x" * 65, 7):
        with pytest.raises(contract.PayloadError, match="stream"):
            contract.decode(contract.Occupancy, body(stream=bad))


@pytest.mark.parametrize("camera", sorted(contract.RESERVED_CAMERA_IDS))
def test_reserved_camera_ids_are_refused(camera: str) -> None:
    with pytest.raises(contract.PayloadError, match="reserved"):
        contract.decode(contract.Occupancy, body(camera=camera))
    with pytest.raises(ValueError, match="reserved"):
        contract.occupancy_topic("tulsa", camera)
    with pytest.raises(ValueError, match="reserved"):
        contract.parse_topic(f"turnout/v1/tulsa/{camera}/occupancy")
    schema = contract.json_schema()["$defs"]["occupancy"]
    assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(body(camera=camera)))
    contract.decode(contract.Occupancy, body(camera=f"{camera}-2"))  # only the exact words


# ------------------------------------------------------------------------------------------- the rule
def test_first_message_and_increasing_seqs_within_a_stream() -> None:
    ok, mark = accept(None, A, 100)
    assert ok and mark == SeqMark(A, 100)
    ok, mark = accept(mark, A, 101)
    assert ok and mark == SeqMark(A, 101)
    for seq in (101, 100, 0):  # repeats and older: at-least-once duplicates
        refused, same = accept(mark, A, seq)
        assert not refused and same is mark


def test_row_1_a_huge_seq_no_longer_locks_the_camera_out() -> None:
    """The largest legal seq, then the device is reset (new state file, clock behind): the new stream wins."""
    ok, mark = accept(None, A, 2**53 - 1)
    assert ok
    assert accept(mark, A, 2**53 - 1)[0] is False
    ok, mark = accept(mark, B, 1_700_000_000_000)  # smaller seq, new stream
    assert ok and mark == SeqMark(B, 1_700_000_000_000, A)
    ok, mark = accept(mark, B, 1_700_000_000_001)
    assert ok
    late, same = accept(mark, A, 2**53 - 1)  # a late duplicate of the old stream does not switch back
    assert not late and same is mark
    assert accept(mark, A, 5)[0] is False


def test_edges_without_stream_keep_the_old_rule_and_can_move_to_streams() -> None:
    ok, mark = accept(None, None, 10)
    assert ok and accept(mark, None, 10) == (False, mark) and accept(mark, None, 9) == (False, mark)
    ok, mark = accept(mark, None, 11)
    assert ok and mark == SeqMark(None, 11)
    ok, mark = accept(mark, A, 3)  # the edge is upgraded: its state file gets a stream
    assert ok and mark == SeqMark(A, 3, LEGACY)
    assert accept(mark, None, 12)[0] is False  # a late message of the legacy stream
    ok, mark = accept(mark, B, 1)
    assert ok and mark.retired == A
    assert accept(mark, A, 4)[0] is False


def test_the_rule_matches_a_reference_model_on_random_traffic() -> None:
    """Random streams, duplicates and resets: applied messages are exactly those the documented rule names."""
    rng = random.Random(8)
    streams = [A, B, C, None]
    mark: SeqMark | None = None
    current: str | None = None
    last = -1
    retired: list[str | None] = []
    for _ in range(5000):
        stream = rng.choice(streams)
        seq = rng.randrange(0, 50)
        applied, new = accept(mark, stream, seq)
        if mark is None:
            expected = True
        elif stream == current:
            expected = seq > last
        else:
            expected = not (retired and retired[-1] == stream)
        assert applied is expected, (mark, stream, seq)
        if applied:
            if mark is not None and stream != current:
                retired.append(current)
            current, last = stream, seq
        else:
            assert new is mark
        mark = new
        assert (mark.stream, mark.seq) == (current, last)
