"""Live queries over a real gateway: ``/v1/live`` gives a snapshot, then
patches that keep every client's rows equal, in order, to what the query
returns (checked against PostgreSQL after randomized writes), shared by the
clients who ask the same query, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import httpx
import orjson
import pytest

from pgpulse import capture
from pgpulse.live.view import LiveRows


async def _schema(conn: Any) -> None:
    await conn.execute("create table shipments (id int primary key, port text)")
    await conn.execute(
        "create table docs (id int primary key, shipment_id int references "
        "shipments, title text not null, rank int, note text)"
    )
    await conn.execute(
        "insert into shipments select g, 'port ' || g from generate_series(1, 4) g"
    )
    await conn.execute(
        "insert into docs select g, 1 + g % 3, 'doc ' || g, g % 7, null "
        "from generate_series(1, 30) g"
    )
    await capture.watch(conn, "shipments")
    await capture.watch(conn, "docs")


class LiveStream:
    """One ``/v1/live`` stream, applied to a :class:`LiveRows` as it arrives."""

    def __init__(self, url: str, params: dict[str, str], last_id: str | None = None):
        self.view = LiveRows()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.last_id = last_id
        self.consistent = asyncio.Event()
        self.states: list[list[dict[str, Any]]] = []
        """The rows at every consistent point (snapshot, sync)."""
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
        headers = {"last-event-id": last_id} if last_id else {}
        self._request = self._client.build_request(
            "GET", url + "/v1/live", params=params, headers=headers
        )
        self._task: asyncio.Task[None] | None = None
        self.response: httpx.Response | None = None

    async def __aenter__(self) -> LiveStream:
        self.response = await self._client.send(self._request, stream=True)
        assert self.response.status_code == 200, await self.response.aread()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.response is not None:
            await self.response.aclose()
        await self._client.aclose()

    async def _read(self) -> None:
        assert self.response is not None
        event, eid = "message", None
        data: list[str] = []
        async for line in self.response.aiter_lines():
            if line == "":
                if data:
                    body = orjson.loads("\n".join(data))
                    self.events.append((event, body))
                    if self.view.apply(event, body):
                        self.states.append(self.view.rows)
                        self.consistent.set()
                    if eid is not None:
                        self.last_id = eid
                event, eid, data = "message", None, []
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                eid = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])

    async def equal(self, expected: Any, timeout: float = 20.0) -> None:
        """Wait until the rows equal *expected* (a list, or a coroutine
        function returning it) at a consistent point."""
        async with asyncio.timeout(timeout):
            while True:
                want = expected if isinstance(expected, list) else await expected()
                if self.consistent.is_set() and self.view.rows == want:
                    return
                self.consistent.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.consistent.wait()


async def _rows(conn: Any, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql)]


async def _random_writes(conn: Any, rng: random.Random, rounds: int) -> None:
    for _ in range(rounds):
        async with conn.transaction():
            for _ in range(rng.randrange(1, 6)):
                i = rng.randrange(1, 60)
                roll = rng.random()
                if roll < 0.4:
                    await conn.execute(
                        "insert into docs values ($1, $2, $3, $4, null) "
                        "on conflict (id) do update set shipment_id = $2, rank = $4",
                        i,
                        rng.randrange(1, 5),
                        f"doc {i}",
                        rng.choice([None, *range(8)]),
                    )
                elif roll < 0.7:
                    await conn.execute(
                        "update docs set rank = $2 where id = $1",
                        i,
                        rng.choice([None, *range(8)]),
                    )
                elif roll < 0.8:
                    await conn.execute(
                        "update docs set note = $2 where id = $1", i, str(rng.random())
                    )
                else:
                    await conn.execute("delete from docs where id = $1", i)
        await asyncio.sleep(rng.random() * 0.01)


async def _window_after_each_commit(
    conn: Any, start: list[Any], after_id: int
) -> set[bytes]:
    """WINDOW's result after each transaction in the log after *after_id*,
    computed by replaying the logged rows onto the table as it was."""
    table = {r["id"]: dict(r) for r in start}

    def window() -> bytes:
        rows = [r for r in table.values() if r["shipment_id"] == 1]
        # rank desc nulls last, then id
        rows.sort(key=lambda r: (r["rank"] is None, -(r["rank"] or 0), r["id"]))
        picked = [{"id": r["id"], "title": r["title"], "rank": r["rank"]} for r in rows]
        return orjson.dumps(picked[:5])

    out = {window()}
    changes = await conn.fetch(
        "select xid::text as xid, row::text as row, old::text as old "
        "from pgpulse.changes "
        "where tbl = 'public.docs' and id > $1 order by id",
        after_id,
    )
    for i, change in enumerate(changes):
        row = orjson.loads(change["row"]) if change["row"] else None
        old = orjson.loads(change["old"]) if change["old"] else None
        if old is not None:
            table.pop(old["id"], None)
        if row is not None:
            table[row["id"]] = row
        last = i + 1 == len(changes) or changes[i + 1]["xid"] != change["xid"]
        if last:
            out.add(window())
    return out


WINDOW = {
    "table": "docs",
    "select": "id,title,rank",
    "shipment_id": "eq.1",
    "order": "rank.desc.nullslast",
    "limit": "5",
}
WINDOW_SQL = (
    "select id, title, rank from docs where shipment_id = 1 "
    "order by rank desc nulls last, id limit 5"
)


async def test_a_window_stays_exactly_what_the_query_returns(conn, gateway_factory):
    """order + limit under random writes: rows entering, leaving (the next
    one coming in), ties broken by key, a moved row whose selected columns
    did not change; several clients, one shared query."""
    await _schema(conn)
    gw = gateway_factory("--rest", env={"PGPULSE_METRICS_TOKEN": "scrape"})
    streams = [LiveStream(gw.url, WINDOW) for _ in range(4)]
    try:
        for stream in streams:
            await stream.__aenter__()
        for stream in streams:
            await stream.equal(await _rows(conn, WINDOW_SQL))
        assert streams[0].events[0][0] == "snapshot"
        snapshot = streams[0].events[0][1]
        assert snapshot["key"] == ["id"]
        assert [c["name"] for c in snapshot["columns"]] == ["id", "title", "rank"]
        assert snapshot["columns"][2] == {
            "name": "rank",
            "type": "integer",
            "nullable": True,
        }
        start = await conn.fetch("select * from docs")
        logged_from = await conn.fetchval(
            "select coalesce(max(id), 0) from pgpulse.changes"
        )
        await _random_writes(conn, random.Random(5), 150)
        for stream in streams:
            await stream.equal(lambda: _rows(conn, WINDOW_SQL))
        # At every consistent point, a client's rows were the query's result
        # at some commit: replay the log (one writer: ids follow commits).
        results = await _window_after_each_commit(conn, start, logged_from)
        for stream in streams:
            for state in stream.states:
                assert orjson.dumps(state) in results, state
        for stream in streams:
            kinds = [e for e, _ in stream.events]
            assert kinds.count("snapshot") == 1
            assert {"insert", "update", "delete", "sync"} <= set(kinds)
            # Every consistent point is a window: at most 5 rows, in order.
            for rows in stream.states:
                assert len(rows) <= 5
                ranks = [
                    (-1 if r["rank"] is None else r["rank"], -r["id"]) for r in rows
                ]
                assert ranks == sorted(ranks, reverse=True), rows
        # The same bytes went to every client.
        assert all(s.events == streams[0].events for s in streams[1:])
        metrics = await _metrics(gw)
        assert metrics["pgpulse_live_queries"] == 1
        assert metrics["pgpulse_live_clients"] == 4
    finally:
        for stream in streams:
            await stream.close()


async def test_embedded_rows_follow_changes_to_either_table(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory("--rest")
    docs_sql = (
        "select d.id, d.title, json_build_object('port', s.port) as shipments "
        "from docs d left join shipments s on s.id = d.shipment_id "
        "where d.id <= 5 order by d.id"
    )
    nested_sql = (
        "select s.id, s.port, coalesce((select json_agg(json_build_object("
        "'id', d.id) order by d.id) from docs d where d.shipment_id = s.id), "
        "'[]') as docs from shipments s order by s.id"
    )

    async def docs_rows() -> list[dict[str, Any]]:
        rows = await _rows(conn, docs_sql)
        for r in rows:
            r["shipments"] = orjson.loads(r["shipments"])
            if r["shipments"] == {"port": None}:
                r["shipments"] = None
        return rows

    async def nested_rows() -> list[dict[str, Any]]:
        rows = await _rows(conn, nested_sql)
        for r in rows:
            r["docs"] = orjson.loads(r["docs"])
        return rows

    many_to_one = {
        "table": "docs",
        "select": "id,title,shipments(port)",
        "id": "lte.5",
        "order": "id",
    }
    one_to_many = {"table": "shipments", "select": "id,port,docs(id)", "order": "id"}
    async with (
        LiveStream(gw.url, many_to_one) as docs,
        LiveStream(gw.url, one_to_many) as nested,
    ):
        await docs.equal(docs_rows)
        await nested.equal(nested_rows)
        # A shipment's port changes inside every document that embeds it.
        await conn.execute("update shipments set port = 'Oslo' where id = 2")
        await docs.equal(docs_rows)
        # A new document appears inside its shipment.
        await conn.execute("insert into docs values (99, 3, 'new', 1, null)")
        await nested.equal(nested_rows)
        await conn.execute("update docs set shipment_id = 1 where id = 99")
        await nested.equal(nested_rows)
        assert docs.events[0][0] == "snapshot"
        assert {e for e, _ in docs.events[1:]} <= {"update", "sync"}


async def test_reconnecting_with_last_event_id_resumes_the_patches(
    conn, gateway_factory
):
    await _schema(conn)
    gw = gateway_factory("--rest", env={"PGPULSE_METRICS_TOKEN": "scrape"})
    async with LiveStream(gw.url, WINDOW) as first:
        await first.equal(await _rows(conn, WINDOW_SQL))
        # Documents 3, 6, 9... are shipment 1's.
        await conn.execute("update docs set rank = 100 where id = 9")
        await first.equal(lambda: _rows(conn, WINDOW_SQL))
        last_id = first.last_id
        rows = first.view.rows
    assert last_id is not None and not last_id.endswith(".1")
    # While nobody listens, the query is not read; a returning client gets
    # one read's difference as a patch set.
    await asyncio.sleep(0.5)
    reads = (await _metrics(gw))["pgpulse_live_refreshes_total"]
    await conn.execute("update docs set rank = 101 where id = 12")
    await conn.execute("delete from docs where id = 9")
    await asyncio.sleep(1.0)
    assert (await _metrics(gw))["pgpulse_live_refreshes_total"] == reads
    second = LiveStream(gw.url, WINDOW, last_id=last_id)
    second.view = first.view
    async with second:
        try:
            await second.equal(lambda: _rows(conn, WINDOW_SQL))
        except TimeoutError:
            raise AssertionError(
                f"{last_id} {second.events} {second.view.rows} "
                f"{await _rows(conn, WINDOW_SQL)} {gw.log()[-2000:]}"
            ) from None
        assert second.events[0][0] != "snapshot", second.events[:3]
        assert second.view.rows != rows
        assert (await _metrics(gw))["pgpulse_live_refreshes_total"] == reads + 1
    # An id the server no longer knows gets a fresh snapshot, never a mix.
    stale = ".".join([*last_id.split(".")[:2], "99"])  # a version it never had
    epoch = ".".join([last_id.split(".")[0], "00000000", "1"])  # another state's
    for unknown in (stale, epoch, "0000000000000000.1.3"):
        async with LiveStream(gw.url, WINDOW, last_id=unknown) as third:
            await third.equal(lambda: _rows(conn, WINDOW_SQL))
            assert third.events[0][0] == "snapshot", unknown
    async with LiveStream(gw.url, WINDOW, last_id="0000000000000000.3") as third:
        await third.equal(lambda: _rows(conn, WINDOW_SQL))
        assert third.events[0][0] == "snapshot"


async def test_changes_that_cannot_match_cost_no_read(conn, gateway_factory):
    """Counted work: changes to rows of other shipments, in and out of the
    table, are dropped before any database round trip."""
    await _schema(conn)
    gw = gateway_factory("--rest", env={"PGPULSE_METRICS_TOKEN": "scrape"})
    async with LiveStream(gw.url, WINDOW) as stream:
        await stream.equal(await _rows(conn, WINDOW_SQL))
        before = await _metrics(gw)
        for i in range(20):
            await conn.execute("update docs set rank = $1 where shipment_id = 2", i)
        await conn.execute("update docs set rank = 50 where id = 3")  # shipment 1
        await stream.equal(lambda: _rows(conn, WINDOW_SQL))
        after = await _metrics(gw)
    assert (
        after["pgpulse_live_skipped_total"] - before["pgpulse_live_skipped_total"] >= 20
    )
    assert (
        after["pgpulse_live_refreshes_total"] - before["pgpulse_live_refreshes_total"]
        <= 2
    )


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "name the table"),
        ({"table": "nope"}, 404, "'nope' does not exist"),
        ({"table": "docs", "select": "title"}, 400, "add id to select"),
        ({"table": "docs", "titel": "eq.x"}, 400, "Did you mean 'title'"),
        ({"table": "docs", "limit": "100000"}, 400, "the most rows a live query keeps"),
        ({"table": "docs", "order": "id.sideways"}, 400, "unknown order modifier"),
    ],
)
async def test_bad_live_queries_are_refused_with_the_reason(
    conn, gateway_factory, params, status, message
):
    await _schema(conn)
    gw = gateway_factory("--rest")
    async with httpx.AsyncClient() as client:
        response = await client.get(gw.url + "/v1/live", params=params)
    assert response.status_code == status
    assert message in response.json()["error"]


async def test_live_queries_need_rest_or_auth(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory()
    async with httpx.AsyncClient() as client:
        response = await client.get(gw.url + "/v1/live", params={"table": "docs"})
    assert response.status_code == 403
    assert "--rest" in response.json()["error"]


async def _metrics(gw: Any) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            gw.url + "/metrics", headers={"authorization": "Bearer scrape"}
        )
    out = {}
    for line in response.text.splitlines():
        if line.startswith("pgpulse_live_"):
            name, value = line.split()
            out[name] = float(value)
    return out


async def test_python_client_yields_the_rows_through_a_gateway_restart(
    conn, gateway_factory
):
    """``Client.live()``: the rows at every consistent point; after the
    gateway is killed and started again (its state gone), a fresh snapshot,
    and the rows stay the query's."""
    from pgpulse.clients import Client

    await _schema(conn)
    gw = gateway_factory("--rest")
    seen: list[list[dict[str, Any]]] = []

    async def follow(client: Client) -> None:
        async for rows in client.live(
            "docs",
            select="id,title,rank",
            filters={"shipment_id": "eq.1"},
            order="rank.desc.nullslast",
            limit=5,
        ):
            seen.append(rows)

    async def converged() -> None:
        async with asyncio.timeout(20):
            while not seen or seen[-1] != await _rows(conn, WINDOW_SQL):
                await asyncio.sleep(0.05)

    async with Client(gw.url, backoff_max=0.5) as client:
        task = asyncio.create_task(follow(client))
        try:
            await converged()
            await conn.execute("update docs set rank = 90 where id = 6")
            await converged()
            gw.kill()
            await conn.execute("update docs set rank = 91 where id = 9")
            gw.start()
            await converged()
            await conn.execute("delete from docs where id = 6")
            await converged()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(seen) >= 4


