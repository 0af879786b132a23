"""Consumer groups in one process: positions in the database, at least once,
exactly once in a transaction, filters as PostgreSQL means them, the idle
wait on the listener's wake-up, and bad input refused with the reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

import pgpulse
from pgpulse import capture
from pgpulse.consumers import Batch, Consumer
from pgpulse.consumers.stats import group_stats
from pgpulse.exceptions import ConfigurationError, PgPulseError
from pgpulse.log.prune import prune
from tests.gateway import GatewayProcess


async def _orders(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "create table orders (id int primary key, status text not null, "
        "amount numeric not null)"
    )
    await conn.execute(
        "create table handled (event_id text primary key, order_id int, amount numeric)"
    )
    await capture.watch(conn, "orders")


async def _next(worker: Consumer, timeout: float = 15) -> Batch:
    async with asyncio.timeout(timeout):
        return await anext(worker)


def _ids(batch: Batch) -> list[int]:
    return [int(e.pk["id"]) for e in batch.changes if e.pk is not None]


def _row(event: pgpulse.Event) -> dict[str, Any]:
    assert event.row is not None and event.pk is not None
    return {**event.row, "pk": event.pk}


async def _handle(tx: Any, batch: Batch) -> None:
    """The handler's work: each change into ``handled``, in *tx*."""
    for event in batch.changes:
        await tx.execute(
            "insert into handled values ($1, $2, $3)",
            event.id,
            _row(event)["id"],
            _row(event)["amount"],
        )


async def test_a_group_continues_where_it_left_off(conn, database):
    await _orders(conn)
    options: dict[str, Any] = {"lease_ttl": 2.0, "partitions": 4}
    async with pgpulse.consumer(
        database, group="mailer", tables=["orders"], **options
    ) as worker:
        await conn.execute("insert into orders values (1, 'new', 10), (2, 'new', 20)")
        batch = await _next(worker)
        assert sorted(_ids(batch)) == [1, 2]
        assert batch.changes[0].op == "INSERT" and batch.changes[0].table == "orders"
        assert await batch.ack()
        await conn.execute("insert into orders values (3, 'new', 30)")
        unacked = await _next(worker)
        assert _ids(unacked) == [3]
        # Not acknowledged: the same change comes back on the next iteration.
        again = await _next(worker)
        assert _ids(again) == [3]
    # A new worker of the group (a restart) continues at the acknowledged
    # position: change 3 again, nothing before it.
    await conn.execute("insert into orders values (4, 'new', 40)")
    async with pgpulse.consumer(
        database, group="mailer", tables=["orders"], **options
    ) as worker:
        batch = await _next(worker)
        assert sorted(_ids(batch)) == [3, 4]
        assert await batch.ack()
        (stats,) = await group_stats(conn, "mailer")
        assert stats.delivered == 4 and stats.lag_changes == 0


async def test_exactly_once_commits_writes_and_position_together(conn, database):
    await _orders(conn)
    async with pgpulse.consumer(
        database, group="ledger", tables=["orders"], lease_ttl=2.0
    ) as worker:
        await conn.execute("insert into orders values (1, 'new', 10.10)")
        batch = await _next(worker)
        with pytest.raises(RuntimeError):
            async with batch.transaction() as tx:
                await _handle(tx, batch)
                raise RuntimeError("the handler failed half-way")
        assert await conn.fetchval("select count(*) from handled") == 0
        batch = await _next(worker)  # delivered again: nothing was committed
        async with batch.transaction() as tx:
            await _handle(tx, batch)
        assert str(await conn.fetchval("select sum(amount) from handled")) == "10.10"
        # Exact numbers, as PostgreSQL has them (not floats).
        assert str(_row(batch.changes[0])["amount"]) == "10.10"
        await conn.execute("insert into orders values (2, 'new', 1)")
        batch = await _next(worker)
        assert _ids(batch) == [2]  # order 1 was not delivered a third time


