"""A consumer-group worker process for the tests (killed with SIGKILL at will).

    python -m tests.consumer_worker DSN GROUP MODE [DELAY]

MODE ``transaction``: each batch's changes are written to ``handled`` in the
batch's transaction (exactly once); ``ack``: written in autocommit, then the
batch is acknowledged (at least once).  DELAY seconds of "work" per batch make
kills land mid-batch.  Prints ``ready`` once it has joined the group.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys

import asyncpg

import pgpulse


async def main(dsn: str, group: str, mode: str, delay: float) -> None:
    worker_name = f"w{os.getpid()}"
    async with pgpulse.consumer(
        dsn,
        group=group,
        tables=["orders"],
        lease_ttl=1.5,
        batch_size=20,
        worker=worker_name,
        partitions=8,
    ) as worker:
        print("ready", flush=True)
        direct = await asyncpg.connect(dsn)
        async for batch in worker:
            if batch.reset:
                print(f"reset: {batch.reset}", flush=True)
                continue
            rows = [
                (
                    e.change_id,
                    (e.pk or {})["id"],
                    e.op,
                    None if e.row is None else e.row["version"],
                    None if e.row is None else e.row["amount"],
                    worker_name,
                )
                for e in batch.changes
            ]
            sql = (
                "insert into handled (change_id, order_id, op, version, amount, "
                "worker) values ($1, $2, $3, $4, $5, $6)"
            )
            if mode == "transaction":
                try:
                    async with batch.transaction() as tx:
                        await tx.executemany(sql, rows)
                        await asyncio.sleep(delay)
                except pgpulse.consumers.LeaseLost:
                    continue
            else:
                await direct.executemany(sql, rows)
                await asyncio.sleep(delay)
                await batch.ack()


if __name__ == "__main__":
    # The test asks for every thread's stack (SIGUSR1) when a group stalls.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], delay))
