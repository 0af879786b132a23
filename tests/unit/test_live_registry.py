"""The live-query registry's bookkeeping, without a database: a query whose
last other client leaves while a new one joins must not be left looking idle
(it would stop reading: the browser test's refresh() race, seen in CI)."""

from __future__ import annotations

import asyncio
from typing import Any

from pgpulse.live.registry import LiveQueries
from pgpulse.live.shared import SharedQuery
from pgpulse.log.change import Change
from pgpulse.routing.outbox import Outbox


def _change(i: int) -> Change:
    return Change(
        id=i,
        xid=100 + i,
        table="public.docs",
        name="docs",
        op="INSERT",
        pk=f'{{"id": {i}}}',
        row=f'{{"id": {i}}}',
        old=None,
        ts='"2026-01-01T00:00:00+00:00"',
        event_id=f"1:1:~2:2:~{i}",
    )


async def test_a_join_racing_the_last_leave_keeps_the_query_read() -> None:
    rows: list[dict[str, Any]] = [{"id": 1}]
    gate = asyncio.Event()
    gate.set()
    reads = 0

    async def fetch() -> list[dict[str, Any]]:
        nonlocal reads
        await gate.wait()
        reads += 1
        return list(rows)

    query = SharedQuery(
        "q", "docs", ["id"], frozenset({"public.docs"}), fetch, lambda r: []
    )

    async def create() -> tuple[SharedQuery, None]:
        return query, None

    live = LiveQueries()
    first = Outbox()
    await live.join("q", create, first)
    assert reads == 1 and query.version == 1

    # A read is running (slow) when a second client joins...
    gate.clear()
    rows.append({"id": 2})
    live.observe([_change(2)])
    second = Outbox()
    joining = asyncio.create_task(live.join("q", create, second))
    await asyncio.sleep(0)
    # ...and the first client leaves before the read ends.
    live.leave(query, first)
    rows.append({"id": 3})
    live.observe([_change(3)])  # looks idle: only marked stale
    gate.set()
    assert await joining is query
    await query.settled()
    assert query.idle_since is None
    # The change that came while it looked idle was read after all...
    assert [r["id"] for r in (query.rows[k] for k in query.keys)] == [1, 2, 3]
    # ...and later changes are read as they come.
    rows.append({"id": 4})
    live.observe([_change(4)])
    await query.settled()
    assert [query.rows[k]["id"] for k in query.keys] == [1, 2, 3, 4]
    assert second in query.outboxes
    await live.close()