async def test_a_migration_re_snapshots_instead_of_sending_rows_of_another_shape(
    conn, gateway_factory, tmp_path
):
    """`pgpulse migrate` tells running gateways; a live query of `*` then gets
    a new snapshot with the column added, and after a drop one without it."""
    from pgpulse.migrate import apply_migrations

    await _schema(conn)
    gw = gateway_factory("--rest")
    params = {"table": "docs", "order": "id", "limit": "3"}
    sql = "select * from docs order by id limit 3"
    async with LiveStream(gw.url, params) as stream:
        await stream.equal(await _rows(conn, sql))
        folder = tmp_path / "migrations"
        folder.mkdir()
        (folder / "0001_add_label.sql").write_text(
            "alter table docs add column label text not null default 'new';"
        )
        await apply_migrations(conn, folder)
        await stream.equal(lambda: _rows(conn, sql))
        assert stream.view.rows[0]["label"] == "new"
        snapshot = [d for e, d in stream.events if e == "snapshot"][-1]
        assert {"name": "label", "type": "text", "nullable": False} in snapshot[
            "columns"
        ]
        (folder / "0002_drop_note.sql").write_text("alter table docs drop column note;")
        await apply_migrations(conn, folder)
        await stream.equal(lambda: _rows(conn, sql))
        assert "note" not in stream.view.rows[0]
        # Never a patch of another shape: each shape came as a snapshot.
        kinds = [e for e, _ in stream.events]
        assert kinds.count("snapshot") == 3, kinds


