"""The bounded per-client buffer."""

from __future__ import annotations

import asyncio

from pgpulse.routing.outbox import Outbox


async def test_get_returns_everything_queued_in_one_batch():
    box = Outbox(limit=100)
    box.put(b"a")
    box.put(b"bc")
    assert await box.get() == [b"a", b"bc"]
    assert box.size == 0


async def test_waiting_reader_wakes_on_put():
    box = Outbox(limit=100)
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put(b"x")
    assert await asyncio.wait_for(reader, 1) == [b"x"]


async def test_overflow_closes_with_a_reason_and_frees_memory():
    reasons: list[str] = []
    box = Outbox(limit=10, on_close=reasons.append)
    assert box.put(b"123456")
    assert not box.put(b"123456")
    assert box.closed is not None and "behind" in box.closed
    assert reasons == [box.closed]
    assert box.size == 0
    assert await box.get() == []
    assert not box.put(b"x")


async def test_one_event_larger_than_the_limit_passes_when_caught_up():
    box = Outbox(limit=10)
    assert box.put(b"x" * 1000)
    assert box.closed is None


async def test_drained_waits_for_the_reader():
    box = Outbox(limit=100)
    box.put(b"x" * 60)
    waiter = asyncio.create_task(box.drained(50))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await box.get()
    await asyncio.wait_for(waiter, 1)