async def test_filter_means_what_postgresql_means_and_sees_rows_leave(conn, database):
    await _orders(conn)
    async with pgpulse.consumer(
        database,
        group="paid",
        tables=["orders"],
        filter="status=eq.paid",
        lease_ttl=2.0,
    ) as worker:
        await conn.execute("insert into orders values (1, 'new', 1), (2, 'paid', 2)")
        await conn.execute("update orders set status = 'paid' where id = 1")
        await conn.execute("update orders set status = 'refunded' where id = 2")
        await conn.execute("insert into orders values (3, 'new', 3)")
        await conn.execute("insert into orders values (4, 'paid', 4)")
        seen: list[tuple[str, int]] = []
        while len(seen) < 4:
            batch = await _next(worker)
            seen += [(e.op, _ids(batch)[i]) for i, e in enumerate(batch.changes)]
            assert await batch.ack()
        # Entering (1), matching (2, 4) and leaving (2 refunded) rows; never 3.
        assert seen == [("INSERT", 2), ("UPDATE", 1), ("UPDATE", 2), ("INSERT", 4)]


async def test_an_idle_worker_reads_nothing_until_a_change(conn, database):
    await _orders(conn)
    async with pgpulse.consumer(
        database, group="idle", tables=["orders"], lease_ttl=30.0
    ) as worker:
        reader = asyncio.create_task(anext(worker))
        await asyncio.sleep(0.5)
        before = await _log_reads(conn)
        await asyncio.sleep(2.0)
        assert await _log_reads(conn) == before, "an idle worker polled the log"
        assert not reader.done()
        await conn.execute("insert into orders values (1, 'new', 1)")
        async with asyncio.timeout(10):
            batch = await reader
        assert _ids(batch) == [1]


async def _log_reads(conn: asyncpg.Connection) -> int:
    """Statements that read the change log, from pg_stat_statements."""
    value = await conn.fetchval(
        "select coalesce(sum(calls), 0) from pg_stat_statements "
        "where query like '%from pgpulse.changes%' and query not like '%count(*)%'"
        " and dbid = (select oid from pg_database where datname = current_database())"
    )
    return int(value)


async def test_bad_definitions_are_refused_with_the_reason(conn, database):
    await _orders(conn)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tables": ["nope"]}, "nope"),
        ({"tables": ["orders"], "filter": "colour=eq.red"}, "colour"),
        ({"tables": ["orders"], "filter": "id=eq.notanumber"}, "notanumber"),
        ({"tables": ["orders"], "group": "bad name!"}, "not valid"),
        ({"tables": ["orders"], "partitions": 0}, "partitions"),
    ]
    for options, needle in cases:
        options = {"group": "g1", **options}
        with pytest.raises(PgPulseError) as caught:
            async with pgpulse.consumer(database, **options):
                pass
        assert needle in str(caught.value), (options, str(caught.value))
    async with pgpulse.consumer(database, group="g2", tables=["orders"]):
        pass
    with pytest.raises(ConfigurationError) as caught:
        async with pgpulse.consumer(
            database, group="g2", tables=["orders"], filter="status=eq.paid"
        ):
            pass
    assert "exists" in str(caught.value) and "drop" in str(caught.value)


async def test_workers_of_a_new_group_starting_together_all_start(conn, database):
    """Eight workers of a group that does not exist yet start at the same
    moment (a deployment scaled out): one creates it, all of them run."""
    await _orders(conn)
    sessions = [
        pgpulse.consumer(database, group="together", tables=["orders"], partitions=4)
        for _ in range(8)
    ]
    started = await asyncio.gather(
        *(s.__aenter__() for s in sessions), return_exceptions=True
    )
    try:
        assert [e for e in started if isinstance(e, BaseException)] == []
        groups = await conn.fetchval(
            "select count(*) from pgpulse.consumer_groups where name = 'together'"
        )
        partitions = await conn.fetchval(
            "select count(*) from pgpulse.consumer_partitions "
            "where group_name = 'together'"
        )
        assert (groups, partitions) == (1, 4)
    finally:
        for session, result in zip(sessions, started, strict=True):
            if not isinstance(result, BaseException):
                await session.__aexit__(None, None, None)


