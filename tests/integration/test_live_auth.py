"""Live queries under auth: nobody's live rows hold a row they may not see.

The same policies as the stream and REST: the policy filter ANDed to the
query (another tenant's filter finds nothing), columns per role, tables
without a policy refused, row-level security evaluated as the caller's role;
under randomized writes that move rows between tenants, each tenant's rows
equal what the tenant may read, and never hold another tenant's row.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx

from pgpulse import capture
from tests.integration.auth_support import (
    SECRET,
    ensure_roles,
    token,
    two_tenants,
    write_config,
)
from tests.integration.test_live_queries import LiveStream

ENV = {"PGPULSE_JWT_SECRET": SECRET}


def _params(t: str, **extra: str) -> dict[str, str]:
    return {"table": "docs", "access_token": t, **extra}


async def test_each_tenant_sees_only_its_rows_under_moving_writes(
    conn, gateway_factory, tmp_path: Path
):
    await two_tenants(conn)
    await conn.execute(
        "insert into docs select g, 1 + g % 2, 'doc ' || g, 's' from "
        "generate_series(1, 20) g"
    )
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    one = token({"tenant_id": 1})
    two = token({"tenant_id": 2})
    admin = token({"tenant_id": 2}, role="admin")
    streams = {
        "one": LiveStream(gw.url, _params(one, order="id")),
        # Asking for the other tenant's rows: the policy still applies.
        "one-asks-two": LiveStream(gw.url, _params(one, tenant_id="eq.2")),
        "two": LiveStream(gw.url, _params(two, order="id", limit="5")),
        "admin": LiveStream(gw.url, _params(admin, order="id")),
    }
    rng = random.Random(3)
    try:
        for stream in streams.values():
            await stream.__aenter__()
        for _ in range(60):
            i = rng.randrange(1, 30)
            roll = rng.random()
            if roll < 0.5:
                await conn.execute(
                    "insert into docs values ($1, $2, 't', 's') on conflict (id) "
                    "do update set tenant_id = $2",
                    i,
                    rng.choice([1, 2]),
                )
            elif roll < 0.8:
                await conn.execute(
                    "update docs set title = $2 where id = $1", i, str(rng.random())
                )
            else:
                await conn.execute("delete from docs where id = $1", i)

        async def rows(tenant: int, columns: str, limit: str = "") -> Any:
            got = await conn.fetch(
                f"select {columns} from docs where tenant_id = $1 order by id {limit}",
                tenant,
            )
            return [dict(r) for r in got]

        base = "id, tenant_id, title"  # the default role's columns
        await streams["one"].equal(lambda: rows(1, base))
        await streams["one-asks-two"].equal([])
        await streams["two"].equal(lambda: rows(2, base, "limit 5"))
        await streams["admin"].equal(lambda: rows(2, "*"))
        for name, stream in streams.items():
            if name == "admin":
                continue
            for _event, data in stream.events:
                for row in [data.get("row"), *data.get("rows", [])]:
                    if row is not None:
                        assert "secret" not in row, (name, row)
            tenant = 2 if name == "two" else 1
            for state in stream.states:
                assert all(r["tenant_id"] == tenant for r in state), (name, state)
    finally:
        for stream in streams.values():
            await stream.close()


async def test_refusals_name_the_table_and_never_leak(
    conn, gateway_factory, tmp_path: Path
):
    await two_tenants(conn)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    one = token({"tenant_id": 1})
    cases = [
        ({"table": "docs"}, 401, "needs a token"),
        ({"table": "open_data", "access_token": one}, 403, "open_data"),
        ({"table": "docs", "select": "id,secret", "access_token": one}, 400, "secret"),
        ({"table": "docs", "access_token": one + "x"}, 401, "token"),
    ]
    async with httpx.AsyncClient() as client:
        for params, status, message in cases:
            response = await client.get(gw.url + "/v1/live", params=params)
            assert response.status_code == status, (params, response.text)
            assert message in response.json()["error"], (params, response.text)


async def test_row_level_security_is_evaluated_as_the_callers_role(
    conn, gateway_factory, tmp_path: Path
):
    await ensure_roles(conn)
    claim = "current_setting('request.jwt.claims', true)::json->>'sub'"
    await conn.execute(
        "create table notes (id int primary key, owner text not null, body text)"
    )
    await conn.execute("alter table notes enable row level security")
    await conn.execute("grant select on notes to authenticated")
    await conn.execute(
        "create policy own on notes for select to authenticated "
        f"using (owner = {claim})"
    )
    await capture.watch(conn, "notes")
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    streams = {
        user: LiveStream(
            gw.url,
            {"table": "notes", "order": "id", "access_token": token({"sub": user})},
        )
        for user in ("alice", "bob")
    }
    try:
        for stream in streams.values():
            await stream.__aenter__()
        rng = random.Random(9)
        for i in range(40):
            await conn.execute(
                "insert into notes values ($1, $2, 'x') on conflict (id) "
                "do update set owner = $2",
                rng.randrange(1, 15),
                rng.choice(["alice", "bob", "carol"]),
            )
            if i % 7 == 0:
                await conn.execute("delete from notes where id = $1", rng.randrange(15))
        for user, stream in streams.items():
            want = [
                dict(r)
                for r in await conn.fetch(
                    "select * from notes where owner = $1 order by id", user
                )
            ]
            await stream.equal(want)
            for state in stream.states:
                assert all(r["owner"] == user for r in state), (user, state)
    finally:
        for stream in streams.values():
            await stream.close()


async def test_a_live_stream_ends_when_its_token_expires(
    conn, gateway_factory, tmp_path: Path
):
    await two_tenants(conn)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    short = token({"tenant_id": 1}, expires_in=2)
    async with LiveStream(gw.url, _params(short, order="id")) as stream:
        await stream.equal([])
        async with asyncio.timeout(10):
            while not any(e == "auth_expired" for e, _ in stream.events):
                await asyncio.sleep(0.1)
    (reason,) = [d["reason"] for e, d in stream.events if e == "auth_expired"]
    assert "token expired" in reason
