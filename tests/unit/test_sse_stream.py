"""The SSE writer: synchronous writes when possible, ordered hand-over when not.

A fake ASGI ``send`` (as in Starlette's own disconnect tests) stands in for the
server; it can suspend like uvicorn's does when flow control pauses writing.
"""

from __future__ import annotations

import asyncio

from pgpulse.routing.outbox import Outbox
from pgpulse.server.sse import DirectStream


async def _setup(blocked: asyncio.Event | None = None):
    sent: list[bytes] = []
    gate = {"blocked": blocked}

    async def send(message):
        if gate["blocked"] is not None:
            await gate["blocked"].wait()
        sent.append(message["body"])

    stream = DirectStream(send, "test client", None)
    outbox = Outbox(1000, stream.on_close)
    stream.outbox = outbox
    outbox.direct = stream.write_now
    attach = asyncio.create_task(asyncio.sleep(0))
    await attach
    runner = asyncio.create_task(stream.run(attach))
    await asyncio.sleep(0)
    return sent, gate, outbox, runner


async def test_flush_writes_synchronously_without_waking_the_task():
    sent, _gate, outbox, runner = await _setup()
    assert outbox.put_deferred(b"a")
    assert not outbox.put_deferred(b"b")  # already dirty: one flush for both
    outbox.flush()
    assert sent == [b"ab"]  # one write, before any task ran
    runner.cancel()


async def test_pushed_back_write_is_finished_by_the_task_in_order():
    gate = asyncio.Event()
    sent, state, outbox, runner = await _setup()
    outbox.put_deferred(b"1")
    outbox.flush()
    state["blocked"] = gate
    outbox.put_deferred(b"2")
    outbox.flush()  # suspends inside send: handed to the task
    outbox.put_deferred(b"3")
    outbox.flush()  # a write is in flight: stays queued for the task
    outbox.put(b"4")
    await asyncio.sleep(0.01)
    assert sent == [b"1"]
    state["blocked"] = None
    gate.set()
    await asyncio.sleep(0.01)
    assert sent == [b"1", b"2", b"34"]
    runner.cancel()


async def test_overflow_while_pushed_back_closes_the_stream():
    gate = asyncio.Event()
    sent, state, outbox, runner = await _setup()
    state["blocked"] = gate
    outbox.put_deferred(b"x" * 10)
    outbox.flush()
    for _ in range(200):
        outbox.put_deferred(b"y" * 10)
    assert outbox.closed is not None and "behind" in outbox.closed
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert sent == []
