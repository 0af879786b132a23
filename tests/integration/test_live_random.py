"""Live queries under randomized concurrent writers: 50 queries with different
filters, orders, limits and one-level embeds in both directions; inserts,
updates moving rows in and out of predicates and windows, deletes, key
changes, updates of embedded parents and children.  After quiescence every
client's rows equal a fresh read of its query (the REST endpoint, whose SQL
is differentially tested against PostgreSQL elsewhere), in order; at every
consistent point each window is ordered and within its limit.  Then counted
work: many clients on few queries cost refreshes per query, not per client.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import time
from typing import Any

import httpx

from tests.integration.test_live_queries import LiveStream, _metrics, _schema

#: Seconds of writes: the issue's 60 on the embedded build, less on the
#: distribution's (the suite runs every test on both).
SECONDS = {"embedded": 60.0, "system": 20.0}

ORDERS = [
    None,
    "rank.desc.nullslast",
    "rank.asc.nullsfirst",
    "title",
    "id.desc",
    "shipment_id,rank.desc",
]
FILTERS = [
    {},
    {"shipment_id": "eq.1"},
    {"shipment_id": "in.(2,3)"},
    {"rank": "gt.3"},
    {"rank": "is.null"},
    {"title": "like.*1*"},
    {"or": "(rank.lt.2,shipment_id.eq.4)"},
    {"shipment_id": "eq.2", "rank": "gte.2"},
]


def _query(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.25:
        params = {
            "table": "shipments",
            "select": rng.choice(["id,port,docs(id,rank)", "id,docs(id,title)"]),
            "docs.order": "id",
        }
        if rng.random() < 0.5:
            params["order"] = rng.choice(["port.desc", "id"])
        if rng.random() < 0.5:
            params["limit"] = str(rng.choice([2, 3]))
        return params
    params = {
        "table": "docs",
        "select": rng.choice(
            ["*", "id,title,rank", "id,rank,shipments(port)", "id,shipments(id,port)"]
        ),
        **rng.choice(FILTERS),
    }
    order = rng.choice(ORDERS)
    if order:
        params["order"] = order
    if rng.random() < 0.6:
        params["limit"] = str(rng.choice([1, 3, 5, 10]))
    return params


async def _expected(client: httpx.AsyncClient, url: str, params: dict[str, str]) -> Any:
    """The query's rows now, read over REST with the live order (ties by key)."""
    rest = {k: v for k, v in params.items() if k != "table"}
    order = rest.get("order")
    rest["order"] = f"{order},id" if order else "id"
    response = await client.get(f"{url}/v1/rest/{params['table']}", params=rest)
    assert response.status_code == 200, response.text
    return response.json()


async def _writer(dsn: str, rng: random.Random, until: float) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    done = 0
    try:
        while time.monotonic() < until:
            try:
                async with conn.transaction():
                    for _ in range(rng.randrange(1, 4)):
                        await _one_write(conn, rng)
                done += 1
            except asyncpg.PostgresError:
                pass  # a key taken by another writer meanwhile: try another
            await asyncio.sleep(rng.random() * 0.02)
    finally:
        await conn.close()
    return done


async def _one_write(conn: Any, rng: random.Random) -> None:
    roll = rng.random()
    i = rng.randrange(1, 80)
    if roll < 0.3:
        await conn.execute(
            "insert into docs values ($1, $2, $3, $4, null) on conflict (id) "
            "do update set shipment_id = $2, rank = $4",
            i,
            rng.choice([None, 1, 2, 3, 4]),
            f"doc {rng.randrange(100)}",
            rng.choice([None, *range(8)]),
        )
    elif roll < 0.55:
        await conn.execute(
            "update docs set rank = $2 where id = $1", i, rng.choice([None, *range(8)])
        )
    elif roll < 0.65:
        await conn.execute(
            "update docs set shipment_id = $2 where id = $1", i, rng.randrange(1, 5)
        )
    elif roll < 0.72:
        # A key change: the row is a delete of the old key and an insert.
        await conn.execute(
            "update docs set id = $2 where id = $1", i, rng.randrange(80, 160)
        )
    elif roll < 0.85:
        await conn.execute("delete from docs where id = $1", i)
    else:
        await conn.execute(
            "update shipments set port = $2 where id = $1",
            rng.randrange(1, 5),
            f"port {rng.randrange(20)}",
        )


