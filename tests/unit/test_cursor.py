"""Snapshot cursors: parsing, encoding, and the visibility rules resume relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpulse.exceptions import CursorError
from pgpulse.log.cursor import Cursor, Snapshot


def test_snapshot_round_trips_through_postgres_text_form():
    snap = Snapshot.parse("10:20:12,15")
    assert snap == Snapshot(10, 20, frozenset({12, 15}))
    assert str(snap) == "10:20:12,15"
    assert str(Snapshot.parse("7:7:")) == "7:7:"


def test_visibility_follows_postgres_rules():
    snap = Snapshot.parse("10:20:12,15")
    assert snap.visible(9)  # before xmin: committed before the snapshot
    assert snap.visible(11)
    assert not snap.visible(12)  # in progress at the snapshot
    assert not snap.visible(20)  # started after
    assert not snap.visible(25)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "1:2",
        "5:3:",
        "1:5:7",
        "1:5:0",
        "1:2:3~",
        "1:2:~1:2:~x",
        "9:9:~1:1:~3",
        "a:b:c",
        "1:2:3,",
        "1" * 30 + ":2:",
    ],
)
def test_malformed_cursors_are_rejected_with_a_message(text):
    with pytest.raises(CursorError, match=r"cursor|snapshot"):
        Cursor.decode(text)


def test_event_cursor_marks_what_was_seen_in_the_batch():
    prev, snap = Snapshot.parse("10:12:"), Snapshot.parse("10:15:13")
    cursor = Cursor(prev, snap, after_id=100)
    assert Cursor.decode(cursor.encode()) == cursor
    assert cursor.seen(11, 500)  # visible before the batch
    assert cursor.seen(12, 99)  # in the batch, at or before the event
    assert not cursor.seen(12, 101)  # in the batch, after the event
    assert not cursor.seen(13, 1)  # still in progress at the batch snapshot
    assert not cursor.seen(16, 1)  # after the batch


def test_point_cursor_means_everything_visible_was_seen():
    cursor = Cursor.point(Snapshot.parse("10:15:13"))
    assert cursor.is_point and Cursor.decode(cursor.encode()) == cursor
    assert cursor.seen(14, 10**9)
    assert not cursor.seen(13, 1)


xids = st.integers(min_value=3, max_value=10**6)


@given(st.data())
def test_encode_decode_is_lossless(data):
    xmin = data.draw(xids)
    xmax = xmin + data.draw(st.integers(0, 50))
    xip = data.draw(st.frozensets(st.integers(xmin, max(xmin, xmax - 1)), max_size=5))
    xip = frozenset(x for x in xip if xmin <= x < xmax)
    snap = Snapshot(xmin, xmax, xip)
    assert Snapshot.parse(str(snap)) == snap
    cursor = Cursor(snap, Snapshot(xmax, xmax + 3, frozenset()), data.draw(xids))
    assert Cursor.decode(cursor.encode()) == cursor


def test_covers_is_a_safe_superset_test():
    old, new = Snapshot.parse("10:15:12"), Snapshot.parse("15:18:")
    assert new.covers(old)
    assert not old.covers(new)
    assert all(new.visible(x) for x in range(1, 15) if old.visible(x))
