"""client.js in Chromium against a real gateway: callbacks, routing, live rows,
errors and resuming.

Each test opens a page on the gateway's origin, imports ``/v1/client.js`` in it
and drives it with ``page.evaluate``; the database is written with SQL.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Page

from pgpulse.log import prune
from tests.e2e.support import DemoGateway, deadline

pytestmark = pytest.mark.e2e

# A page on the gateway's origin with the client module loaded as `window.pg`,
# every state change in `window.states` and `record(name)`, a callback that
# collects its argument into `window[name]` (errors as plain objects).
SETUP = """
async () => {
  window.pg = await import("/v1/client.js");
  window.states = [];
  window.record = (name) => {
    window[name] = [];
    return (ev) => window[name].push(ev instanceof Error
      ? { name: ev.name, message: ev.message, status: ev.status, table: ev.table }
      : ev);
  };
}
"""

CONNECT = """
() => {
  window.pulse = pg.connect({ backoff: { initial: 100, max: 800 } });
  pulse.onState((state, detail) => states.push({ state, detail }));
}
"""


async def open_client(page: Page, gateway: DemoGateway) -> None:
    await page.goto(gateway.url + "/healthz")
    await page.evaluate(SETUP)
    await page.evaluate(CONNECT)


async def wait_live(page: Page) -> None:
    await page.wait_for_function("() => pulse.state === 'live'")


async def new_shipment(db: asyncpg.Connection, reference: str) -> int:
    shipment_id: int = await db.fetchval(
        "insert into shipments (reference, origin, destination)"
        " values ($1, 'Le Havre', 'Montreal') returning id",
        reference,
    )
    return shipment_id


async def new_document(
    db: asyncpg.Connection, shipment_id: int, title: str, status: str = "draft"
) -> int:
    document_id: int = await db.fetchval(
        "insert into documents (shipment_id, kind, title, status)"
        " values ($1, 'Invoice', $2, $3) returning id",
        shipment_id,
        title,
        status,
    )
    return document_id


async def events(page: Page, name: str, count: int) -> list[dict[str, Any]]:
    """Wait until `window[name]` holds at least *count* events and return them."""
    await page.wait_for_function(
        "([name, count]) => (window[name] || []).length >= count",
        arg=[name, count],
    )
    result: list[dict[str, Any]] = await page.evaluate("(name) => window[name]", name)
    return result


async def eventually(
    page: Page, expression: str, expected: Any, wait: float = 10
) -> Any:
    """Evaluate *expression* until it equals *expected* or *wait* seconds passed;
    return the last value (so a failing assert shows the difference)."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + wait
    while True:
        value = await page.evaluate(expression)
        if value == expected or loop.time() > stop_at:
            return value
        await asyncio.sleep(0.1)