def _ordered(rows: list[dict[str, Any]], params: dict[str, str]) -> bool:
    """A cheap check of a consistent point: within the limit, and for a plain
    single-column order on an integer column, in order."""
    limit = params.get("limit")
    if limit is not None and len(rows) > int(limit):
        return False
    if params.get("order") == "id.desc":
        ids = [r["id"] for r in rows]
        return ids == sorted(ids, reverse=True)
    return True


async def test_fifty_live_queries_stay_equal_to_their_query_under_writers(
    conn, gateway_factory, database, pg_server
):
    await _schema(conn)
    gw = gateway_factory("--rest")
    rng = random.Random(int(os.environ.get("PGPULSE_TEST_SEED", "20261204")))
    queries = [_query(rng) for _ in range(50)]
    override = os.environ.get("PGPULSE_LIVE_SECONDS")
    seconds = float(override) if override else SECONDS[pg_server.build]
    streams = [LiveStream(gw.url, q) for q in queries]
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for stream in streams:
                await stream.__aenter__()
            for stream, params in zip(streams, queries, strict=True):
                await stream.equal(await _expected(client, gw.url, params))
            until = time.monotonic() + seconds
            writes = await asyncio.gather(
                *(
                    _writer(database, random.Random(rng.random()), until)
                    for _ in range(4)
                )
            )
            assert sum(writes) > 100, writes
            for stream, params in zip(streams, queries, strict=True):
                try:
                    await stream.equal(
                        lambda p=params: _expected(client, gw.url, p), timeout=60
                    )
                except TimeoutError:
                    raise AssertionError(
                        f"{params}: live {stream.view.rows} != "
                        f"{await _expected(client, gw.url, params)}"
                    ) from None
                assert [e for e, _ in stream.events].count("snapshot") == 1, params
                bad = [s for s in stream.states if not _ordered(s, params)]
                assert not bad, (params, bad[:2])
    finally:
        for stream in streams:
            await stream.close()


async def test_many_clients_on_few_queries_cost_refreshes_per_query(
    conn, gateway_factory
):
    """Counted work: 1,000 clients on 10 distinct queries; a batch that touches
    all ten costs ten reads, and the clients share the bytes."""
    # A thousand streams here and in the gateway (started after, it inherits).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    await _schema(conn)
    gw = gateway_factory("--rest", env={"PGPULSE_METRICS_TOKEN": "scrape"})
    queries = [
        {"table": "docs", "select": "id,rank", "order": "rank.desc", "limit": str(n)}
        for n in range(1, 11)
    ]
    streams = [LiveStream(gw.url, queries[i % 10]) for i in range(1000)]
    try:
        for stream in streams:
            await stream.__aenter__()
        for stream in streams:
            await stream.consistent.wait()
        metrics = await _metrics(gw)
        assert metrics["pgpulse_live_queries"] == 10
        assert metrics["pgpulse_live_clients"] == 1000
        before = metrics["pgpulse_live_refreshes_total"]
        rounds = 5
        for r in range(rounds):
            await conn.execute("update docs set rank = $1 where id = 3", 100 + r)
            await asyncio.sleep(0.3)
        for stream in streams:
            await stream.equal([r for r in stream.view.rows], timeout=10)
        after = (await _metrics(gw))["pgpulse_live_refreshes_total"]
        # One read per query per batch (a batch may split in two: 2x slack),
        # never one per client.
        assert 10 * rounds <= after - before <= 2 * 10 * rounds, after - before
        by_query: dict[str, list[Any]] = {}
        for stream, i in zip(streams, range(1000), strict=True):
            by_query.setdefault(str(i % 10), []).append(stream.events)
        for events in by_query.values():
            assert all(e == events[0] for e in events[1:])
    finally:
        for stream in streams:
            await stream.close()
