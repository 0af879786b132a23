"""A worker reads every partition the database leases to it, whatever the
order its beats were answered in (a partition leased but never read would
stall its rows for good)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

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


def test_a_worker_without_partitions_waits_and_lets_its_beats_run():
    """A wake-up (a change committed) while a worker holds no partition must
    not spin its loop: the beats that would lease it partitions must run.
    Run in a thread, so a loop that never yields fails the test instead of
    hanging it."""
    beats: list[int] = []

    async def scenario() -> None:
        worker = Consumer("postgresql://unused", "g", ["orders"], partitions=4)
        worker._resets_seen = 0
        worker._wake.set()  # a change to the group's table arrived

        async def beat() -> None:
            for _ in range(3):
                await asyncio.sleep(0.01)
                beats.append(1)
            worker._apply_beat(Beat(positions={}, gained=set()))
            worker._closed = True  # stop: the loop ends at its next pass
            worker._wake.set()

        beater = asyncio.create_task(beat())
        with contextlib.suppress(StopAsyncIteration):
            await worker.__anext__()
        await beater

    thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the worker's loop spun without yielding"
    assert len(beats) == 3
