"""REST shows no more than the stream would: watched tables of exposed schemas,
published columns, unless a table is opened for REST; with auth, the caller's
policy (rows, columns, row-level security) on every level of a query.

Before: ``GET /v1/rest/users?select=id,password_hash`` returned the hash of a
column ``watch --exclude password_hash`` keeps out of the stream, filtering on
it was a guessing oracle, and unwatched tables and other schemas were readable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from pgpulse import capture
from tests.integration.auth_support import SECRET, token, two_tenants, write_config


async def _schema(conn: Any) -> None:
    await conn.execute(
        "create table users (id int primary key, name text, password_hash text)"
    )
    await conn.execute(
        "create table posts (id int primary key, user_id int references users, "
        "body text)"
    )
    await conn.execute("create table audit (id int primary key, what text)")
    # A watched table whose foreign key leads to the unwatched audit table.
    await conn.execute(
        "create table visits (id int primary key, audit_id int references audit)"
    )
    await conn.execute("create table keyed (id int primary key, secret text)")
    await conn.execute("create table opened (id int primary key, note text)")
    await conn.execute("create schema private")
    await conn.execute("create table private.articles (id int primary key, t text)")
    await conn.execute("create table private.lonely (id int primary key)")
    await conn.execute("insert into users values (1, 'ann', '$2b$12$Abc')")
    await conn.execute("insert into posts values (10, 1, 'hello')")
    await conn.execute("insert into audit values (1, 'x')")
    await conn.execute("insert into keyed values (1, 's')")
    await conn.execute("insert into opened values (1, 'n')")
    await conn.execute("insert into private.articles values (1, 't')")
    await capture.watch(conn, "users", exclude=["password_hash"])
    await capture.watch(conn, "posts")
    await capture.watch(conn, "visits")
    await capture.watch(conn, "keyed", publish="keys")
    await capture.watch(conn, "private.articles")


def _get(gw: Any, path: str, **headers: str) -> httpx.Response:
    return httpx.get(gw.url + "/v1/rest/" + path, headers=headers, timeout=10)


async def test_rest_exposes_only_what_the_stream_would(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory("--rest", "--rest-table", "opened")
    ok = _get(gw, "users?select=*")
    assert ok.status_code == 200 and ok.json() == [{"id": 1, "name": "ann"}]
    for path, status, message in [
        ("users?select=id,password_hash", 400, "'password_hash' does not exist"),
        ("users?password_hash=like.$2b*", 400, "'password_hash' does not exist"),
        ("users?or=(password_hash.like.$2b*,id.eq.1)", 400, "'password_hash'"),
        ("users?order=password_hash", 400, "'password_hash' does not exist"),
        ("users?select=id,posts(*)&posts.password_hash=eq.x", 400, "does not exist"),
        ("users?select=*,audit(*)", 400, "'audit' does not exist"),
        ("audit", 404, "'audit' does not exist"),
        ("private.articles", 404, "does not exist"),
        ("articles", 404, "does not exist"),
        ("private.lonely", 404, "does not exist"),
        ("pgpulse.changes", 404, "does not exist"),
        ("keyed?select=secret", 400, "'secret' does not exist"),
        # Embedding by foreign key column or name cannot reach a hidden table,
        # nor say its name.
        ("visits?select=id,audit_id(*)", 400, "'audit_id' does not exist"),
        ("visits?select=id,visits_audit_id_fkey(*)", 400, "does not exist"),
        ("visits?select=id,posts(*)", 400, "no foreign key links"),
    ]:
        response = _get(gw, path)
        error = response.json().get("message", "")
        if path.startswith("visits"):
            assert re.search(r"\baudit\b", error) is None, (path, error)
        assert (response.status_code, message in error) == (status, True), (
            path,
            response.status_code,
            error,
        )
        assert "password_hash" not in error or "'password_hash' does not" in error
        assert "available" not in error or "password_hash" not in error
    # An unknown-column message never lists a hidden column among the known.
    suggestion = _get(gw, "users?select=passwordhash").json()["message"]
    assert "password_hash" not in suggestion
    assert _get(gw, "keyed").json() == [{"id": 1}]
    assert _get(gw, "opened").json() == [{"id": 1, "note": "n"}]
    embedded = _get(gw, "users?select=id,posts(body)").json()
    assert embedded == [{"id": 1, "posts": [{"body": "hello"}]}]
    counted = _get(gw, "users?select=*", prefer="count=exact")
    assert counted.headers["content-range"] == "0-0/1"
    head = httpx.head(gw.url + "/v1/rest/users", timeout=10)
    assert head.status_code == 200
    ranged = _get(gw, "users", range="0-0")
    assert ranged.json() == [{"id": 1, "name": "ann"}]


async def test_other_schemas_only_when_configured(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory(
        "--rest", "--rest-schema", "public", "--rest-schema", "private"
    )
    assert _get(gw, "private.articles").json() == [{"id": 1, "t": "t"}]
    assert _get(gw, "private.lonely").status_code == 404  # not watched


async def test_rest_under_policies(conn, gateway_factory, tmp_path: Path):
    await two_tenants(conn)
    await conn.execute(
        "insert into docs values (1, 1, 'mine', 's1'), (2, 2, 'theirs', 's2')"
    )
    gw = gateway_factory(
        "--config", write_config(tmp_path), env={"PGPULSE_JWT_SECRET": SECRET}
    )
    tenant1 = token({"tenant_id": 1, "sub": "u1"})
    bearer = {"authorization": f"Bearer {tenant1}"}
    assert _get(gw, "docs").status_code == 401  # REST is on with auth, not open
    assert _get(gw, "docs", **bearer).json() == [
        {"id": 1, "tenant_id": 1, "title": "mine"}
    ]
    # Another tenant's filter finds nothing; hidden columns are unknown.
    assert _get(gw, "docs?tenant_id=eq.2", **bearer).json() == []
    assert _get(gw, "docs?or=(tenant_id.eq.2,id.eq.2)", **bearer).json() == []
    response = _get(gw, "docs?select=secret", **bearer)
    assert response.status_code == 400 and "'secret'" in response.json()["message"]
    assert _get(gw, "open_data", **bearer).status_code == 403
    admin = {"authorization": f"Bearer {token({'tenant_id': 2}, role='admin')}"}
    assert _get(gw, "docs", **admin).json() == [
        {"id": 2, "tenant_id": 2, "title": "theirs", "secret": "s2"}
    ]