async def test_pruning_keeps_what_a_group_has_not_acknowledged(conn, database):
    await _orders(conn)
    async with pgpulse.consumer(
        database, group="slow", tables=["orders"], lease_ttl=2.0
    ) as worker:
        await conn.execute(
            "insert into orders select g, 'new', g from generate_series(1, 5) g"
        )
        batch = await _next(worker)
        assert len(batch.changes) == 5
        result = await prune(conn, keep_rows=0)
        assert result.deleted == 0  # not acknowledged: kept
        assert await batch.ack()
    result = await prune(conn, keep_rows=0)
    assert result.deleted == 5


async def test_a_group_lagging_past_max_lag_is_reset_not_kept_for_ever(conn, database):
    await _orders(conn)
    async with pgpulse.consumer(
        database,
        group="dead",
        tables=["orders"],
        lease_ttl=2.0,
        max_lag=dt.timedelta(seconds=1),
    ) as worker:
        await conn.execute("insert into orders values (1, 'new', 1)")
        batch = await _next(worker)
        assert _ids(batch) == [1]  # never acknowledged
        await asyncio.sleep(1.5)
        result = await prune(conn, keep_rows=0)
        assert result.deleted == 1
        (stats,) = await group_stats(conn, "dead")
        assert stats.resets == 1 and "lagged more than" in (stats.reset_reason or "")
        reset = await _next(worker, timeout=20)
        assert reset.reset and not reset.changes


@pytest.fixture
async def workers() -> AsyncIterator[list[Consumer]]:
    opened: list[Consumer] = []
    yield opened
    for worker in opened:
        await worker.close()


def _metric(text: str, name: str, group: str) -> float:
    prefix = f'{name}{{group="{group}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{name} for group {group} not in /metrics:\n{text}")


async def test_group_numbers_on_metrics_and_in_the_cli(conn, database):
    await _orders(conn)
    async with pgpulse.consumer(
        database, group="metered", tables=["orders"], partitions=1, lease_ttl=2.0
    ) as worker:
        await conn.execute("insert into orders values (1, 'new', 1), (2, 'new', 2)")
        first = await _next(worker)
        again = await _next(worker)  # the first was not acknowledged
        assert _ids(again) == _ids(first) == [1, 2]
        assert await again.ack()
        await conn.execute("insert into orders values (3, 'new', 3)")
        rejected = await _next(worker)
        await rejected.reject("no such customer")
    # Written while no worker runs: the group's lag.
    await conn.execute("insert into orders values (4, 'new', 4), (5, 'new', 5)")
    gateway = GatewayProcess(database).start()
    try:
        async with httpx.AsyncClient() as http:
            text = (await http.get(gateway.url + "/metrics")).text
    finally:
        gateway.stop()
    assert _metric(text, "pgpulse_consumer_delivered_total", "metered") == 3
    assert _metric(text, "pgpulse_consumer_redelivered_total", "metered") == 2
    assert _metric(text, "pgpulse_consumer_dead_letters", "metered") == 1
    assert _metric(text, "pgpulse_consumer_lag_changes", "metered") == 2
    assert _metric(text, "pgpulse_consumer_lag_seconds", "metered") >= 0
    assert _metric(text, "pgpulse_consumer_workers", "metered") == 0  # it left
    assert "pgpulse_consumer_stats_up 1.0" in text

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgpulse",
        "consumers",
        "--database-url",
        database,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    (line,) = [x for x in out.decode().splitlines() if x.startswith("metered")]
    # group, tables, filter, workers, delivered, redelivered, lag, lag age,
    # dead letters, resets
    fields = line.split()
    assert fields[4:7] == ["3", "2", "2"], line
    assert fields[8] == "1", line