async def test_live_queries_over_one_websocket_with_subscriptions(
    conn, gateway_factory
):
    """``{"type": "live"}`` on /v1/ws: several live queries and a change
    subscription share one connection; each patch set is one frame; a
    reconnect resumes with last_event_id; an unknown table is an error for
    that ref only."""
    import websockets

    await _schema(conn)
    gw = gateway_factory("--rest")
    url = f"ws://127.0.0.1:{gw.port}/v1/ws"
    views: dict[str, LiveRows] = {}
    by_query: dict[str, str] = {}
    last: dict[str, str] = {}

    async def pump(ws: Any, until: Any) -> None:
        async with asyncio.timeout(20):
            while not await until():
                frame = orjson.loads(await ws.recv())
                kind = frame["type"]
                if kind == "live":
                    by_query[frame["query"]] = frame["ref"]
                    views.setdefault(frame["ref"], LiveRows())
                elif kind == "snapshot":
                    views[by_query[frame["query"]]].apply("snapshot", frame["data"])
                    last[by_query[frame["query"]]] = frame["id"]
                elif kind == "patch":
                    view = views[by_query[frame["query"]]]
                    for op in frame["ops"]:
                        view.apply(op.pop("op"), op)
                    view.apply("sync", {"version": frame["version"]})
                    last[by_query[frame["query"]]] = frame["id"]
                elif kind == "error":
                    views.setdefault(f"error:{frame.get('ref')}", LiveRows())

    async def equal() -> bool:
        return "w" in views and views["w"].rows == await _rows(conn, WINDOW_SQL)

    window = {k: v for k, v in WINDOW.items() if k not in ("shipment_id",)}
    async with websockets.connect(url) as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "live",
                    "ref": "w",
                    **window,
                    "filters": {"shipment_id": "eq.1"},
                }
            ).decode()
        )
        await ws.send(
            orjson.dumps({"type": "live", "ref": "x", "table": "nope"}).decode()
        )
        await ws.send(
            orjson.dumps({"type": "subscribe", "ref": "s", "sub": "docs"}).decode()
        )
        await pump(ws, equal)
        await conn.execute("update docs set rank = 77 where id = 3")
        await pump(ws, equal)
        assert "error:x" in views
    saved = last["w"]
    await conn.execute("update docs set rank = 78 where id = 6")
    async with websockets.connect(url) as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "live",
                    "ref": "w",
                    **window,
                    "filters": {"shipment_id": "eq.1"},
                    "last_event_id": saved,
                }
            ).decode()
        )
        first = orjson.loads(await ws.recv())
        while first["type"] == "ready":  # the connection's own greeting
            first = orjson.loads(await ws.recv())
        assert first["type"] == "live"
        resumed = orjson.loads(await ws.recv())
        assert resumed["type"] == "patch", resumed  # not a snapshot
        view = views["w"]
        for op in resumed["ops"]:
            view.apply(op.pop("op"), op)
        await pump(ws, equal)


