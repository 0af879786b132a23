"""``Prefer: tx=rollback`` and ``max-affected`` on REST writes and ``rpc/``.

PostgREST's documented answers: a rolled-back request answers as a committed
one would and changes nothing; with ``handling=strict``, a PATCH, DELETE or
set-returning call affecting more rows than ``max-affected`` is ``400
PGRST124`` ("The query affects N rows") and changes nothing, a scalar
function is ``400 PGRST128``; without ``handling=strict`` the limit is
ignored.  What is left in the table is read back with SQL each time.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pgpulse import capture


@pytest.fixture
async def gw(conn, gateway_factory) -> Any:
    await conn.execute("create table authors (id int primary key, name text not null)")
    await conn.execute(
        "create table books (id int primary key, title text not null, pages int, "
        "author_id int references authors deferrable initially deferred)"
    )
    await conn.execute("insert into authors values (1, 'Le Guin'), (2, 'Lem')")
    await conn.execute(
        "insert into books values (1, 'a', 100, 1), (2, 'b', 200, 1), "
        "(3, 'c', 300, 2), (4, 'd', 400, 2)"
    )
    await conn.execute(
        "create function purge(min_pages int) returns setof books language sql "
        "as $$ delete from books where pages >= min_pages returning * $$"
    )
    await conn.execute(
        "create function purge_count(min_pages int) returns int language sql as $$ "
        "with gone as (delete from books where pages >= min_pages returning 1) "
        "select count(*)::int from gone $$"
    )
    await capture.watch(conn, "authors")
    await capture.watch(conn, "books")
    return gateway_factory(
        "--rest-writes", "--rest-function", "purge", "--rest-function", "purge_count"
    )


def _send(
    gw: Any, method: str, path: str, body: Any = None, prefer: str = ""
) -> httpx.Response:
    return httpx.request(
        method,
        gw.url + "/v1/rest/" + path,
        json=body,
        headers={"Prefer": prefer} if prefer else {},
        timeout=10,
    )


async def _books(conn: Any) -> list[tuple[int, str, int | None]]:
    rows = await conn.fetch("select id, title, pages from books order by id")
    return [(r["id"], r["title"], r["pages"]) for r in rows]


BEFORE = [(1, "a", 100), (2, "b", 200), (3, "c", 300), (4, "d", 400)]


async def test_tx_rollback_answers_as_a_commit_would_and_changes_nothing(conn, gw):
    cases = [
        ("POST", "books", {"id": 5, "title": "e", "pages": 5}, 201, [{"id": 5}]),
        ("PATCH", "books?pages=gt.250", {"title": "x"}, 200, [{"id": 3}, {"id": 4}]),
        ("DELETE", "books?id=in.(1,2)", None, 200, [{"id": 1}, {"id": 2}]),
        ("PUT", "books?id=eq.1", {"id": 1, "title": "z", "pages": 1}, 200, [{"id": 1}]),
    ]
    for method, path, body, status, rows in cases:
        sep = "&" if "?" in path else "?"
        answer = _send(
            gw,
            method,
            f"{path}{sep}select=id",
            body,
            prefer="return=representation, tx=rollback",
        )
        assert answer.status_code == status, (method, answer.text)
        assert sorted(answer.json(), key=lambda r: r["id"]) == rows, method
        assert "tx=rollback" in answer.headers["preference-applied"], method
        assert await _books(conn) == BEFORE, f"{method} with tx=rollback changed rows"
    # A deferred foreign key is checked before the rollback: the request
    # fails as its commit would.
    orphan = _send(
        gw, "POST", "books", {"id": 9, "title": "o", "author_id": 99}, "tx=rollback"
    )
    assert orphan.status_code == 409, orphan.text
    assert orphan.json()["code"] == "23503"
    committed = _send(gw, "POST", "books", {"id": 9, "title": "o"}, "tx=commit")
    assert committed.status_code == 201
    assert (9, "o", None) in await _books(conn)


async def test_max_affected_with_strict_handling_refuses_and_changes_nothing(conn, gw):
    strict = "handling=strict, max-affected=2"
    too_many = _send(gw, "DELETE", "books?pages=gt.150", prefer=strict)
    assert too_many.status_code == 400, too_many.text
    assert too_many.json() == {
        "code": "PGRST124",
        "message": "Query result exceeds max-affected preference constraint",
        "details": "The query affects 3 rows",
        "hint": None,
    }
    patched = _send(gw, "PATCH", "books?pages=gt.150", {"title": "x"}, prefer=strict)
    assert patched.status_code == 400 and patched.json()["code"] == "PGRST124"
    assert await _books(conn) == BEFORE
    # At the limit: done, and no count shown unless asked for.
    fits = _send(gw, "DELETE", "books?pages=gt.250", prefer=strict)
    assert fits.status_code == 204, fits.text
    assert fits.headers["content-range"] == "*/*"
    assert "max-affected=2" in fits.headers["preference-applied"]
    assert await _books(conn) == BEFORE[:2]
    # Without handling=strict the limit is ignored, as in PostgREST.
    lenient = _send(gw, "DELETE", "books?pages=gt.50", prefer="max-affected=1")
    assert lenient.status_code == 204
    assert await _books(conn) == []
    # Inserts are not limited (PostgREST counts PATCH and DELETE).
    inserted = _send(
        gw,
        "POST",
        "books",
        [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}],
        prefer="handling=strict, max-affected=1",
    )
    assert inserted.status_code == 201, inserted.text


async def test_rpc_with_tx_rollback_and_max_affected(conn, gw):
    rolled = _send(gw, "POST", "rpc/purge", {"min_pages": 250}, prefer="tx=rollback")
    assert rolled.status_code == 200, rolled.text
    assert [r["id"] for r in rolled.json()] == [3, 4]
    assert rolled.headers["preference-applied"] == "tx=rollback"
    assert await _books(conn) == BEFORE
    strict = "handling=strict, max-affected=1"
    refused = _send(gw, "POST", "rpc/purge", {"min_pages": 250}, prefer=strict)
    assert refused.status_code == 400 and refused.json()["code"] == "PGRST124"
    assert refused.json()["details"] == "The query affects 2 rows"
    scalar = _send(gw, "POST", "rpc/purge_count", {"min_pages": 250}, prefer=strict)
    assert scalar.status_code == 400 and scalar.json()["code"] == "PGRST128"
    assert await _books(conn) == BEFORE
    done = _send(gw, "POST", "rpc/purge", {"min_pages": 350}, prefer=strict)
    assert done.status_code == 200 and [r["id"] for r in done.json()] == [4]
    assert await _books(conn) == BEFORE[:3]


@pytest.mark.parametrize(
    ("prefer", "fragment"),
    [
        ("tx=maybe", "tx=commit, tx=rollback"),
        ("handling=strict, max-affected=lots", "max-affected=10"),
        ("handling=strict, max-affected=-1", "max-affected=10"),
        ("handling=sometimes", "handling=strict, handling=lenient"),
        ("handling=strict, tx=rollback, frobnicate", "Invalid preferences: frobnicate"),
    ],
)
async def test_bad_preferences_are_clear_errors_and_change_nothing(
    conn, gw, prefer, fragment
):
    for method, path, body in [
        ("DELETE", "books?id=eq.1", None),
        ("POST", "rpc/purge", {"min_pages": 0}),
    ]:
        answer = _send(gw, method, path, body, prefer=prefer)
        assert answer.status_code == 400, (method, prefer, answer.text)
        error = answer.json()
        assert error["code"] == "PGRST122"
        assert fragment in error["message"] + str(error["details"]), error
    assert await _books(conn) == BEFORE
