"""No JIT on pgpulse's own statements (the distribution's PostgreSQL has JIT on).

Before: enable_seqscan=off priced the listener read's scans of the one-row
pgpulse.state and of pgpulse.watched at 10^10, far above jit_above_cost, so on
Debian's PostgreSQL 15 every read was JIT-compiled: p50 273 ms at one client
instead of under a millisecond.  This pins it both ways: the read *would* be
compiled without pgpulse's settings on this server, and is not with them; and
after real traffic through a gateway (live delivery, filters PostgreSQL
evaluates, a resume, pruning, catalog reads) pg_stat_statements counts no JIT
function at all.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx

from pgpulse import capture
from pgpulse.log.changelog import _FAST_SQL, READ_SETTINGS
from tests.gateway import SSEStream


def _jit(plan: Any) -> dict[str, Any] | None:
    return plan[0].get("JIT")  # type: ignore[no-any-return]


async def _explain(conn: asyncpg.Connection, settings: dict[str, str]) -> Any:
    async with conn.transaction():
        for name, value in settings.items():
            await conn.execute(f"set local {name} = {value}")
        text = await conn.fetchval(
            f"explain (analyze, format json) {_FAST_SQL}", "0", [], 501
        )
    return json.loads(text)


async def test_the_listener_read_is_not_jit_compiled(conn):
    await conn.execute("create table docs (id int primary key, t text)")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs select g, 'x' from generate_series(1, 50) g")
    jit_server = await conn.fetchval("select pg_jit_available()")
    if jit_server:
        # The same read with the old settings (enable_seqscan=off, JIT on):
        # compiled.  So the assertion below could fail.
        old = {k: v for k, v in READ_SETTINGS.items() if k != "jit"}
        assert _jit(await _explain(conn, old)) is not None
    assert _jit(await _explain(conn, READ_SETTINGS)) is None


async def test_no_pgpulse_statement_is_jit_compiled_under_real_traffic(
    conn, gateway_factory
):
    await conn.execute(
        "create table docs (id int primary key, title text, tags text[])"
    )
    await capture.watch(conn, "docs")
    await conn.execute("select pg_stat_statements_reset()")
    gw = gateway_factory("--keep-rows", "100", "--prune-every", "0.5")
    async with SSEStream(
        gw.url, ["docs", "docs:title=ilike.*a*", "docs:tags=cs.{x}"]
    ) as stream:
        cursor = (await stream.next_event()).id
        for i in range(200):
            await conn.execute("insert into docs values ($1, 'a', '{x}')", i)
        await stream.changes(200, timeout=60)
    async with SSEStream(gw.url, ["docs:title=ilike.*a*"], last_event_id=cursor) as s:
        await s.next_event()
    httpx.get(gw.url + "/healthz")
    compiled = await conn.fetch(
        "select query, jit_functions from pg_stat_statements s "
        "join pg_database d on d.oid = s.dbid "
        "where d.datname = current_database() and jit_functions > 0"
    )
    assert compiled == [], compiled
    calls = await conn.fetchval(
        "select sum(calls) from pg_stat_statements s join pg_database d "
        "on d.oid = s.dbid where d.datname = current_database() "
        "and query like '%pgpulse.changes%'"
    )
    assert calls > 10  # the traffic did reach the log
