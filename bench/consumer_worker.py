"""A job worker process for the consumer benchmark, in one of three designs.

    python -m bench.consumer_worker MODE DSN GROUP [BATCH]

``pgpulse``: a worker of consumer group GROUP (``pgpulse.consumer``), acking
each batch.  ``poll``: the polling worker most job tables start with, a
``select ... where id > $last`` every second.  ``listen``: the bare
LISTEN/NOTIFY worker of the tutorials (a trigger ``pg_notify``s each new
job's id; lost while the worker is down).  Each prints ``ready`` once it
waits for work, then ``ID TIME`` for every job it handles (TIME: wall clock
when the handler saw it).  With ``--count-only`` it prints nothing per job.
"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg

import pgpulse


def _emit(ids: list[int], quiet: bool) -> None:
    if quiet:
        return
    now = time.time()
    sys.stdout.write("".join(f"{i} {now:.6f}\n" for i in ids))
    sys.stdout.flush()


async def _pgpulse(dsn: str, group: str, batch: int, quiet: bool) -> None:
    async with pgpulse.consumer(
        dsn,
        group=group,
        tables=["jobs"],
        batch_size=batch,
        start="now",  # the group exists before the jobs (the bench waits)
        keepalive=60.0,
    ) as worker:
        print("ready", flush=True)
        async for b in worker:
            _emit([int((e.pk or {})["id"]) for e in b.changes], quiet)
            await b.ack()


async def _poll(dsn: str, batch: int, quiet: bool) -> None:
    conn = await asyncpg.connect(dsn)
    last = await conn.fetchval("select coalesce(max(id), 0) from jobs")
    print("ready", flush=True)
    while True:
        rows = await conn.fetch(
            "select id from jobs where id > $1 order by id limit $2", last, batch
        )
        if rows:
            last = rows[-1]["id"]
            _emit([r["id"] for r in rows], quiet)
            continue
        await asyncio.sleep(1.0)


async def _listen(dsn: str, quiet: bool) -> None:
    conn = await asyncpg.connect(dsn)
    queue: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener("jobs", lambda *args: queue.put_nowait(args[3]))
    print("ready", flush=True)
    while True:
        payload = await queue.get()
        _emit([int(payload)], quiet)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--count-only"]
    quiet = "--count-only" in sys.argv
    mode, dsn = args[0], args[1]
    group = args[2] if len(args) > 2 else "bench"
    batch = int(args[3]) if len(args) > 3 else 100
    if mode == "pgpulse":
        asyncio.run(_pgpulse(dsn, group, batch, quiet))
    elif mode == "poll":
        asyncio.run(_poll(dsn, batch, quiet))
    elif mode == "listen":
        asyncio.run(_listen(dsn, quiet))
    else:
        raise SystemExit(f"unknown mode {mode!r}: pgpulse, poll or listen")


if __name__ == "__main__":
    main()
