"""The writer (single-row INSERT transactions at a fixed rate) and the raw LISTEN
client used for the latency floor, each in its own process.

The writer stamps every row with ``seq`` and records, per ``seq``, the
``time.monotonic_ns()`` at which its COMMIT returned (autocommit INSERT).  Client
receipt stamps use the same system-wide clock, so latency is ``receipt - commit``.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import random
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench._proc import pipe_reader

__all__ = ["Listen", "WriteJob", "WriteResult", "Writer"]

INSERT_SQL = (
    "insert into {table} (seq, shipment_id, t_ns, body) values ($1, $2, $3, $4)"
)
NOTIFY_SQL = "select pg_notify($1, $2)"


@dataclass
class WriteJob:
    dsn: str
    rate: float
    """Changes per second (all connections together)."""
    duration: float
    first_seq: int
    table: str = "docs"
    mode: str = "insert"
    """``insert`` (a row per transaction) or ``notify`` (raw ``pg_notify``)."""
    channel: str = "bench_floor"
    shipments: int = 1000
    """``shipment_id`` is drawn uniformly from 1..shipments."""
    connections: int = 0
    """Writer connections (0: one per 100 changes/s, 1 to 32)."""
    body_size: int = 100


@dataclass
class WriteResult:
    seqs: array[int] = field(default_factory=lambda: array("q"))
    commits: array[int] = field(default_factory=lambda: array("q"))
    """``monotonic_ns`` when each COMMIT returned."""
    started_ns: int = 0
    ended_ns: int = 0
    errors: int = 0
    connections: int = 0

    @property
    def written(self) -> int:
        return len(self.seqs)

    @property
    def seconds(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e9

    def commit_map(self) -> dict[int, int]:
        return dict(zip(self.seqs, self.commits, strict=True))


async def _write(job: WriteJob, pipe: Connection) -> WriteResult:
    import asyncpg

    n_conn = job.connections or max(1, min(32, math.ceil(job.rate / 100)))
    conns = [
        await asyncpg.connect(
            job.dsn, server_settings={"application_name": "bench-writer"}
        )
        for _ in range(n_conn)
    ]
    body = "x" * job.body_size
    sql = INSERT_SQL.format(table=job.table)
    total = max(1, round(job.rate * job.duration))
    result = WriteResult(connections=n_conn)
    rng = random.Random(job.first_seq)
    shipments = [rng.randint(1, job.shipments) for _ in range(total)]
    pipe.send(("started", None))
    t0 = time.monotonic_ns()
    result.started_ns = t0
    step = 1e9 / job.rate

    async def run(k: int, conn: Any) -> None:
        for n in range(k, total, n_conn):
            due = t0 + n * step
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            seq = job.first_seq + n
            try:
                if job.mode == "notify":
                    await conn.execute(NOTIFY_SQL, job.channel, f'{{"seq":{seq}}}')
                else:
                    await conn.execute(
                        sql, seq, shipments[n], time.monotonic_ns(), body
                    )
            except Exception:
                result.errors += 1
                continue
            result.commits.append(time.monotonic_ns())
            result.seqs.append(seq)

    await asyncio.gather(*(run(k, c) for k, c in enumerate(conns)))
    result.ended_ns = time.monotonic_ns()
    for conn in conns:
        await conn.close()
    return result


def _writer_main(pipe: Connection, job: WriteJob) -> None:
    import uvloop

    result = uvloop.run(_write(job, pipe))
    pipe.send(("done", result))


class Writer:
    """Runs one :class:`WriteJob` in a child process."""

    def __init__(self, job: WriteJob) -> None:
        self.job = job
        ctx = mp.get_context("spawn")
        self._pipe, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=_writer_main, args=(theirs, job), daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        """Start the process; returns when its connections are open and the
        clock is about to start."""
        self._proc.start()
        if not self._pipe.poll(timeout):
            raise RuntimeError("writer did not start")
        self._pipe.recv()

    def wait(self) -> WriteResult:
        timeout = self.job.duration * 4 + 60
        if not self._pipe.poll(timeout):
            self._proc.kill()
            raise RuntimeError("writer did not finish")
        _, result = self._pipe.recv()
        self._proc.join(10)
        assert isinstance(result, WriteResult)
        return result

    def run(self) -> WriteResult:
        self.start()
        return self.wait()


async def _listen(dsn: str, channel: str, pipe: Connection) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": "bench-floor"}
    )
    seqs: array[int] = array("q")
    times: array[int] = array("q")

    def on_notify(_c: Any, _pid: int, _ch: str, payload: object) -> None:
        if isinstance(payload, str) and payload.startswith('{"seq":'):
            times.append(time.monotonic_ns())
            seqs.append(int(payload[7:-1]))

    await conn.add_listener(channel, on_notify)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    pipe_reader(pipe, loop, inbox)
    pipe.send("ready")
    while True:
        command = await inbox.get()
        if command == "collect":
            pipe.send((seqs, times))
            seqs, times = array("q"), array("q")
        else:
            break
    await conn.close()


def _listen_main(pipe: Connection, dsn: str, channel: str) -> None:
    import uvloop

    uvloop.run(_listen(dsn, channel, pipe))


class Listen:
    """A raw asyncpg LISTEN connection in its own process (the latency floor)."""

    def __init__(self, dsn: str, channel: str = "bench_floor") -> None:
        ctx = mp.get_context("spawn")
        self._pipe, theirs = ctx.Pipe()
        self._proc = ctx.Process(
            target=_listen_main, args=(theirs, dsn, channel), daemon=True
        )

    def __enter__(self) -> Listen:
        self._proc.start()
        if not self._pipe.poll(60):
            raise RuntimeError("floor listener did not start")
        self._pipe.recv()
        return self

    def collect(self) -> tuple[array[int], array[int]]:
        self._pipe.send("collect")
        seqs, times = self._pipe.recv()
        return seqs, times

    def __exit__(self, *exc: object) -> None:
        try:
            self._pipe.send("exit")
        except OSError:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
