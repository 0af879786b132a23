"""Floor, not a peer: the cheapest one-process broadcast this machine can do.

Why it exists: the latency target compares pgpulse at 1,000 clients with the
raw LISTEN floor (one receiver).  Whether the gap is pgpulse's or the price of
writing to 1,000 sockets from one process is only answerable by measuring the
least any server can do: one asyncpg LISTEN on the tutorial channel (``docs``
in the notify database), and per notification ONE SSE frame, built once from
the payload as it arrived (no JSON re-encoding), written with
``transport.write`` to every connected client.  Notifications that arrive
together (one event-loop iteration, e.g. while the previous fan-out was
writing) go out as one joined write per client, so at high rates it is a floor
too, not a server that falls behind.  uvloop, ``asyncio.Protocol``,
no HTTP library, no per-client task or queue, no flow control (a stalled client
only grows its transport buffer: fine for a measurement, not for production).

The wire format is the tutorial peer's (uvicorn ``StreamingResponse``): HTTP/1.1
chunked, a ``: ready`` comment, then ``event: change\\ndata: <payload>\\n\\n``.

    python -m bench.peers.raw_broadcast --database-url DSN --port 8004
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, cast

import asyncpg

from bench.peers._cli import parse

CHANNEL = "docs"

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"connection: keep-alive\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
HEALTH_BODY = b'{"status":"ok"}'
HEALTH = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%b"
    % (len(HEALTH_BODY), HEALTH_BODY)
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def chunk(body: bytes) -> bytes:
    """One HTTP/1.1 chunk (what uvicorn sends for each streamed body part)."""
    return b"%x\r\n%b\r\n" % (len(body), body)


READY = SSE_HEAD + chunk(b": ready\n\n")


class Broadcast:
    """The connected SSE clients' transports and the one fan-out loop."""

    def __init__(self) -> None:
        self.clients: set[asyncio.Transport] = set()
        self.pending: list[bytes] = []

    def on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        """asyncpg listener: queue the frame; one flush per loop iteration."""
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(f"event: change\ndata: {payload}\n\n".encode())

    def flush(self) -> None:
        """Everything queued, as one chunk, to every client."""
        frame = chunk(b"".join(self.pending))
        self.pending = []
        # A snapshot: a write error may drop a client from the set.
        for transport in tuple(self.clients):
            try:
                transport.write(frame)
            except RuntimeError:  # closed under us; connection_lost follows
                self.clients.discard(transport)


class Client(asyncio.Protocol):
    """One HTTP connection: ``GET /events`` joins the broadcast, ``GET /healthz``
    answers and closes, anything else is a 404."""

    __slots__ = ("broadcast", "head", "transport")

    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport in self.broadcast.clients:
            return  # streaming: nothing more is expected from the client
        self.head += data
        if b"\r\n\r\n" not in self.head:
            if len(self.head) > 65536:
                transport.abort()
            return
        parts = self.head.split(b" ", 2)
        path = parts[1] if len(parts) > 2 else b""
        self.head = b""
        if path == b"/events" or path.startswith(b"/events?"):
            transport.write(READY)
            self.broadcast.clients.add(transport)
        elif path == b"/healthz":
            transport.write(HEALTH)
            transport.close()
        else:
            transport.write(NOT_FOUND)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.broadcast.clients.discard(self.transport)


async def serve(dsn: str, port: int) -> None:
    """Listen for HTTP and on the channel until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    broadcast = Broadcast()
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": "raw-broadcast"}
    )
    await conn.add_listener(CHANNEL, broadcast.on_notify)
    server = await loop.create_server(
        lambda: Client(broadcast), "127.0.0.1", port, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        for transport in tuple(broadcast.clients):
            transport.abort()
        await conn.close(timeout=5)


def main() -> None:
    import uvloop

    args = parse(__doc__ or "")
    uvloop.run(serve(args.database_url, args.port))


if __name__ == "__main__":
    main()