async def test_a_live_query_from_the_database_without_a_gateway(conn, database):
    from pgpulse.clients import live_query

    await _schema(conn)
    seen: list[list[dict[str, Any]]] = []

    async def follow() -> None:
        async for rows in live_query(
            database,
            "docs",
            select="id,title,rank",
            filters={"shipment_id": "eq.1"},
            order="rank.desc.nullslast",
            limit=5,
        ):
            seen.append(rows)

    async def converged() -> None:
        async with asyncio.timeout(20):
            while not seen or seen[-1] != await _rows(conn, WINDOW_SQL):
                await asyncio.sleep(0.05)

    task = asyncio.create_task(follow())
    try:
        await converged()
        await conn.execute("update docs set rank = 55 where id = 3")
        await converged()
        await conn.execute("delete from docs where id = 3")
        await converged()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(seen) >= 3


async def test_a_result_too_large_to_keep_is_refused_with_the_reason(
    conn, gateway_factory
):
    await _schema(conn)
    await conn.execute(
        "insert into docs select g, 1, 'bulk', 0, null "
        "from generate_series(1000, 11000) g"
    )
    gw = gateway_factory("--rest")
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(gw.url + "/v1/live", params={"table": "docs"})
        assert response.status_code == 400
        assert "more than 10,000 rows" in response.json()["error"]
        assert "add a filter or a limit" in response.json()["error"]
    # With a limit it is served.
    async with LiveStream(gw.url, {"table": "docs", "limit": "100"}) as stream:
        await stream.equal(
            lambda: _rows(conn, "select * from docs order by id limit 100")
        )
