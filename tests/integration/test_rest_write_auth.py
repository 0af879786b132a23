"""REST writes under auth: the attack matrix.

Every attempt a caller might make to write what its policy does not allow
(another tenant's rows, a row moved out of its tenant, an upsert onto a row it
cannot see, a hidden column, a write its role was not given, a forged or
expired token, a row-level-security table's WITH CHECK) must be refused, and
the database must be unchanged afterwards: checked with SQL after each one.
Allowed writes succeed and return only what the caller may read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from pgpulse import capture
from tests.integration.auth_support import (
    SECRET,
    ensure_roles,
    token,
    unsigned,
    write_config,
)

ENV = {"PGPULSE_JWT_SECRET": SECRET}
_CLAIM = "current_setting('request.jwt.claims', true)::json->>'sub'"

CONFIG = """
[auth]
audience = "pgpulse-tests"
issuer = "https://issuer.test"

[policies.docs]
roles = ["authenticated", "admin", "reader"]
filter = "tenant_id=eq.{claims.tenant_id}"
columns = { default = ["id", "tenant_id", "title"], admin = "*" }
write = { authenticated = ["insert", "update"], admin = true }

[policies.readonly]
roles = ["authenticated"]

[policies.notes]
roles = ["authenticated"]
rls = true
write = true
"""


async def _schema(conn: asyncpg.Connection) -> None:
    await ensure_roles(conn)
    await conn.execute(
        "do $$ begin create role reader nologin; "
        "exception when duplicate_object then null; end $$"
    )
    await conn.execute(
        "create table docs (id int primary key, tenant_id int not null, "
        "title text, secret text)"
    )
    await conn.execute("create table readonly (id int primary key, v int)")
    await conn.execute(
        "create table notes (id int primary key, owner text not null, body text)"
    )
    await conn.execute("alter table notes enable row level security")
    await conn.execute("grant select, insert, update, delete on notes to authenticated")
    await conn.execute(
        f"create policy own on notes to authenticated using (owner = {_CLAIM}) "
        f"with check (owner = {_CLAIM})"
    )
    await conn.execute(
        "insert into docs values (1, 1, 'one', 's1'), (2, 2, 'two', 's2'), "
        "(3, 1, 'three', 's3')"
    )
    await conn.execute("insert into readonly values (1, 1)")
    await conn.execute("insert into notes values (1, 'alice', 'a'), (2, 'bob', 'b')")
    for table in ("docs", "readonly", "notes"):
        await capture.watch(conn, table)


@pytest.fixture
async def gw(conn, gateway_factory, tmp_path: Path) -> Any:
    await _schema(conn)
    config = write_config(tmp_path, CONFIG)
    return gateway_factory("--config", config, env=ENV)


def _send(
    gw: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    bearer: str | None,
    prefer: str = "return=representation",
) -> httpx.Response:
    headers = {"Prefer": prefer}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return httpx.request(
        method, gw.url + "/v1/rest/" + path, json=body, headers=headers, timeout=10
    )


async def _state(conn: asyncpg.Connection) -> Any:
    docs = await conn.fetch("select * from docs order by id")
    notes = await conn.fetch("select * from notes order by id")
    ro = await conn.fetch("select * from readonly order by id")
    return [dict(r) for r in docs], [dict(r) for r in notes], [dict(r) for r in ro]


async def test_writes_outside_the_policy_are_refused_and_change_nothing(conn, gw):
    t1 = token({"tenant_id": 1, "sub": "alice"})
    injected = token({"tenant_id": "1 or 1=1", "sub": "alice"})
    no_claim = token({"sub": "alice"})
    reader = token({"tenant_id": 1}, role="reader")
    expired = token({"tenant_id": 1}, expires_in=-60)
    forged = token({"tenant_id": 1}, secret="x" * 64)
    alg_none = unsigned({"tenant_id": 1})
    before = await _state(conn)
    attacks: list[tuple[str, str, str, Any, str | None, int]] = [
        # another tenant's row, new or existing
        ("insert other tenant", "POST", "docs", {"id": 9, "tenant_id": 2}, t1, 403),
        ("bulk with one foreign row", "POST", "docs",
         [{"id": 9, "tenant_id": 1}, {"id": 10, "tenant_id": 2}], t1, 403),
        ("move own row away", "PATCH", "docs?id=eq.1", {"tenant_id": 2}, t1, 403),
        ("upsert onto a hidden row", "POST", "docs",
         {"id": 2, "tenant_id": 1, "title": "mine now"}, t1, 403),
        ("put onto a hidden row", "PUT", "docs?id=eq.2",
         {"id": 2, "tenant_id": 1, "title": "mine now"}, t1, 403),
        # columns the role may not read are not writable either
        ("hidden column", "POST", "docs", {"id": 9, "tenant_id": 1, "secret": "x"},
         t1, 400),
        ("hidden column update", "PATCH", "docs?id=eq.1", {"secret": "x"}, t1, 400),
        ("hidden column via columns", "POST", "docs?columns=id,tenant_id,secret",
         [{"id": 9, "tenant_id": 1, "secret": "x"}], t1, 400),
        ("upsert on a hidden conflict target", "POST", "docs?on_conflict=secret",
         {"id": 9, "tenant_id": 1}, t1, 400),
        # writes the role was not given
        ("delete not allowed", "DELETE", "docs?id=eq.1", None, t1, 403),
        ("reader may not write", "POST", "docs", {"id": 9, "tenant_id": 1},
         reader, 403),
        ("table without write", "PATCH", "readonly?id=eq.1", {"v": 2}, t1, 403),
        ("unwatched table", "POST", "pgpulse.changes", {"id": 1}, t1, 404),
        # claims are values, never SQL; a missing claim denies
        # (bound as one value: PostgreSQL refuses it as an integer)
        ("injected claim", "POST", "docs", {"id": 9, "tenant_id": 1}, injected, 400),
        ("missing claim", "POST", "docs", {"id": 9, "tenant_id": 1}, no_claim, 403),
        # no valid token at all
        ("anonymous", "POST", "docs", {"id": 9, "tenant_id": 1}, None, 401),
        ("expired", "POST", "docs", {"id": 9, "tenant_id": 1}, expired, 401),
        ("forged", "POST", "docs", {"id": 9, "tenant_id": 1}, forged, 401),
        ("alg none", "POST", "docs", {"id": 9, "tenant_id": 1}, alg_none, 401),
        # row-level security: PostgreSQL's WITH CHECK and USING decide
        ("rls insert for another", "POST", "notes", {"id": 9, "owner": "bob"},
         t1, 403),
        ("rls move own away", "PATCH", "notes?id=eq.1", {"owner": "bob"}, t1, 403),
    ]  # fmt: skip
    for name, method, path, body, bearer, status in attacks:
        prefer = "resolution=merge-duplicates,return=representation"
        if "upsert" not in name:
            prefer = "return=representation"
        answer = _send(gw, method, path, body, bearer=bearer, prefer=prefer)
        assert answer.status_code == status, (name, answer.text)
        error = answer.json()
        assert set(error) == {"code", "message", "details", "hint"}, name
        assert "s2" not in answer.text and "'two'" not in answer.text, name
        assert await _state(conn) == before, name
    # Rows outside the policy are simply not matched by updates.
    quiet = [
        ("update other tenant", "PATCH", "docs?id=eq.2", {"title": "x"}),
        ("update all I can name", "PATCH", "docs?id=gt.0", {"title": "x"}),
        ("rls update another's", "PATCH", "notes?id=eq.2", {"body": "x"}),
        ("rls delete another's", "DELETE", "notes?id=eq.2", None),
    ]
    for name, method, path, body in quiet:
        answer = _send(gw, method, path, body, bearer=t1)
        assert answer.status_code == 200, (name, answer.text)
        assert all(row.get("id") != 2 for row in answer.json()), name
    after = await _state(conn)
    assert after[0][1] == before[0][1]  # tenant 2's doc
    assert after[1][1] == before[1][1]  # bob's note
    assert [d["title"] for d in after[0]] == ["x", "two", "x"]
    # ignore-duplicates onto a hidden row changes nothing, quietly.
    ignored = _send(
        gw,
        "POST",
        "docs",
        {"id": 2, "tenant_id": 1, "title": "mine now"},
        bearer=t1,
        prefer="resolution=ignore-duplicates,return=representation",
    )
    assert ignored.status_code == 201 and ignored.json() == []
    assert (await _state(conn))[0] == after[0]


async def test_allowed_writes_succeed_and_show_only_readable_columns(conn, gw):
    t1 = token({"tenant_id": 1, "sub": "alice"})
    admin = token({"tenant_id": 2}, role="admin")
    made = _send(
        gw, "POST", "docs", {"id": 7, "tenant_id": 1, "title": "new"}, bearer=t1
    )
    assert made.status_code == 201, made.text
    assert made.json() == [{"id": 7, "tenant_id": 1, "title": "new"}]
    merged = _send(
        gw,
        "POST",
        "docs",
        [
            {"id": 7, "tenant_id": 1, "title": "newer"},
            {"id": 8, "tenant_id": 1, "title": None},
        ],
        bearer=t1,
        prefer="resolution=merge-duplicates,return=representation",
    )
    assert merged.status_code == 201, merged.text
    assert [r["title"] for r in merged.json()] == ["newer", None]
    changed = _send(gw, "PATCH", "docs?title=eq.one", {"title": "uno"}, bearer=t1)
    assert changed.json() == [{"id": 1, "tenant_id": 1, "title": "uno"}]
    # The admin role writes every column and may delete, within its tenant.
    secret = _send(gw, "PATCH", "docs?id=eq.2", {"secret": "new s2"}, bearer=admin)
    assert secret.status_code == 200 and secret.json()[0]["secret"] == "new s2"
    gone = _send(gw, "DELETE", "docs?id=in.(1,2)", bearer=admin)
    assert gone.status_code == 200 and [r["id"] for r in gone.json()] == [2]
    docs = {r["id"]: r["title"] for r in await conn.fetch("select * from docs")}
    assert docs == {1: "uno", 3: "three", 7: "newer", 8: None}
    # Row-level security: written as the caller's role, PostgreSQL decides.
    note = _send(gw, "POST", "notes", {"id": 5, "owner": "alice"}, bearer=t1)
    assert note.status_code == 201 and note.json()[0]["owner"] == "alice"
    edit = _send(gw, "PATCH", "notes?id=in.(1,2,5)", {"body": "z"}, bearer=t1)
    assert sorted(r["id"] for r in edit.json()) == [1, 5]
    bodies = {r["id"]: r["body"] for r in await conn.fetch("select * from notes")}
    assert bodies == {1: "z", 2: "b", 5: "z"}
