"""One filter semantics, proven differentially against PostgreSQL.

Thousands of random filters over random rows of every column type, evaluated by
PostgreSQL (the reference, :mod:`tests.integration.filter_cases`), by the
stream (a real in-process gateway: live subscribers on the bus, and resuming
subscribers through the catch-up read), and by the query builder behind REST.
They must select exactly the same rows, through inserts, updates that move
rows in and out of filters, and deletes, and accept exactly the same filters
(the stream refuses only what its log cannot tell apart, with a 400 that says
so).  One fixed seed and one fresh seed per run; the writers' time zone
differs from the database's, which is not UTC; a column with an ICU
collation and one with a nondeterministic collation ride along.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import pytest

from pgpulse import capture
from pgpulse.config import Settings
from pgpulse.exceptions import PgPulseError
from pgpulse.gateway import Gateway
from pgpulse.log.cursor import Cursor
from pgpulse.query import QueryClient
from pgpulse.routing.bus import Subscriber
from pgpulse.routing.outbox import Outbox
from pgpulse.routing.values import loads_exact
from tests.integration.filter_cases import (
    Case,
    Columns,
    Generator,
    create_table,
    refused,
    selected,
    write_and_follow,
)

FIXED_SEED = 20261204
FRESH_SEED = int.from_bytes(os.urandom(4), "big")
SEEDS = [FIXED_SEED, int(os.environ.get("PGPULSE_FILTER_SEED", FRESH_SEED))]
FILTERS = int(os.environ.get("PGPULSE_FILTERS", "1500"))
ROWS = 300
RESUMING = 120  # of the filters, also checked through a resume's catch-up


def _events(outbox: Outbox) -> list[dict[str, Any]]:
    out = []
    for chunk in outbox._chunks:
        for frame in chunk.split(b"\n\n"):
            if b"event: change" in frame:
                out.append(loads_exact(frame.split(b"data: ", 1)[1].decode()))
    outbox._chunks.clear()
    outbox.size = 0
    return out


def _seen(event: dict[str, Any]) -> tuple[str, int, bool]:
    moved = bool(event.get("moved"))
    if moved:
        # A move shows only the side inside the filter.
        assert (event["row"] is None) == (event["op"] == "DELETE"), event
        assert (event["old"] is None) == (event["op"] == "INSERT"), event
    return event["op"], event["pk"]["id"], moved


async def _rest(client: QueryClient, case: Case) -> set[int] | str:
    """The ids the REST endpoint's SQL selects (the query builder)."""
    from pgpulse.routing.filters import parse_filters

    try:
        result = (
            await client.table("diff")
            .select("id")
            .where(*parse_filters(case.text))
            .execute()
        )
    except PgPulseError as exc:
        return f"{type(exc).__name__}: {exc}"
    return {r["id"] for r in result.data}


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS, ids=["fixed-seed", "fresh-seed"])
async def test_stream_rest_and_postgresql_select_the_same_rows(
    seed: int, database: str, conn: asyncpg.Connection, capsys: Any
) -> None:
    columns = await create_table(conn)
    await capture.watch(conn, "diff")
    conn2 = await asyncpg.connect(database)  # the database's own time zone now
    generator = Generator(seed, columns)
    gw = Gateway(Settings(database_url=database, retention_seconds=None))
    await gw.start()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        report = await _run(seed, database, conn2, gw, generator, columns, pool)
    finally:
        await pool.close()
        await gw.stop()
        await conn2.close()
    with capsys.disabled():
        print(f"\n[filter semantics] {report}")


async def _run(
    seed: int,
    database: str,
    conn: asyncpg.Connection,
    gw: Gateway,
    generator: Generator,
    columns: Columns,
    pool: Any,
) -> str:
    client = QueryClient(pool, gw.catalog)
    cases = [generator.filter() for _ in range(FILTERS)]
    start = gw.bus.cursor()
    assert start is not None

    # Which filters are accepted: PostgreSQL, REST and the stream must agree.
    live: list[tuple[Case, Subscriber]] = []
    refused_by_log = 0
    disagreements: list[str] = []
    for case in cases:
        reference = await refused(conn, case)
        try:
            specs = await gw.parse_subscriptions([f"diff:{case.text}"])
        except PgPulseError as exc:
            stream_error: str | None = str(exc)
        else:
            stream_error = None
        if reference is not None:
            if stream_error is None:
                disagreements.append(
                    f"{case.text!r}: PostgreSQL refuses ({reference}), "
                    "the stream accepts"
                )
            continue
        if stream_error is not None:
            if "records SQL NULL and JSON null alike" in stream_error:
                refused_by_log += 1
                continue
            disagreements.append(
                f"{case.text!r}: PostgreSQL accepts, the stream refuses: {stream_error}"
            )
            continue
        subscriber = Subscriber("sse", Outbox(1 << 30), label=case.text)
        await gw.attach(subscriber, specs, None)
        _events(subscriber.outbox)
        live.append((case, subscriber))
    assert not disagreements, "\n".join(disagreements[:20])
    assert len(live) > FILTERS // 3, "too few filters were accepted to mean much"

    expected = await write_and_follow(
        database, conn, generator, columns, [c for c, _s in live], ROWS
    )
    final = [await selected(conn, case) for case, _s in live]

    # Live: wait until the gateway has dispatched everything written.
    end = await conn.fetchval("select pg_current_snapshot()::text")
    target = Cursor.decode(end).snap
    async with asyncio.timeout(60):
        while gw.bus.position is None or not gw.bus.position.covers(target):
            await asyncio.sleep(0.05)

    rest_checked = 0
    wrong: list[str] = []
    for k, (case, subscriber) in enumerate(live):
        got = sorted(_seen(e) for e in _events(subscriber.outbox))
        if got != expected[k]:
            missing = [e for e in expected[k] if e not in got][:5]
            extra = [e for e in got if e not in expected[k]][:5]
            wrong.append(f"live {case.text!r}: missing {missing}, extra {extra}")
        if k < len(live) // 2:
            rest = await _rest(client, case)
            rest_checked += 1
            if rest != final[k]:
                wrong.append(f"REST {case.text!r}: {rest} != {final[k]}")
    # Resume: the same filters through the catch-up read of the log.
    for k, (case, _s) in enumerate(live[:RESUMING]):
        specs = await gw.parse_subscriptions([f"diff:{case.text}"])
        resumer = Subscriber("sse", Outbox(1 << 30), label="resume " + case.text)
        await gw.attach(resumer, specs, start)
        got = sorted(_seen(e) for e in _events(resumer.outbox))
        gw.detach(resumer)
        if got != expected[k]:
            wrong.append(f"resume {case.text!r}: {got[:5]} != {expected[k][:5]}")
    assert not wrong, f"seed {seed}:\n" + "\n".join(wrong[:20])
    assert gw.bus.errors.total == 0
    return (
        f"seed {seed}: {len(cases)} filters, {len(live)} accepted by PostgreSQL "
        f"and the stream ({refused_by_log} refused by the stream for JSON null), "
        f"{ROWS} rows x insert/update/delete compared live, {RESUMING} by resume, "
        f"{rest_checked} through REST: 0 disagreements"
    )
