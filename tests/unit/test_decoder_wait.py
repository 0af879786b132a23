"""The wal decoder watches its replication socket only while it waits for data.

Readiness is level-triggered: a reader left registered while data waits unread
(the decoder busy awaiting its log write) fires on every event-loop iteration,
and under load the gateway's loop never slept (~60,000 epoll calls a second).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from pgpulse.capture.decoder import _readable


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def test_returns_once_data_waits_and_leaves_no_reader(sockets):
    reader, writer = sockets
    loop = asyncio.get_running_loop()
    writer.send(b"x")
    started = time.monotonic()
    await _readable(loop, reader.fileno(), 5.0)
    assert time.monotonic() - started < 1.0
    # Nothing left registered: the data stays unread, and nobody is woken by it.
    assert loop.remove_reader(reader.fileno()) is False


async def test_gives_up_after_the_timeout_without_raising(sockets):
    reader, _writer = sockets
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await _readable(loop, reader.fileno(), 0.05)
    assert time.monotonic() - started >= 0.04
    assert loop.remove_reader(reader.fileno()) is False


async def test_a_cancelled_wait_leaves_no_reader(sockets):
    reader, _writer = sockets
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(_readable(loop, reader.fileno(), 60.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.remove_reader(reader.fileno()) is False
