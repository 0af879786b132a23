"""The load generator: thousands of streaming clients in a few worker processes.

Why raw sockets: an httpx client per connection costs tens of KB and a few
hundred microseconds per event, so 10,000 of them would measure httpx, not the
server.  Each client here is an ``asyncio.Protocol`` on uvloop that sends one
HTTP request (SSE) or WebSocket upgrade and then only *counts* the changes it
receives: every change payload of every system under test carries the row's
``"seq"`` key exactly once, so counting that marker in the raw byte stream (SSE
framing, chunked encoding and WebSocket frame headers never split it) is a
protocol-agnostic delivery count.  A subset of clients, the *sampled* ones, also
extracts each ``seq`` and stamps it with ``time.monotonic_ns()`` (CLOCK_MONOTONIC
is system-wide on Linux, so it can be compared with the writer's commit stamps).

Workers are separate processes (``spawn``) driven over a pipe by
:class:`LoadGen`; each reports its own CPU time so the results can say whether
the generator was the bottleneck.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import socket
import struct
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench._proc import pipe_reader, raise_nofile

__all__ = ["LoadGen", "Target", "WorkerStats"]

SEQ_MARK = b'"seq"'
SEQ_RE = re.compile(rb'"seq": ?(\d+)[,}]')
READY_MARK = b"ready"
_LINGER0 = struct.pack("ii", 1, 0)


@dataclass
class Target:
    """Where and how clients connect."""

    port: int
    path: str
    protocol: str = "sse"
    """``sse`` (HTTP GET, text/event-stream) or ``ws`` (WebSocket upgrade)."""
    host: str = "127.0.0.1"
    paths: list[str] | None = None
    """One path per client (filtered subscriptions); overrides *path*."""
    ready: bytes = READY_MARK
    """What the server sends once the client is set up (``ready`` on a change
    stream, ``snapshot`` on a live query)."""
    last_event_id: str | None = None
    """SSE: resume from this event id (the missed changes arrive after
    ``ready`` and count as received)."""

    def request(self, index: int) -> bytes:
        path = self.paths[index % len(self.paths)] if self.paths else self.path
        if self.protocol == "ws":
            return (
                f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        resume = (
            f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        )
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{resume}"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()


@dataclass
class WorkerStats:
    """What one worker saw since the last reset."""

    received: int = 0
    """Change payloads received by all its clients."""
    seqs: array[int] = field(default_factory=lambda: array("q"))
    """Sampled clients: the ``seq`` of each change received..."""
    times: array[int] = field(default_factory=lambda: array("q"))
    """...and ``monotonic_ns`` at receipt."""
    cpu: float = 0.0
    """CPU seconds the worker used since the reset."""
    open: int = 0
    lost: int = 0
    """Clients the server closed since the reset."""
    sampled: int = 0


class _Client(asyncio.Protocol):
    __slots__ = (
        "buf",
        "closing",
        "head",
        "mark",
        "ready",
        "request",
        "sampled",
        "tail",
        "transport",
        "w",
    )

    def __init__(
        self, worker: _Worker, request: bytes, sampled: bool, mark: bytes = READY_MARK
    ) -> None:
        self.w = worker
        self.mark = mark
        self.request = request
        self.sampled = sampled
        self.ready: asyncio.Future[str | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.head = b""
        self.tail = b""
        self.buf = b""
        self.closing = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Close with RST: tens of thousands of clients over a run would
            # otherwise fill the port range with TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.head += data
            head_end = self.head.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.head) > 65536:
                    self._fail()
                return
            if not self.head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 101")):
                # An error response: wait for its body, which says why.
                if len(self.head) > head_end + 4 or len(self.head) > 65536:
                    self._fail()
                return
            at = self.head.find(self.mark, head_end)
            if at < 0:
                if len(self.head) > 65536:
                    self._fail()
                return
            # Counting starts after the marker's event (a live query's
            # snapshot holds rows: they are not deliveries).
            end = self.head.find(b"\n\n", at)
            if end < 0:
                if len(self.head) > 1 << 24:
                    self._fail()
                return
            self.ready.set_result(None)
            data = self.head[end + 2 :]
            self.head = b""
            if not data:
                return
        w = self.w
        joined = self.tail + data
        w.stats.received += joined.count(SEQ_MARK)
        self.tail = joined[-4:]
        if self.sampled:
            now = time.monotonic_ns()
            buf = self.buf + data
            end = 0
            for m in SEQ_RE.finditer(buf):
                w.stats.seqs.append(int(m.group(1)))
                w.stats.times.append(now)
                end = m.end()
            self.buf = buf[end:] if end else buf[-64:]

    def _fail(self) -> None:
        if not self.ready.done():
            status = self.head.split(b"\r\n", 1)[0].decode("latin-1")
            body = self.head.partition(b"\r\n\r\n")[2][:300].decode("latin-1")
            self.ready.set_result(f"{status} {body}".strip())
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            if self.head:
                self._fail()
            else:
                self.ready.set_result(f"closed before ready: {exc or 'EOF'}")
        elif not self.closing:
            self.w.stats.lost += 1
        self.w.clients.discard(self)


class _Worker:
    def __init__(self, pipe: Connection, index: int) -> None:
        self.pipe = pipe
        self.index = index
        self.clients: set[_Client] = set()
        self.stats = WorkerStats()
        self._cpu0 = self._cpu()

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        pipe_reader(self.pipe, loop, inbox)
        while True:
            command, args = await inbox.get()
            if command == "exit":
                await self.close_all()
                self.pipe.send(("ok", None))
                return
            handler = getattr(self, "do_" + command)
            try:
                result = await handler(**args)
            except Exception as exc:
                self.pipe.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                self.pipe.send(("ok", result))

    async def do_connect(
        self,
        target: Target,
        count: int,
        first_index: int,
        sample_every: int,
        concurrency: int = 200,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = {}
        ok = 0

        async def one(i: int) -> None:
            nonlocal ok
            index = first_index + i
            sampled = sample_every > 0 and index % sample_every == 0
            async with gate:
                client = _Client(self, target.request(index), sampled, target.ready)
                try:
                    await loop.create_connection(
                        lambda: client, target.host, target.port
                    )
                    error = await asyncio.wait_for(client.ready, timeout)
                except (OSError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if client.transport is not None:
                        client.transport.abort()
            if error is None:
                ok += 1
                self.clients.add(client)
                self.stats.sampled += sampled
            else:
                key = error[:200]
                errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return {
            "ok": ok,
            "failed": count - ok,
            "errors": errors,
            "seconds": time.perf_counter() - started,
        }

    async def do_reset(self) -> None:
        sampled = self.stats.sampled
        self.stats = WorkerStats(sampled=sampled)
        self._cpu0 = self._cpu()

    async def do_collect(self) -> WorkerStats:
        stats = self.stats
        stats.cpu = self._cpu() - self._cpu0
        stats.open = len(self.clients)
        return stats

    async def do_close(self) -> int:
        return await self.close_all()

    async def close_all(self) -> int:
        closed = len(self.clients)
        for client in list(self.clients):
            client.closing = True
            if client.transport is not None:
                client.transport.abort()
        self.clients.clear()
        self.stats = WorkerStats()
        await asyncio.sleep(0.05)
        return closed


def _worker_main(pipe: Connection, index: int) -> None:
    raise_nofile()
    import uvloop

    uvloop.run(_Worker(pipe, index).run())


@dataclass
class Collected:
    received: int
    cpu: list[float]
    open: int
    lost: int
    sampled: int
    seqs: array[int]
    times: array[int]


class LoadGen:
    """Drives *processes* client worker processes (use as a context manager)."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        self.connected = 0

    def __enter__(self) -> LoadGen:
        ctx = mp.get_context("spawn")
        for i in range(self.processes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(theirs, i), daemon=True)
            proc.start()
            self._pipes.append(ours)
            self._procs.append(proc)
        return self

    def __exit__(self, *exc: object) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(("exit", {}))
            except OSError:
                pass
        for pipe, proc in zip(self._pipes, self._procs, strict=True):
            try:
                if pipe.poll(10):
                    pipe.recv()
            except (OSError, EOFError):
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _all(self, command: str, per_worker: list[dict[str, Any]]) -> list[Any]:
        for pipe, args in zip(self._pipes, per_worker, strict=True):
            pipe.send((command, args))
        out = []
        for pipe in self._pipes:
            status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"load generator {command} failed: {value}")
            out.append(value)
        return out

    def connect(
        self, target: Target, count: int, samples: int = 50, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Open *count* more clients spread over the workers; about *samples* of
        them (evenly spaced) record per-event receive times."""
        sample_every = max(1, count // samples) if samples else 0
        shares = [count // self.processes] * self.processes
        for i in range(count % self.processes):
            shares[i] += 1
        args, first = [], 0
        for share in shares:
            args.append(
                {
                    "target": target,
                    "count": share,
                    "first_index": first,
                    "sample_every": sample_every,
                    "timeout": timeout,
                }
            )
            first += share
        results = self._all("connect", args)
        errors: dict[str, int] = {}
        for r in results:
            for key, n in r["errors"].items():
                errors[key] = errors.get(key, 0) + n
        ok = sum(r["ok"] for r in results)
        self.connected += ok
        return {
            "ok": ok,
            "failed": sum(r["failed"] for r in results),
            "errors": errors,
            "seconds": max(r["seconds"] for r in results),
        }

    def reset(self) -> None:
        self._all("reset", [{}] * self.processes)

    def collect(self) -> Collected:
        parts: list[WorkerStats] = self._all("collect", [{}] * self.processes)
        seqs: array[int] = array("q")
        times: array[int] = array("q")
        for p in parts:
            seqs.extend(p.seqs)
            times.extend(p.times)
        return Collected(
            received=sum(p.received for p in parts),
            cpu=[p.cpu for p in parts],
            open=sum(p.open for p in parts),
            lost=sum(p.lost for p in parts),
            sampled=sum(p.sampled for p in parts),
            seqs=seqs,
            times=times,
        )

    def close(self) -> None:
        """Disconnect every client (the workers keep running)."""
        self._all("close", [{}] * self.processes)
        self.connected = 0
