"""Shutdown ends every task, even one that swallowed its cancellation.

On Python 3.11, ``asyncio.wait_for`` returns normally when a cancellation lands
just as what it waits for completes; a loop around it (the listener's) then ran
on and the gateway's shutdown waited forever (``pgpulse tail`` ignoring Ctrl-C,
seen under load).
"""

from __future__ import annotations

import asyncio

import pytest

from pgpulse.gateway import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again():
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, again_after=0.05), 5)
    assert task.cancelled()
    assert cancels == 2


async def test_a_loop_around_wait_for_stops_when_its_wake_up_and_the_cancel_meet():
    wake = asyncio.Event()
    rounds = 0

    async def follow() -> None:
        nonlocal rounds
        while True:
            try:
                await asyncio.wait_for(wake.wait(), 3600)
            except TimeoutError:
                pass
            wake.clear()
            rounds += 1

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    wake.set()
    await asyncio.sleep(0)  # the wake-up completes what wait_for waits for...
    # ...and the cancel lands before wait_for has returned.
    await asyncio.wait_for(cancel_and_wait(task, again_after=0.05), 5)
    assert task.done()


async def test_the_error_a_task_ended_with_is_not_raised_again():
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    with pytest.raises(RuntimeError, match="boom"):
        task.result()
