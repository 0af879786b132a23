"""Routing: only matching subscribers, old and new rows, bytes built once."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from pgpulse.capture import WatchedTable
from pgpulse.catalog import Catalog, Column, Table
from pgpulse.exceptions import FilterError, UnknownColumnError, UnknownTableError
from pgpulse.log.change import Change
from pgpulse.log.changelog import Batch
from pgpulse.log.cursor import Snapshot
from pgpulse.routing.bus import Bus, Subscriber, Subscription
from pgpulse.routing.db_filters import DatabaseFilter, Viewer
from pgpulse.routing.matching import conditions, needs_literal
from pgpulse.routing.outbox import Outbox
from pgpulse.routing.subscriptions import (
    SubscriptionSpec,
    build_spec,
    parse_subscription,
)


def _catalog() -> Catalog:
    cat = Catalog()
    cols = {
        "id": Column("id", "integer", "N", "int4", False),
        "shipment_id": Column("shipment_id", "integer", "N", "int4", True),
        "status": Column("status", "text", "S", "text", True),
        "pw": Column("pw", "text", "S", "text", True),
    }
    cat.tables["public.docs"] = Table("public", "docs", cols, ("id",))
    return cat


WATCHED = {"public.docs": WatchedTable("public.docs", "rows", None, ("pw",))}
_ids = iter(range(1, 10**6))


def spec(
    text: str, catalog: Catalog | None = None, watched: Any = None
) -> SubscriptionSpec:
    """A subscription compiled without a database: integer and text literals
    spelled here as PostgreSQL would (the real spelling is integration-tested)."""
    request = parse_subscription(text, catalog or _catalog(), watched or WATCHED)
    literals: dict[Any, Any] = {}
    for filt in request.filters:
        for cond in conditions(filt):
            if needs_literal(cond):
                column = request.table.column(cond.column)
                convert = int if column.base_type.startswith("int") else str
                value = cond.value
                literals[cond] = (
                    [convert(v) for v in value]
                    if isinstance(value, tuple)
                    else convert(str(value))
                )
    return build_spec(request, literals)


def change(op: str, row: dict[str, Any] | None, old: dict[str, Any] | None) -> Change:
    ref = row or old or {}
    i = next(_ids)
    return Change(
        id=i,
        xid=100 + i,
        table="public.docs",
        name="docs",
        op=op,
        pk=orjson.dumps({"id": ref.get("id")}).decode(),
        row=orjson.dumps(row).decode() if row is not None else None,
        old=orjson.dumps(old).decode() if old is not None else None,
        ts='"2026-01-01T00:00:00+00:00"',
        event_id=f"1:1:~2:2:~{i}",
    )


def client(bus: Bus, *subs: str) -> Subscriber:
    s = Subscriber("sse", Outbox(10**9))
    for i, text in enumerate(subs):
        bus.subscribe(s, spec(text), str(i))
    return s


def received(s: Subscriber) -> list[dict[str, Any]]:
    out = []
    for chunk in s.outbox._chunks:
        data = chunk.split(b"data: ", 1)[1]
        out.append(orjson.loads(data))
    s.outbox._chunks.clear()
    return out


def test_equality_filters_are_indexed_and_only_matching_clients_are_touched():
    bus = Bus()
    clients = [client(bus, f"docs:shipment_id=eq.{n}") for n in range(1000)]
    reached = bus.publish(change("INSERT", {"id": 1, "shipment_id": 42}, None))
    assert reached == 1
    assert [len(received(c)) for c in clients].count(1) == 1
    assert received(clients[42]) == []  # already drained above


def test_update_moving_a_row_out_and_in_reveals_only_permitted_rows():
    bus = Bus()
    c42 = client(bus, "docs:shipment_id=eq.42")
    bus.publish(
        change("UPDATE", {"id": 1, "shipment_id": 7}, {"id": 1, "shipment_id": 42})
    )
    (out,) = received(c42)
    assert out["op"] == "DELETE" and out["moved"] is True
    assert out["row"] is None and out["old"]["shipment_id"] == 42
    bus.publish(
        change("UPDATE", {"id": 2, "shipment_id": 42}, {"id": 2, "shipment_id": 7})
    )
    (out,) = received(c42)
    assert out["op"] == "INSERT" and out["moved"] is True
    assert out["old"] is None and out["row"]["shipment_id"] == 42
    bus.publish(
        change("UPDATE", {"id": 3, "shipment_id": 7}, {"id": 3, "shipment_id": 7})
    )
    assert received(c42) == []


def test_non_equality_filters_are_scanned_and_combined_with_and():
    bus = Bus()
    c = client(bus, "docs:shipment_id=gt.10;status=in.(new,done)")
    bus.publish(change("INSERT", {"id": 1, "shipment_id": 11, "status": "new"}, None))
    bus.publish(change("INSERT", {"id": 2, "shipment_id": 11, "status": "old"}, None))
    bus.publish(change("INSERT", {"id": 3, "shipment_id": 9, "status": "new"}, None))
    bus.publish(change("DELETE", None, {"id": 1, "shipment_id": 11, "status": "new"}))
    assert [(e["op"], e["pk"]["id"]) for e in received(c)] == [
        ("INSERT", 1),
        ("DELETE", 1),
    ]


def test_a_client_with_overlapping_subscriptions_gets_each_change_once():
    bus = Bus()
    c = client(bus, "docs", "docs:shipment_id=eq.1", "docs:status=eq.x")
    bus.publish(change("INSERT", {"id": 1, "shipment_id": 1, "status": "x"}, None))
    (event,) = received(c)
    assert event["subs"] == {"0": "INSERT", "1": "INSERT", "2": "INSERT"}


def test_each_subscription_of_a_client_is_told_how_it_sees_the_change():
    bus = Bus()
    c = client(bus, "docs:shipment_id=eq.1", "docs:shipment_id=eq.2", "docs:id=eq.9")
    bus.publish(
        change("UPDATE", {"id": 5, "shipment_id": 2}, {"id": 5, "shipment_id": 1})
    )
    (event,) = received(c)
    # The union is a full UPDATE; the first subscription sees the row leave,
    # the second sees it arrive, the third does not see it at all.
    assert event["op"] == "UPDATE"
    assert event["subs"] == {"0": "DELETE", "1": "INSERT"}
    single = client(bus, "docs:shipment_id=eq.2")
    bus.publish(change("INSERT", {"id": 6, "shipment_id": 2}, None))
    (event,) = received(single)
    assert "subs" not in event


def test_a_row_the_filter_cannot_read_costs_that_row_for_that_subscriber():
    bus = Bus()
    ranged = client(bus, "docs:shipment_id=gt.5")
    everyone = client(bus, "docs")
    bus.publish(change("INSERT", {"id": 1, "shipment_id": "not a number"}, None))
    bus.publish(change("INSERT", {"id": 2, "shipment_id": 9}, None))
    assert [e["pk"]["id"] for e in received(ranged)] == [2]
    assert [e["pk"]["id"] for e in received(everyone)] == [1, 2]
    assert bus.errors.total == 1


def test_each_variant_is_encoded_once_and_shared():
    bus = Bus()
    a, b = client(bus, "docs"), client(bus, "docs")
    bus.publish(change("INSERT", {"id": 1, "shipment_id": 1}, None))
    assert a.outbox._chunks[0] is b.outbox._chunks[0]


def test_unsubscribe_removes_routes():
    bus = Bus()
    c = client(bus, "docs:shipment_id=eq.5", "docs")
    bus.remove(c)
    assert bus.publish(change("INSERT", {"id": 1, "shipment_id": 5}, None)) == 0
    assert not bus._routes


def test_truncate_reaches_filtered_subscribers():
    bus = Bus()
    c = client(bus, "docs:shipment_id=eq.5")
    bus.publish(change("TRUNCATE", None, None))
    assert [e["op"] for e in received(c)] == ["TRUNCATE"]


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("nope", UnknownTableError, "does not exist"),
        ("docs:nope=eq.1", UnknownColumnError, "'nope'"),
        ("docs:pw=eq.x", UnknownColumnError, "'pw' does not exist"),
        ("docs:id", FilterError, "column=op.value"),
    ],
)
def test_bad_subscriptions_name_the_problem(text, error, message):
    with pytest.raises(error, match=message):
        parse_subscription(text, _catalog(), WATCHED)


def test_negated_logic_over_null_follows_sql_three_valued_logic():
    bus = Bus()
    c = client(bus, "docs:not.or=(shipment_id.eq.1,status.eq.x)")
    # NOT (NULL = 1 OR NULL = 'x') is unknown in SQL: not delivered.
    bus.publish(change("INSERT", {"id": 1, "shipment_id": None, "status": None}, None))
    bus.publish(change("INSERT", {"id": 2, "shipment_id": 2, "status": "y"}, None))
    bus.publish(change("INSERT", {"id": 3, "shipment_id": 1, "status": None}, None))
    assert [e["pk"]["id"] for e in received(c)] == [2]
    d = client(bus, "docs:or=(shipment_id.eq.1,status.is.null)")
    bus.publish(change("INSERT", {"id": 4, "shipment_id": None, "status": None}, None))
    assert [e["pk"]["id"] for e in received(d)] == [4]


def test_live_events_held_during_catch_up_are_bounded():
    bus = Bus()
    s = Subscriber("sse", Outbox(limit=300))
    bus.subscribe(s, spec("docs"))
    s.begin_catch_up()
    for i in range(10):
        bus.publish(change("INSERT", {"id": i, "status": "x" * 50}, None))
    assert s.outbox.closed is not None and "catching up" in s.outbox.closed


def _events(s: Subscriber) -> list[tuple[str, int]]:
    """(table, id) of every event queued for *s*, across joined writes."""
    out = []
    for chunk in s.outbox._chunks:
        for frame in chunk.split(b"\n\n"):
            if b"data: " in frame:
                data = orjson.loads(frame.split(b"data: ", 1)[1])
                out.append((data["table"], data["row"]["id"]))
    return out


def test_a_batch_keeps_order_per_client_with_one_write_per_run_of_a_table():
    cat = _catalog()
    cols = {"id": Column("id", "integer", "N", "int4", False)}
    cat.tables["public.notes"] = Table("public", "notes", cols, ("id",))
    watched = {
        **WATCHED,
        "public.notes": WatchedTable("public.notes", "rows", None, ()),
    }
    bus = Bus()

    def sub(*texts: str) -> Subscriber:
        s = Subscriber("sse", Outbox(10**9))
        for text in texts:
            bus.subscribe(s, spec(text, cat, watched))
        return s

    both, docs_only, filtered = sub("docs", "notes"), sub("docs"), sub("docs:id=eq.3")
    batch = []
    for i, table in enumerate(["docs", "docs", "notes", "docs", "docs", "notes"]):
        c = change("INSERT", {"id": i, "shipment_id": 1}, None)
        c.table, c.name = f"public.{table}", table
        batch.append(c)
    snap = Snapshot.parse("10:10:")
    bus.on_batch(Batch(snap, snap, batch), True)

    expected = [(c.name, i) for i, c in enumerate(batch)]
    assert _events(both) == expected
    assert len(both.outbox._chunks) == 4  # docs x2, notes, docs x2, notes
    assert _events(docs_only) == [e for e in expected if e[0] == "docs"]
    assert _events(filtered) == [("docs", 3)]
    assert bus.delivered == 6 + 4 + 1


def test_a_chunked_batch_behind_a_resumed_client_is_skipped_to_its_end():
    """A listener that re-reads after a reconnect dispatches a large batch in
    chunks; a client whose catch-up already delivered that batch must not get
    any chunk of it again (the skip holds until the batch's last chunk)."""
    bus = Bus()
    s = Subscriber("sse", Outbox(10**9))
    bus.subscribe(s, spec("docs"))
    old = [change("INSERT", {"id": i}, None) for i in range(6)]
    for c in old:
        c.xid = 760  # one large transaction the catch-up delivered
    later = change("INSERT", {"id": 99}, None)
    later.xid = 762  # committed after the catch-up's snapshot
    s.begin_catch_up()
    bus.finish_catch_up(s, Snapshot.parse("761:761:"))
    prev, snap = Snapshot.parse("760:760:"), Snapshot.parse("763:763:")
    bus.on_batch(Batch(prev, snap, old[:3], complete=False), False)
    bus.on_batch(Batch(prev, snap, [*old[3:], later], complete=True), True)
    assert _events(s) == [("docs", 99)]
    # Past that batch the skip check is over.
    assert s.skip is None


def _viewer_spec(group: int) -> SubscriptionSpec:
    """A bare ``docs`` subscription under row-level security, for one
    (role, claims) group."""
    base = spec("docs")
    table = _catalog().tables["public.docs"]
    viewer = Viewer("reader", orjson.dumps({"tenant": group}).decode())
    return dataclasses.replace(
        base, predicate=None, db_filter=DatabaseFilter(table, (), viewer)
    )


def test_row_security_routes_a_change_to_the_groups_that_see_it_only(monkeypatch):
    """Counted work: 1,000 subscribers in 100 groups; a change one group sees
    is looked at for that group's 10 subscribers, not the 1,000."""
    bus = Bus()
    specs = [_viewer_spec(g) for g in range(100)]
    clients: list[list[Subscriber]] = [[] for _ in range(100)]
    for n in range(1000):
        s = Subscriber("sse", Outbox(10**9))
        bus.subscribe(s, specs[n % 100], "0")
        clients[n % 100].append(s)
    looked = 0
    original = Subscription.matches

    def counting(self: Subscription, c: Change) -> tuple[bool, bool]:
        nonlocal looked
        looked += 1
        return original(self, c)

    monkeypatch.setattr(Subscription, "matches", counting)
    keys = frozenset(s.db_filter.key for s in specs if s.db_filter is not None)
    key_of = [s.db_filter.key for s in specs if s.db_filter is not None]

    seen = change("INSERT", {"id": 1, "shipment_id": 7}, None)
    seen.verdicts, seen.viewed = {key_of[7]: [True, False]}, keys
    assert bus.publish(seen) == 10
    assert looked == 10
    assert [len(received(c)) for c in clients[7]] == [1] * 10
    assert sum(len(received(c)) for group in clients for c in group) == 0

    # A row that leaves group 3's sight reaches it as the DELETE of the old
    # row; group 4, which now sees it, gets it as an INSERT.
    moved = change("UPDATE", {"id": 2, "shipment_id": 4}, {"id": 2, "shipment_id": 3})
    moved.verdicts = {key_of[3]: [False, True], key_of[4]: [True, False]}
    moved.viewed = keys
    assert bus.publish(moved) == 20
    assert {e["op"] for c in clients[3] for e in received(c)} == {"DELETE"}
    assert {e["op"] for c in clients[4] for e in received(c)} == {"INSERT"}

    # A change on which the groups' filters were never evaluated is nobody's
    # (fail closed) and counted as an error per subscriber, not silently lost.
    looked = 0
    unseen = change("INSERT", {"id": 3, "shipment_id": 7}, None)
    assert bus.publish(unseen) == 0
    assert looked == 1000
    assert bus.errors.total == 1000
