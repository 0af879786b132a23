"""A worker reads every partition the database leases to it, whatever the
order its beats were answered in (a partition leased but never read would
stall its rows for good)."""

from __future__ import annotations

from pgpulse.consumers.consumer import Consumer
from pgpulse.consumers.membership import Beat


def _worker() -> Consumer:
    worker = Consumer("postgresql://unused", "g", ["orders"], partitions=4)
    worker._apply_beat(Beat(positions={0: "a", 1: "b"}, gained={0, 1}))
    return worker


def test_a_leased_partition_not_reported_as_gained_is_still_read():
    worker = _worker()
    # The lease of partition 2 was taken by a beat whose answer was not
    # applied; the next beat reports it as held, not as gained.
    worker._apply_beat(Beat(positions={0: "a", 1: "b", 2: "c"}, gained=set()))
    assert worker.positions == {0: "a", 1: "b", 2: "c"}
    assert worker._wake.is_set()


def test_a_partition_no_longer_leased_is_dropped_and_local_positions_kept():
    worker = _worker()
    worker.positions[0] = "a2"  # acknowledged since the beat
    worker._apply_beat(Beat(positions={0: "a2", 3: "d"}, gained={3}))
    assert worker.positions == {0: "a2", 3: "d"}
