"""``/v1/rest/rpc/{function}``: calls, their answers, and the attack matrix.

Only allow-listed functions exist for REST; arguments are values; with auth
the call runs as the caller's role (GRANT EXECUTE and row-level security
decide); GET cannot write.  Each refused call is checked to have changed
nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from postgrest import AsyncPostgrestClient

from pgpulse import capture
from tests.integration.auth_support import SECRET, ensure_roles, token, write_config

_CLAIM = "current_setting('request.jwt.claims', true)::json->>'sub'"

FUNCTIONS = [
    # set-returning, table-shaped, with a default
    """create function search_notes(words text, max_rows int default 10)
       returns setof notes language sql stable as $$
       select * from notes where body ilike '%' || words || '%'
       order by id limit max_rows $$""",
    # scalar, several types
    """create function add(a int, b int) returns int language sql immutable
       as $$ select a + b $$""",
    """create function tagged(tags text[], meta jsonb) returns text
       language sql immutable as $$
       select array_length(tags, 1)::text || ':' || coalesce(meta->>'k', '') $$""",
    # composite (one row: an object)
    """create function first_note() returns notes language sql stable
       as $$ select * from notes order by id limit 1 $$""",
    # writes (volatile), void
    """create function add_note(id int, body text) returns void language sql
       as $$ insert into notes (id, owner, body) values (id, 'x', body) $$""",
    # who am I (claims reach the function)
    """create function whoami() returns text language sql stable
       as $$ select current_user || '/' || coalesce(current_setting(
       'request.jwt.claims', true)::json->>'sub', '-') $$""",
    # overloads with different argument names
    """create function pick(a int) returns text language sql immutable
       as $$ select 'a' $$""",
    """create function pick(b text) returns text language sql immutable
       as $$ select 'b' $$""",
    # exists but not listed
    """create function unlisted() returns int language sql as $$ select 1 $$""",
]
LISTED = [
    "search_notes",
    "add",
    "tagged",
    "first_note",
    "add_note",
    "whoami",
    "pick",
    "pg_sleep",  # listed, but not in an exposed schema (pg_catalog)
    "pgpulse.row_security_verdicts",
]


async def _schema(conn: Any) -> None:
    await ensure_roles(conn)
    await conn.execute(
        "create table notes (id int primary key, owner text not null, body text)"
    )
    await conn.execute(
        "insert into notes values (1, 'alice', 'red apple'), "
        "(2, 'bob', 'green apple'), (3, 'alice', 'pear')"
    )
    for statement in FUNCTIONS:
        await conn.execute(statement)
    await capture.watch(conn, "notes")


def _flags() -> list[str]:
    out: list[str] = []
    for name in LISTED:
        out += ["--rest-function", name]
    return out


def _call(gw: Any, method: str, path: str, body: Any = None, **headers: Any) -> Any:
    return httpx.request(
        method,
        gw.url + "/v1/rest/rpc/" + path,
        json=body,
        headers=headers,
        timeout=10,
    )


async def test_calls_answer_like_postgrest(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory(*_flags())
    found = _call(gw, "POST", "search_notes", {"words": "apple"})
    assert found.status_code == 200
    assert [r["id"] for r in found.json()] == [1, 2]
    by_get = _call(gw, "GET", "search_notes?words=apple&max_rows=1")
    assert [r["id"] for r in by_get.json()] == [1]
    assert _call(gw, "GET", "add?a=2&b=40").json() == 42
    assert _call(gw, "POST", "add", {"a": 2, "b": 40}).json() == 42
    tagged = _call(gw, "POST", "tagged", {"tags": ["x", "y"], "meta": {"k": "v"}})
    assert tagged.json() == "2:v"
    assert _call(gw, "GET", "tagged?tags={x,y,z}&meta={}").json() == "3:"
    assert _call(gw, "GET", "first_note").json() == {
        "id": 1,
        "owner": "alice",
        "body": "red apple",
    }
    made = _call(gw, "POST", "add_note", {"id": 9, "body": "plum"})
    assert made.status_code == 204
    assert await conn.fetchval("select body from notes where id = 9") == "plum"
    assert _call(gw, "GET", "pick?a=1").json() == "a"
    assert _call(gw, "GET", "pick?b=1").json() == "b"
    # postgrest-py's rpc() reaches the same endpoint.
    async with AsyncPostgrestClient(gw.url + "/v1/rest") as client:
        answer = await client.rpc("add", {"a": "1", "b": "2"}).execute()
        assert answer.data == 3


async def test_the_rpc_attack_matrix(conn, gateway_factory):
    await _schema(conn)
    gw = gateway_factory(*_flags())
    before = await conn.fetch("select * from notes order by id")
    attacks: list[tuple[str, str, str, Any, int, str]] = [
        ("exists but not listed", "POST", "unlisted", {}, 404, "PGRST202"),
        ("built-in, not listed", "GET", "pg_read_file?filename=/etc/passwd", None,
         404, "PGRST202"),
        ("listed but a system schema", "GET", "pg_catalog.pg_sleep?seconds=5", None,
         404, "PGRST202"),
        ("listed name, search path", "GET", "pg_sleep?seconds=5", None,
         404, "PGRST202"),
        ("pgpulse's own", "POST", "pgpulse.row_security_verdicts", {}, 404,
         "PGRST202"),
        ("another schema by header", "POST", "add", {"a": 1, "b": 2}, 406,
         "PGRST106"),
        ("unknown argument", "POST", "add", {"a": 1, "c": 2}, 404, "PGRST202"),
        ("missing argument", "POST", "add", {"a": 1}, 404, "PGRST202"),
        ("injection as a value", "POST", "search_notes",
         {"words": "x' or 1=1; drop table notes; --"}, 200, ""),
        ("bad value", "GET", "add?a=1&b=two", None, 400, "22P02"),
        ("GET cannot write", "GET", "add_note?id=10&body=x", None, 405, "25006"),
        ("no overload takes no argument", "GET", "pick", None, 404, "PGRST202"),
        ("body not an object", "POST", "add", [1, 2], 400, "PGRST102"),
    ]  # fmt: skip
    for name, method, path, body, status, code in attacks:
        headers = {"Content-Profile": "private"} if "header" in name else {}
        answer = _call(gw, method, path, body, **headers)
        assert answer.status_code == status, (name, answer.text)
        if code:
            assert answer.json()["code"] == code, (name, answer.text)
            assert set(answer.json()) == {"code", "message", "details", "hint"}
        else:
            assert answer.json() == [], name
        assert await conn.fetch("select * from notes order by id") == before, name
    hidden = _call(gw, "POST", "unlisted", {})
    # "not found" whether or not the function exists: no oracle.
    assert "unlisted" in hidden.json()["message"]
    missing = _call(gw, "POST", "no_such_function", {})
    assert missing.status_code == 404
    assert missing.json()["hint"] == hidden.json()["hint"]


async def test_with_auth_a_call_runs_as_the_callers_role(
    conn, gateway_factory, tmp_path: Path
):
    await _schema(conn)
    await conn.execute("alter table notes enable row level security")
    await conn.execute("grant select on notes to authenticated")
    await conn.execute(
        f"create policy own on notes for select to authenticated "
        f"using (owner = {_CLAIM})"
    )
    await conn.execute("revoke execute on function add(int, int) from public")
    config = write_config(
        tmp_path,
        '[auth]\naudience = "pgpulse-tests"\nissuer = "https://issuer.test"\n',
    )
    gw = gateway_factory(
        *_flags(), "--config", config, env={"PGPULSE_JWT_SECRET": SECRET}
    )
    alice = {"Authorization": "Bearer " + token({"sub": "alice"})}
    mine = _call(gw, "POST", "search_notes", {"words": "apple"}, **alice)
    assert [r["id"] for r in mine.json()] == [1]  # bob's apple is not hers
    assert _call(gw, "GET", "whoami", **alice).json() == "authenticated/alice"
    refused = _call(gw, "GET", "add?a=1&b=2", **alice)
    assert refused.status_code == 403 and refused.json()["code"] == "42501"
    anonymous = _call(gw, "GET", "whoami")
    assert anonymous.status_code == 401
    forged = {"Authorization": "Bearer " + token({"sub": "alice"}, secret="x" * 64)}
    assert _call(gw, "GET", "whoami", **forged).status_code == 401
    no_role = {"Authorization": "Bearer " + token({"sub": "alice"}, role=None)}
    assert _call(gw, "GET", "whoami", **no_role).status_code in (401, 403)