@deadline(60)
async def test_subscribe_delivers_insert_update_delete_to_callbacks(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    await page.evaluate(
        """() => { pulse.subscribe("documents", {
             onChange: record("changes"), onInsert: record("inserts"),
             onUpdate: record("updates"), onDelete: record("deletes") }); }"""
    )
    await wait_live(page)
    shipment = await new_shipment(db, "CLI-1")
    doc = await new_document(db, shipment, "Customs declaration")
    await db.execute("update documents set status = 'review' where id = $1", doc)
    await db.execute("delete from documents where id = $1", doc)

    changes = await events(page, "changes", 3)
    assert [(c["op"], c["pk"]) for c in changes] == [
        ("INSERT", {"id": doc}),
        ("UPDATE", {"id": doc}),
        ("DELETE", {"id": doc}),
    ]
    assert all(c["table"] == "documents" and c["id"] for c in changes)
    assert changes[0]["row"]["title"] == "Customs declaration"
    assert changes[1]["row"]["status"] == "review"
    assert changes[1]["old"]["status"] == "draft"
    assert changes[2]["row"] is None and changes[2]["old"]["id"] == doc
    assert len(await events(page, "inserts", 1)) == 1
    assert len(await events(page, "updates", 1)) == 1
    assert len(await events(page, "deletes", 1)) == 1
    # Nothing about shipments reached a subscription on documents.
    await asyncio.sleep(0.3)
    assert len(await page.evaluate("() => changes")) == 3


@deadline(60)
async def test_filtered_subscription_sees_rows_moving_in_and_out(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    a = await new_shipment(db, "CLI-A")
    b = await new_shipment(db, "CLI-B")
    await page.evaluate(
        "(a) => { pulse.subscribe('documents', "
        "{ filter: `shipment_id=eq.${a}`, onChange: record('changes') }); }",
        a,
    )
    await wait_live(page)
    elsewhere = await new_document(db, b, "Other shipment's bill")
    doc = await new_document(db, a, "Bill of lading")
    await db.execute("update documents set shipment_id = $1 where id = $2", b, doc)
    await db.execute("update documents set shipment_id = $1 where id = $2", a, doc)

    changes = await events(page, "changes", 3)
    assert [(c["op"], c["pk"]["id"], c.get("moved", False)) for c in changes] == [
        ("INSERT", doc, False),
        ("DELETE", doc, True),
        ("INSERT", doc, True),
    ]
    assert changes[1]["row"] is None and changes[1]["old"]["shipment_id"] == a
    await asyncio.sleep(0.3)
    ids = await page.evaluate("() => changes.map((c) => c.pk.id)")
    assert elsewhere not in ids


@deadline(60)
async def test_two_subscriptions_on_one_table_each_see_only_their_filter(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    a = await new_shipment(db, "CLI-A")
    b = await new_shipment(db, "CLI-B")
    await page.evaluate(
        """([a, b]) => {
             pulse.subscribe("documents", { filter: `shipment_id=eq.${a}`,
                                            onChange: record("forA") });
             pulse.subscribe("documents", { filter: `shipment_id=eq.${b}`,
                                            onChange: record("forB") });
             pulse.subscribe("documents", { onChange: record("all") });
           }""",
        [a, b],
    )
    await wait_live(page)
    doc_a = await new_document(db, a, "for A")
    doc_b = await new_document(db, b, "for B")
    await db.execute("update documents set shipment_id = $1 where id = $2", b, doc_a)

    everything = await events(page, "all", 3)
    assert [c["op"] for c in everything] == ["INSERT", "INSERT", "UPDATE"]
    for_a = await events(page, "forA", 2)
    for_b = await events(page, "forB", 2)
    assert [(c["op"], c["pk"]["id"]) for c in for_a] == [
        ("INSERT", doc_a),
        ("DELETE", doc_a),
    ]
    assert [(c["op"], c["pk"]["id"]) for c in for_b] == [
        ("INSERT", doc_b),
        ("INSERT", doc_a),
    ]
    assert for_a[1]["moved"] and for_b[1]["moved"]
    # One stream carries all three subscriptions.
    assert await page.evaluate("() => pulse.stats.connects") == 1


@deadline(90)
async def test_live_rows_converge_after_concurrent_writes(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    shipment = await new_shipment(db, "CLI-LIVE")
    for i in range(20):
        await new_document(db, shipment, f"seed {i}")
    rng = random.Random(7)

    async def writer(n: int) -> None:
        conn = await asyncpg.connect(gateway.dsn)
        try:
            mine: list[int] = []
            for step in range(40):
                choice = rng.random()
                if choice < 0.45 or not mine:
                    mine.append(await new_document(conn, shipment, f"w{n}-{step}"))
                elif choice < 0.8:
                    await conn.execute(
                        "update documents set title = $1, status = $2 where id = $3",
                        f"w{n}-{step} edited",
                        rng.choice(["draft", "review", "approved", "rejected"]),
                        rng.choice(mine),
                    )
                else:
                    await conn.execute(
                        "delete from documents where id = $1",
                        mine.pop(rng.randrange(len(mine))),
                    )
                await asyncio.sleep(rng.random() * 0.01)
        finally:
            await conn.close()

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    await asyncio.sleep(0.05)
    # The initial fetch and a refresh both happen while the writers run.
    await page.evaluate(
        """(s) => {
             window.rowsSeen = 0;
             window.live = pulse.live("documents", {
               filter: `shipment_id=eq.${s}`, order: "id",
               onRows: () => { window.rowsSeen += 1; },
               onChange: record("changes") });
           }""",
        shipment,
    )
    await page.wait_for_function("() => live.loaded")
    await page.evaluate("() => live.refresh()")
    await asyncio.gather(*writers)

    rows = await db.fetch(
        "select id, title, status from documents where shipment_id = $1 order by id",
        shipment,
    )
    expected = [[r["id"], r["title"], r["status"]] for r in rows]
    shown = "() => live.rows.map((r) => [r.id, r.title, r.status])"
    got = await eventually(page, shown, expected)
    if got != expected:
        # Say which rows differ and what the page received about them.
        want = {r[0]: r for r in expected}
        have = {r[0]: r for r in got}
        wrong = sorted(
            k for k in want.keys() | have.keys() if want.get(k) != have.get(k)
        )
        received = await page.evaluate("() => changes")
        history = [
            (c["op"], c["pk"]["id"], (c["row"] or {}).get("title"))
            for c in received
            if c["pk"].get("id") in wrong
        ]
        pytest.fail(
            f"rows differ: want {[want.get(k) for k in wrong]}, "
            f"have {[have.get(k) for k in wrong]}; events about them: {history}"
        )
    assert await page.evaluate("() => window.rowsSeen") > 1


@deadline(60)
async def test_live_refetches_after_truncate(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    await page.evaluate(
        "() => { window.live = pulse.live('documents', { order: 'id' }); }"
    )
    await page.wait_for_function("() => live.loaded && live.rows.length > 0")
    await db.execute("truncate documents")
    shipment = await new_shipment(db, "CLI-T")
    doc = await new_document(db, shipment, "after truncate")
    await page.wait_for_function(
        "(doc) => live.rows.length === 1 && live.rows[0].id === doc", arg=doc
    )


@deadline(60)
async def test_live_shows_the_servers_message_when_the_query_is_refused(
    page: Page, gateway: DemoGateway
) -> None:
    """A query the server refuses: live() shows its message, state error,
    and does not retry."""
    async with httpx.AsyncClient() as client:
        response = await client.get(
            gateway.url + "/v1/live", params={"table": "documents", "order": "id.up"}
        )
    assert response.status_code == 400
    message = response.json()["error"]
    assert "unknown order modifier 'up'" in message
    await open_client(page, gateway)
    requests: list[str] = []
    page.on(
        "request", lambda r: requests.append(r.url) if "/v1/live" in r.url else None
    )
    await page.evaluate(
        "() => { window.live = pulse.live('documents', { order: 'id.up' }); }"
    )
    await page.wait_for_function("() => live.error !== null")
    assert await page.evaluate("() => live.error.message") == message
    assert await page.evaluate("() => live.state") == "error"
    assert await page.evaluate("() => pulse.state") == "error"
    seen = len(requests)
    await asyncio.sleep(1.5)
    assert len(requests) == seen, "the client retried a refused query"


@deadline(60)
async def test_subscribing_to_unknown_table_reports_server_message_without_retrying(
    page: Page, gateway: DemoGateway
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(gateway.url + "/v1/events", params={"sub": "nope"})
    assert response.status_code in (400, 404)
    message = response.json()["error"]

    await open_client(page, gateway)
    requests: list[str] = []
    page.on(
        "request",
        lambda r: requests.append(r.url) if "/v1/events" in r.url else None,
    )
    await page.evaluate(
        "() => { window.sub = pulse.subscribe('nope', { onError: record('errors') }); }"
    )
    await page.wait_for_function("() => pulse.state === 'error'")
    errors = await events(page, "errors", 1)
    assert errors[0]["message"] == message
    assert await page.evaluate("() => pulse.detail.message") == message
    assert await page.evaluate("() => pulse.detail.status") == response.status_code
    seen = len(requests)
    await asyncio.sleep(1.5)
    assert len(requests) == seen, "the client retried a rejected subscription"
    assert await page.evaluate("() => pulse.state") == "error"


@deadline(60)
async def test_unsubscribing_a_rejected_subscription_resumes_the_others_without_loss(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    await page.evaluate(
        "() => { pulse.subscribe('documents', { onChange: record('changes'),"
        " onError: record('goodErrors') }); }"
    )
    await wait_live(page)
    shipment = await new_shipment(db, "CLI-E")
    first = await new_document(db, shipment, "before the bad subscription")
    await events(page, "changes", 1)
    await page.evaluate(
        "() => { window.bad = pulse.subscribe('nope', { onError: record('errors') }); }"
    )
    await page.wait_for_function("() => pulse.state === 'error'")
    assert len(await events(page, "errors", 1)) == 1
    # Written while the connection is in error: delivered once the set is fixed.
    second = await new_document(db, shipment, "while in error")
    await page.evaluate("() => bad.unsubscribe()")
    await wait_live(page)
    changes = await events(page, "changes", 2)
    assert [c["pk"]["id"] for c in changes] == [first, second]
    assert await page.evaluate("() => goodErrors.length") == 0


@deadline(90)
async def test_client_resumes_after_server_restart_without_gaps_or_duplicates(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    await page.evaluate(
        "() => { pulse.subscribe('documents', { onChange: record('changes') }); }"
    )
    await wait_live(page)
    shipment = await new_shipment(db, "CLI-R")
    before = await new_document(db, shipment, "before the crash")
    await events(page, "changes", 1)

    gateway.kill()
    await page.wait_for_function("() => pulse.state === 'reconnecting'")
    during = [await new_document(db, shipment, f"while down {i}") for i in range(3)]
    await db.execute("update documents set status = 'review' where id = $1", before)
    await gateway.start()
    await page.wait_for_function(
        "() => pulse.state === 'live' && pulse.detail.resumed === true"
    )
    after = await new_document(db, shipment, "after the restart")

    changes = await events(page, "changes", 6)
    assert [(c["op"], c["pk"]["id"]) for c in changes] == [
        ("INSERT", before),
        *[("INSERT", d) for d in during],
        ("UPDATE", before),
        ("INSERT", after),
    ]
    await asyncio.sleep(0.3)
    assert await page.evaluate("() => changes.length") == 6
    states = await page.evaluate("() => states.map((s) => s.state)")
    assert "reconnecting" in states


@deadline(90)
async def test_live_rows_stay_equal_through_a_restart_and_a_pruned_log(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    """The gateway dies; meanwhile rows change and the log is pruned; the new
    gateway cannot resume the patches and sends a fresh snapshot: the page's
    rows equal the database again, never a mix."""
    await open_client(page, gateway)
    await page.evaluate(
        """() => { window.live = pulse.live("documents", { order: "id" });
                   window.seen = []; live.subscribe((rows) => seen.push(rows)); }"""
    )
    await page.wait_for_function("() => live.loaded")
    gateway.kill()
    await page.wait_for_function("() => pulse.state === 'reconnecting'")
    shipment = await new_shipment(db, "CLI-P")
    doc = await new_document(db, shipment, "written, then pruned from the log")
    await db.execute("delete from documents where id <> $1", doc)
    await prune.prune(db, keep_rows=0)
    await gateway.start()
    await page.wait_for_function(
        "(doc) => live.rows.length === 1 && live.rows[0].id === doc", arg=doc
    )
    await page.wait_for_function("() => pulse.state === 'live'")
    # Every state the page was shown was the database's at some point: the
    # rows before, or the one row after, never a mix of the two.
    sizes = await page.evaluate("() => seen.map((rows) => rows.length)")
    assert sizes[-1] == 1 and all(n != 0 for n in sizes[1:]), sizes


@deadline(60)
async def test_subscription_changes_are_coalesced_into_one_stream(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    streams: list[str] = []
    page.on(
        "request",
        lambda r: streams.append(r.url) if "/v1/events" in r.url else None,
    )
    await page.evaluate(
        """() => {
             pulse.subscribe("documents", { onChange: record("docs") });
             pulse.subscribe("shipments", { onChange: record("ships") });
             pulse.subscribe("documents", { filter: "status=eq.review" }).unsubscribe();
           }"""
    )
    await wait_live(page)
    shipment = await new_shipment(db, "CLI-C")
    await new_document(db, shipment, "coalesced")
    assert len(await events(page, "ships", 1)) == 1
    assert len(await events(page, "docs", 1)) == 1
    assert len(streams) == 1, streams
    assert "sub=documents&sub=shipments" in streams[0]


@deadline(60)
async def test_rejected_cursor_starts_over_from_now_with_a_reset(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await page.goto(gateway.url + "/healthz")
    await page.evaluate(SETUP)
    await page.evaluate(
        """() => {
             window.pulse = pg.connect({ cursor: "not-a-cursor" });
             pulse.subscribe("documents", {
               onReset: record("resets"), onError: record("errors") });
             window.live = pulse.live("documents", {
               order: "id", onError: record("errors") });
           }"""
    )
    resets = await events(page, "resets", 1)
    assert resets[0]["reason"]
    await wait_live(page)
    count: int = await db.fetchval("select count(*) from documents")
    await page.wait_for_function(
        "(count) => live.loaded && live.rows.length === count", arg=count
    )
    assert await page.evaluate("() => errors.length") == 0
    assert await page.evaluate("() => pulse.cursor") != "not-a-cursor"


@deadline(60)
async def test_live_with_order_and_limit_keeps_the_top_rows(
    page: Page, gateway: DemoGateway, db: asyncpg.Connection
) -> None:
    await open_client(page, gateway)
    shipment = await new_shipment(db, "CLI-TOP")
    await page.evaluate(
        """(s) => { window.live = pulse.live("documents", {
             filter: `shipment_id=eq.${s}`, order: "id.desc", limit: 3 }); }""",
        shipment,
    )
    await page.wait_for_function("() => live.loaded")
    ids = [await new_document(db, shipment, f"top {i}") for i in range(5)]
    shown = "() => live.rows.map((r) => r.id)"
    assert await eventually(page, shown, ids[:1:-1]) == ids[:1:-1]
    # Deleting the newest pulls the next one back into the window.
    await db.execute("delete from documents where id = $1", ids[-1])
    assert await eventually(page, shown, ids[3:0:-1]) == ids[3:0:-1]
