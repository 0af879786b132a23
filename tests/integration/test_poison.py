"""No poison: a value the stream cannot evaluate costs that row, for that
subscriber, logged and counted; never the batch, never the other clients.

Before, a NaN in a numeric column made a range filter raise inside the bus; the
listener re-read the same batch forever and nobody received anything after it.
"""

from __future__ import annotations

import httpx

from pgpulse import capture
from tests.gateway import SSEStream


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_nan_infinity_and_numbers_past_double_route_as_postgresql_compares(
    conn, gateway_factory
):
    await conn.execute(
        "create table m (id int primary key, n numeric, f float8, r real)"
    )
    await capture.watch(conn, "m")
    gw = gateway_factory()
    async with (
        SSEStream(gw.url, ["m:n=gt.5"]) as numeric,
        SSEStream(gw.url, ["m:f=lte.9.99"]) as floats,
        SSEStream(gw.url, ["m:n=eq.9.99"]) as exact,
        SSEStream(gw.url, ["m"]) as everyone,
    ):
        for stream in (numeric, floats, exact, everyone):
            await stream.next_event()  # ready
        await conn.execute(
            """insert into m values
               (1, 'NaN', 'NaN', 'NaN'),
               (2, 9.99, 9.99, 9.99),
               (3, 1e400, 'Infinity', 0.1),
               (4, -1e400, '-Infinity', 1),
               (5, 9.990, 1e300, 2),
               (6, 5, 5, 5)"""
        )
        expected = {
            # PostgreSQL: NaN is above every number, equal to itself.
            numeric: [1, 2, 3, 5],
            floats: [2, 4, 6],
            exact: [2, 5],
            everyone: [1, 2, 3, 4, 5, 6],
        }
        for stream, ids in expected.items():
            got = await stream.changes(len(ids))
            assert [e.data["pk"]["id"] for e in got] == ids
            await stream.expect_nothing(0.2)
    # The exact values reach the client as PostgreSQL wrote them.
    assert got[2].data["row"]["n"] > 10**399
    metrics = httpx.get(gw.url + "/metrics").text
    assert _metric(metrics, "pgpulse_filter_errors_total") == 0


async def test_a_row_the_filter_cannot_read_costs_that_row_for_that_client_only(
    conn, gateway_factory
):
    await conn.execute("create table docs (id int primary key, size int, tag text)")
    await capture.watch(conn, "docs")
    gw = gateway_factory()
    async with (
        SSEStream(gw.url, ["docs:size=gt.5"]) as ranged,
        SSEStream(gw.url, ["docs:tag=ilike.*x*"]) as searched,
        SSEStream(gw.url, ["docs"]) as everyone,
    ):
        for stream in (ranged, searched, everyone):
            await stream.next_event()
        await conn.execute("insert into docs values (1, 9, 'x')")
        # A migration changes the column's type under the running gateway:
        # the subscriptions compiled for integers meet text.
        await conn.execute("alter table docs alter column size type text")
        await conn.execute("insert into docs values (2, 'large', 'x')")
        await conn.execute("insert into docs values (3, '12', 'x')")
        assert [e.data["pk"]["id"] for e in await everyone.changes(3)] == [1, 2, 3]
        # Evaluated by PostgreSQL on the table as it is now: unaffected.
        assert [e.data["pk"]["id"] for e in await searched.changes(3)] == [1, 2, 3]
        # Text where the filter compares integers: skipped for this client.
        assert [e.data["pk"]["id"] for e in await ranged.changes(1)] == [1]
        await ranged.expect_nothing(0.3)
        # The stream goes on for everyone.
        await conn.execute("insert into docs values (4, '40', 'y')")
        assert [e.data["pk"]["id"] for e in await everyone.changes(1)] == [4]
    metrics = httpx.get(gw.url + "/metrics").text
    assert _metric(metrics, "pgpulse_filter_errors_total") == 3
    log = gw.log()
    assert "skipped a change to public.docs" in log
    assert '{"id": 2}' in log and "docs:size=gt.5" in log
