"""Aggregates in select (``pages.sum()``, ``count()``...), grouped by the
other columns of their level, as PostgREST defines them; compared with SQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pgpulse import capture


async def _schema(conn: Any) -> None:
    await conn.execute("create table owners (id int primary key, name text)")
    await conn.execute(
        "create table orders (id int primary key, owner_id int references owners, "
        "status text, amount numeric(10,2), meta jsonb)"
    )
    await conn.execute("insert into owners values (1, 'ann'), (2, 'bo'), (3, 'cy')")
    await conn.execute(
        """insert into orders values
        (1, 1, 'open', 10.50, '{"region": "north"}'),
        (2, 1, 'paid', 20.00, '{"region": "south"}'),
        (3, 2, 'paid', 5.25, '{"region": "north"}'),
        (4, 2, 'paid', null, '{"region": "north"}'),
        (5, null, 'open', 1.00, '{}')"""
    )
    await capture.watch(conn, "owners")
    await capture.watch(conn, "orders")


@pytest.fixture
async def gw(conn, gateway_factory) -> Any:
    await _schema(conn)
    return gateway_factory("--rest")


def _get(gw: Any, path: str) -> tuple[int, Any]:
    answer = httpx.get(gw.url + "/v1/rest/" + path, timeout=10)
    return answer.status_code, answer.json()


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: (float(v) if hasattr(v, "as_tuple") else v) for k, v in r.items()}
        for r in rows
    ]


async def test_aggregates_match_sql(conn, gw):
    cases = [
        ("orders?select=amount.sum()", "select sum(amount) as sum from orders"),
        ("orders?select=count()", "select count(*) as count from orders"),
        ("orders?select=status,count()&order=status",
         "select status, count(*) as count from orders group by 1 order by status"),
        ("orders?select=status,total:amount.sum(),amount.avg()::int,amount.max()"
         "&order=status",
         "select status, sum(amount) as total, avg(amount)::int as avg, "
         "max(amount) as max from orders group by 1 order by status"),
        ("orders?select=status,id.count()&status=eq.paid",
         "select status, count(id) as count from orders where status = 'paid' "
         "group by 1"),
        ("orders?select=meta->>region,amount.min()&order=meta->>region",
         "select meta->>'region' as region, min(amount) as min from orders "
         "group by 1 order by 1"),
    ]  # fmt: skip
    for path, sql in cases:
        rows = [dict(r) for r in await conn.fetch(sql)]
        status, body = _get(gw, path)
        assert status == 200, (path, body)
        assert _plain(body) == _plain(rows), path
    # In an embed: one aggregate row per parent.
    status, body = _get(gw, "owners?select=name,orders(amount.sum(),count())&order=id")
    assert body == [
        {"name": "ann", "orders": [{"sum": 30.5, "count": 2}]},
        {"name": "bo", "orders": [{"sum": 5.25, "count": 2}]},
        {"name": "cy", "orders": [{"sum": None, "count": 0}]},
    ]


async def test_aggregate_mistakes_are_clear(gw):
    for path, says in [
        ("orders?select=*,amount.sum()", "list the columns to group by"),
        ("orders?select=nope.sum()", "'nope'"),
        ("orders?select=amount.sum(id)", "takes no arguments"),
        ("orders?select=amount.median()", "median"),
    ]:
        status, body = _get(gw, path)
        assert status in (400, 404) and says in body["message"], (path, body)


async def test_numbers_keep_every_digit(conn, gateway_factory):
    """PostgreSQL's JSON text is sent as it is: a numeric with more digits than
    a float holds arrives whole (a Python float round trip would drop them)."""
    await conn.execute(
        "create table ledger (id int primary key, amount numeric(40,10))"
    )
    await conn.execute(
        "insert into ledger values (1, 12345678901234567890.0123456789), (2, 0.1)"
    )
    await capture.watch(conn, "ledger")
    gw = gateway_factory("--rest-writes")
    for path, headers in [
        ("ledger?select=amount&order=id", {}),
        (
            "ledger?select=amount&id=eq.1",
            {"Accept": "application/vnd.pgrst.object+json"},
        ),
    ]:
        answer = httpx.get(gw.url + "/v1/rest/" + path, headers=headers, timeout=10)
        assert answer.status_code == 200
        assert "12345678901234567890.0123456789" in answer.text, answer.text
    single = httpx.get(
        gw.url + "/v1/rest/ledger?select=id,amount&id=eq.1",
        headers={"Accept": "application/vnd.pgrst.object+json"},
    )
    assert single.json()["id"] == 1 and single.text.startswith("{")
    written = httpx.post(
        gw.url + "/v1/rest/ledger?select=amount",
        json=[{"id": 3, "amount": "98765432109876543210.9876543210"}],
        headers={"Prefer": "return=representation"},
    )
    assert "98765432109876543210.9876543210" in written.text
