"""POST/PATCH/PUT/DELETE on /v1/rest: PostgREST's writes, on a real gateway.

Expected answers are PostgREST's documented ones (statuses, ``Prefer``,
``Content-Range``, error codes); what was written is read back with SQL.
Who may write is in test_rest_write_auth.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pgpulse import capture


async def _schema(conn: Any) -> None:
    await conn.execute("create table authors (id int primary key, name text)")
    await conn.execute(
        "create table books (id serial primary key, "
        "author_id int references authors, title text not null, "
        "status text not null default 'draft', pages int, "
        "tags text[] not null default '{}', meta jsonb, isbn text unique)"
    )
    await conn.execute("insert into authors values (1, 'Le Guin'), (2, 'Lem')")
    await capture.watch(conn, "authors")
    await capture.watch(conn, "books")


@pytest.fixture
async def gw(conn, gateway_factory) -> Any:
    await _schema(conn)
    return gateway_factory("--rest-writes")


def _send(
    gw: Any,
    method: str,
    path: str,
    body: Any = None,
    prefer: str | None = None,
    **headers: str,
) -> httpx.Response:
    if prefer is not None:
        headers["Prefer"] = prefer
    return httpx.request(
        method,
        gw.url + "/v1/rest/" + path,
        json=body,
        headers=headers,
        timeout=10,
    )


async def _books(conn: Any) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "select id, author_id, title, status, pages, tags from books order by id"
    )
    return [dict(r) for r in rows]


async def test_insert_one_and_many_with_the_documented_answers(conn, gw):
    one = _send(gw, "POST", "books", {"title": "Solaris", "author_id": 2})
    assert one.status_code == 201 and one.content == b""
    assert one.headers["content-range"] == "*/*"
    many = _send(
        gw,
        "POST",
        "books?select=id,title,status,author:authors(name)",
        [
            {"title": "The Dispossessed", "author_id": 1, "pages": 387},
            {"title": "Lathe of Heaven", "author_id": 1, "pages": 184},
        ],
        prefer="return=representation,count=exact",
    )
    assert many.status_code == 201, many.text
    assert many.headers["content-range"] == "0-1/2"
    assert many.headers["preference-applied"] == "return=representation"
    assert many.json() == [
        {
            "id": 2,
            "title": "The Dispossessed",
            "status": "draft",
            "author": {"name": "Le Guin"},
        },
        {
            "id": 3,
            "title": "Lathe of Heaven",
            "status": "draft",
            "author": {"name": "Le Guin"},
        },
    ]
    assert [b["title"] for b in await _books(conn)] == [
        "Solaris",
        "The Dispossessed",
        "Lathe of Heaven",
    ]
    # One object asked for with the object media type.
    obj = _send(
        gw,
        "POST",
        "books?select=title,tags",
        {"title": "Fiasco", "tags": ["sf", "late"]},
        prefer="return=representation",
        Accept="application/vnd.pgrst.object+json",
    )
    assert obj.status_code == 201 and obj.json() == {
        "title": "Fiasco",
        "tags": ["sf", "late"],
    }


async def test_columns_and_missing_default(conn, gw):
    # Without ?columns, every object must have the same keys (PostgREST).
    mixed = [{"title": "A", "status": "final"}, {"title": "B"}]
    bad = _send(gw, "POST", "books", mixed)
    assert bad.status_code == 400 and bad.json()["code"] == "PGRST102"
    assert await _books(conn) == []
    # ?columns names the keys; a missing one is NULL...
    null = _send(gw, "POST", "books?columns=title,pages", [{"title": "A"}])
    assert null.status_code == 201
    # ... or its DEFAULT with Prefer: missing=default, per row.
    ok = _send(
        gw,
        "POST",
        "books?columns=title,status,ignored_key_is_not_a_column",
        mixed,
        prefer="missing=default,return=representation",
    )
    assert ok.status_code == 400 and "ignored_key_is_not_a_column" in ok.text
    ok = _send(
        gw,
        "POST",
        "books?columns=title,status&select=title,status",
        [*mixed, {"title": "C", "status": "final", "pages": 9}],
        prefer="missing=default,return=representation",
    )
    assert ok.status_code == 201, ok.text
    assert ok.json() == [
        {"title": "A", "status": "final"},
        {"title": "B", "status": "draft"},
        {"title": "C", "status": "final"},
    ]
    rows = await _books(conn)
    # pages of C was not in ?columns: not written.
    assert [(r["title"], r["status"], r["pages"]) for r in rows] == [
        ("A", "draft", None),
        ("A", "final", None),
        ("B", "draft", None),
        ("C", "final", None),
    ]
    # Without missing=default, a NOT NULL column with a default left out by a
    # row is NULL, as in PostgREST: PostgreSQL refuses it (23502 -> 400).
    refused = _send(gw, "POST", "books?columns=title,status", mixed)
    assert refused.status_code == 400 and refused.json()["code"] == "23502"
    assert len(await _books(conn)) == 4


async def test_upserts_merge_ignore_on_conflict_and_put(conn, gw):
    await conn.execute(
        "insert into books (id, title, isbn, pages) values (1, 'Old', 'isbn-1', 10)"
    )
    merged = _send(
        gw,
        "POST",
        "books?select=id,title,pages",
        [{"id": 1, "title": "New"}, {"id": 7, "title": "Seven"}],
        prefer="resolution=merge-duplicates,return=representation",
    )
    assert merged.status_code == 201, merged.text
    assert merged.json() == [
        {"id": 1, "title": "New", "pages": 10},
        {"id": 7, "title": "Seven", "pages": None},
    ]
    ignored = _send(
        gw,
        "POST",
        "books?select=id,title",
        [{"id": 1, "title": "Ignored"}, {"id": 8, "title": "Eight"}],
        prefer="resolution=ignore-duplicates,return=representation",
    )
    assert ignored.json() == [{"id": 8, "title": "Eight"}]
    by_isbn = _send(
        gw,
        "POST",
        "books?on_conflict=isbn&select=id,title",
        {"isbn": "isbn-1", "title": "By isbn"},
        prefer="resolution=merge-duplicates,return=representation",
    )
    assert by_isbn.json() == [{"id": 1, "title": "By isbn"}]
    put = _send(
        gw,
        "PUT",
        "books?id=eq.9&select=id,title",
        {"id": 9, "title": "Nine"},
        prefer="return=representation",
    )
    assert put.status_code == 200 and put.json() == [{"id": 9, "title": "Nine"}]
    again = _send(gw, "PUT", "books?id=eq.9", {"id": 9, "title": "Nine!"})
    assert again.status_code == 204
    assert {b["id"]: b["title"] for b in await _books(conn)} == {
        1: "By isbn",
        7: "Seven",
        8: "Eight",
        9: "Nine!",
    }
    for path, body, code in [
        ("books?id=eq.9", {"id": 10, "title": "x"}, "PGRST115"),
        ("books?id=eq.9", {"title": "x"}, "PGRST115"),
        ("books?id=gt.9", {"id": 9, "title": "x"}, "PGRST105"),
        ("books?title=eq.x", {"id": 9, "title": "x"}, "PGRST105"),
        ("books?id=eq.9&title=eq.x", {"id": 9, "title": "x"}, "PGRST105"),
        ("books?id=eq.9", [{"id": 9}, {"id": 9}], "PGRST102"),
    ]:
        wrong = _send(gw, "PUT", path, body)
        assert wrong.status_code == 400 and wrong.json()["code"] == code, path
    assert (await conn.fetchval("select title from books where id = 9")) == "Nine!"


async def test_patch_and_delete(conn, gw):
    await conn.execute(
        "insert into books (id, title, pages, author_id) values "
        "(1, 'a', 10, 1), (2, 'b', 20, 1), (3, 'c', 30, 2)"
    )
    patched = _send(
        gw,
        "PATCH",
        "books?author_id=eq.1&select=id,status",
        {"status": "final"},
        prefer="return=representation,count=exact",
    )
    assert patched.status_code == 200
    assert patched.headers["content-range"] == "0-1/2"
    assert sorted(patched.json(), key=lambda r: r["id"]) == [
        {"id": 1, "status": "final"},
        {"id": 2, "status": "final"},
    ]
    minimal = _send(gw, "PATCH", "books?id=eq.3", {"pages": 31}, prefer="count=exact")
    assert minimal.status_code == 204 and minimal.headers["content-range"] == "*/1"
    none = _send(gw, "PATCH", "books?id=eq.99", {"pages": 1}, prefer="count=exact")
    assert none.status_code == 204 and none.headers["content-range"] == "*/0"
    deleted = _send(
        gw, "DELETE", "books?pages=gt.25&select=id", prefer="return=representation"
    )
    assert deleted.status_code == 200 and deleted.json() == [{"id": 3}]
    gone = _send(gw, "DELETE", "books?or=(id.eq.1,id.eq.2)")
    assert gone.status_code == 204
    assert await _books(conn) == []


async def test_bad_writes_are_clear_errors_and_change_nothing(conn, gw):
    await conn.execute("insert into books (id, title, isbn) values (1, 'a', 'i')")
    before = await _books(conn)
    cases: list[tuple[str, str, Any, dict[str, str], int, str, str]] = [
        ("PATCH", "books", {"title": "all"}, {}, 400, "PGRST100", "without filters"),
        ("DELETE", "books", None, {}, 400, "PGRST100", "without filters"),
        ("POST", "books", {"nope": 1}, {}, 400, "42703", "'nope'"),
        ("PATCH", "books?id=eq.1", {"nope": 1}, {}, 400, "42703", "'nope'"),
        ("POST", "books", [], {}, 400, "PGRST102", "non-empty array"),
        ("POST", "books", [1, 2], {}, 400, "PGRST102", "array of objects"),
        ("PATCH", "books?id=eq.1", [{"title": "x"}], {}, 400, "PGRST102", "one JSON"),
        ("POST", "books", {"id": 1, "title": "dup"}, {}, 409, "23505", "books_pkey"),
        ("POST", "books", {"id": 50, "author_id": 99, "title": "x"}, {},
         409, "23503", "fkey"),
        ("POST", "books", {"id": 51, "pages": "many", "title": "x"}, {},
         400, "22P02", "many"),
        ("POST", "nope", {"id": 1}, {}, 404, "PGRST205", "'nope'"),
        ("POST", "pgpulse.changes", {"id": 1}, {}, 404, "PGRST205", "does not"),
        ("POST", "books?on_conflict=nope", {"id": 1, "title": "x"},
         {"Prefer": "resolution=merge-duplicates"}, 400, "42703", "'nope'"),
        ("POST", "books", {"title": "x"}, {"Prefer": "return=everything"},
         400, "PGRST122", "return=representation"),
        ("POST", "books", {"title": "x"}, {"Content-Profile": "private"},
         406, "PGRST106", "public"),
        ("PATCH", "books?id=eq.1&order=id", {"title": "x"}, {}, 400, "PGRST100",
         "apply to reads"),
        ("POST", "books?select=id,nope(*)", {"title": "x"},
         {"Prefer": "return=representation"}, 400, "PGRST200", "nope"),
        ("PATCH", "books?id=gt.0", {"title": "two"},
         {"Accept": "application/vnd.pgrst.object+json",
          "Prefer": "return=representation"}, 406, "PGRST116", "rows"),
    ]  # fmt: skip
    await conn.execute("insert into books (id, title) values (2, 'b')")
    before = await _books(conn)
    for method, path, body, headers, status, code, says in cases:
        answer = _send(gw, method, path, body, **headers)
        assert answer.status_code == status, (method, path, answer.text)
        error = answer.json()
        assert error["code"] == code and says in error["message"] + str(
            error.get("hint")
        ), (method, path, error)
        assert set(error) == {"code", "message", "details", "hint"}
    raw = httpx.post(
        gw.url + "/v1/rest/books",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["code"] == "PGRST102"
    csv = httpx.post(
        gw.url + "/v1/rest/books",
        content=b"title\nx\n",
        headers={"Content-Type": "text/csv"},
    )
    assert csv.status_code == 415 and "application/json" in csv.json()["message"]
    # A bulk insert is one transaction: one bad row, none written.
    bulk = _send(
        gw, "POST", "books", [{"id": 5, "title": "ok"}, {"id": 1, "title": "dup"}]
    )
    assert bulk.status_code == 409
    assert await _books(conn) == before


async def test_writes_are_off_unless_enabled(conn, gateway_factory):
    await _schema(conn)
    await conn.execute("insert into books (id, title) values (1, 'a')")
    gw = gateway_factory("--rest")
    for method, path, body in [
        ("POST", "books", {"title": "x"}),
        ("PATCH", "books?id=eq.1", {"title": "x"}),
        ("PUT", "books?id=eq.1", {"id": 1, "title": "x"}),
        ("DELETE", "books?id=eq.1", None),
    ]:
        answer = _send(gw, method, path, body)
        assert answer.status_code == 403, (method, answer.text)
        assert "--rest-writes" in answer.json()["message"]
    assert (await conn.fetchval("select title from books where id = 1")) == "a"
    assert await conn.fetchval("select count(*) from books") == 1


async def test_a_rest_write_reaches_the_stream(conn, gw):
    with httpx.stream("GET", gw.url + "/v1/events?table=books", timeout=10) as stream:
        lines = stream.iter_lines()
        answer = _send(gw, "POST", "books", {"title": "streamed"})
        assert answer.status_code == 201
        for line in lines:
            if line.startswith("data:") and "streamed" in line:
                break


async def test_a_table_watched_after_the_gateway_started_is_served_at_once(conn, gw):
    await conn.execute("create table late (id int primary key, v text)")
    await conn.execute("insert into late values (1, 'x')")
    await capture.watch(conn, "late")
    # No waiting for the gateway to hear about it: an unknown table gets one
    # catalog refresh before it is called unknown.
    read = httpx.get(gw.url + "/v1/rest/late?select=id,v", timeout=10)
    assert read.status_code == 200 and read.json() == [{"id": 1, "v": "x"}]
    missing = httpx.get(gw.url + "/v1/rest/still_missing", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "PGRST205"
