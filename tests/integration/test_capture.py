"""Capture: triggers write every committed change to the log, once."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from pgpulse import capture
from pgpulse.exceptions import NoPrimaryKeyError, UnknownColumnError, UnknownTableError
from pgpulse.log.changelog import _COLUMNS, _KEYS_JOIN


async def _log(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The log as readers see it (keys of row-publishing tables come from rows)."""
    return await conn.fetch(
        f"select {_COLUMNS} from pgpulse.changes c {_KEYS_JOIN} order by id"
    )


async def test_insert_update_delete_are_logged_with_old_rows(conn):
    await conn.execute("create table docs (id int primary key, title text)")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs values (1, 'a'), (2, 'b')")
    await conn.execute("update docs set title = 'A' where id = 1")
    await conn.execute("delete from docs where id = 2")
    rows = await _log(conn)
    assert [(r["op"], orjson.loads(r["pk"])) for r in rows] == [
        ("INSERT", {"id": 1}),
        ("INSERT", {"id": 2}),
        ("UPDATE", {"id": 1}),
        ("DELETE", {"id": 2}),
    ]
    assert orjson.loads(rows[2]["row"]) == {"id": 1, "title": "A"}
    assert orjson.loads(rows[2]["old"]) == {"id": 1, "title": "a"}
    assert rows[3]["row"] is None
    assert orjson.loads(rows[3]["old"]) == {"id": 2, "title": "b"}


async def test_rolled_back_transaction_leaves_no_trace(conn):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    tr = conn.transaction()
    await tr.start()
    await conn.execute("insert into docs values (1)")
    await tr.rollback()
    assert await _log(conn) == []


async def test_excluded_and_allow_listed_columns_never_reach_the_log(conn):
    await conn.execute(
        "create table users (id int primary key, name text, password_hash text)"
    )
    await capture.watch(conn, "users", exclude=["password_hash"])
    await conn.execute("insert into users values (1, 'ann', 'secret')")
    await conn.execute("create table notes (id int primary key, body text, x int)")
    await capture.watch(conn, "notes", columns=["body"])
    await conn.execute("alter table notes add column secret text")
    await conn.execute("insert into notes values (1, 'hi', 5, 'shh')")
    rows = await _log(conn)
    assert orjson.loads(rows[0]["row"]) == {"id": 1, "name": "ann"}
    assert orjson.loads(rows[1]["row"]) == {"id": 1, "body": "hi"}


async def test_keys_only_tables_publish_primary_keys(conn):
    await conn.execute("create table big (a int, b text, c int, primary key (a, c))")
    await capture.watch(conn, "big", publish="keys")
    await conn.execute("insert into big values (1, 'x', 2)")
    await conn.execute("update big set b = 'y'")
    rows = await _log(conn)
    assert [orjson.loads(r["pk"]) for r in rows] == [{"a": 1, "c": 2}] * 2
    assert all(r["row"] is None and r["old"] is None for r in rows)


async def test_row_tables_with_composite_keys_publish_every_key_column(conn):
    await conn.execute("create table lines (a int, b text, c int, primary key (c, a))")
    await capture.watch(conn, "lines")
    await conn.execute("insert into lines values (1, 'x', 2)")
    await conn.execute("delete from lines")
    rows = await _log(conn)
    assert [(r["op"], orjson.loads(r["pk"])) for r in rows] == [
        ("INSERT", {"a": 1, "c": 2}),
        ("DELETE", {"a": 1, "c": 2}),
    ]


async def test_primary_key_change_is_a_delete_and_an_insert(conn):
    await conn.execute("create table docs (id int primary key, t text)")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs values (1, 'a')")
    await conn.execute("update docs set id = 10")
    rows = await _log(conn)
    ops = sorted((r["op"], orjson.loads(r["pk"])["id"]) for r in rows[1:])
    assert ops == [("DELETE", 1), ("INSERT", 10)]


async def test_watch_is_idempotent(conn):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs values (1)")
    assert len(await _log(conn)) == 1
    assert [w.name for w in await capture.watched(conn)] == ["public.docs"]
    assert await capture.unwatch(conn, "docs") is True
    await conn.execute("insert into docs values (2)")
    assert len(await _log(conn)) == 1
    assert await capture.watched(conn) == []


async def test_large_rows_are_captured_whole(conn):
    await conn.execute("create table blobs (id int primary key, body text)")
    await capture.watch(conn, "blobs")
    body = "x" * 1_000_000
    await conn.execute("insert into blobs values (1, $1)", body)
    rows = await _log(conn)
    assert orjson.loads(rows[0]["row"])["body"] == body


async def test_bad_watch_requests_fail_clearly_and_change_nothing(conn):
    await conn.execute("create table nopk (a int)")
    await conn.execute("create table docs (id int primary key, title text)")
    with pytest.raises(NoPrimaryKeyError, match="no primary key"):
        await capture.watch(conn, "nopk")
    with pytest.raises(UnknownTableError, match="Did you mean 'docs'"):
        await capture.watch(conn, "dcos")
    with pytest.raises(UnknownTableError):
        await capture.watch(conn, "docs; drop table docs")
    with pytest.raises(UnknownColumnError, match="'titel'"):
        await capture.watch(conn, "docs", exclude=["titel"])
    assert await capture.watched(conn) == []
    assert await conn.fetchval("select count(*) from docs") == 0


async def test_truncate_is_logged(conn):
    await conn.execute("create table docs (id int primary key)")
    await capture.watch(conn, "docs")
    await conn.execute("insert into docs values (1)")
    await conn.execute("truncate docs")
    assert [r["op"] for r in await _log(conn)] == ["INSERT", "TRUNCATE"]


async def test_watch_accepts_sqlalchemy_models_and_tables(conn):
    from sqlalchemy import Column, Integer, MetaData, Table, Text
    from sqlalchemy.orm import DeclarativeBase

    class Base(DeclarativeBase):
        pass

    class Shipment(Base):
        __tablename__ = "shipments"
        id = Column(Integer, primary_key=True)
        port = Column(Text)

    notes = Table("notes", MetaData(), Column("id", Integer, primary_key=True))
    await conn.execute("create table shipments (id int primary key, port text)")
    await conn.execute("create table notes (id int primary key)")
    assert (await capture.watch(conn, Shipment)).name == "public.shipments"
    assert (await capture.watch(conn, notes)).name == "public.notes"
    with pytest.raises(TypeError, match="expected a table name"):
        await capture.watch(conn, 42)
