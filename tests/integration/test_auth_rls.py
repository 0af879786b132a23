"""Row-level security mode: the table's own CREATE POLICY rules decide.

Each subscriber must end with exactly the rows a ``SELECT`` as its role, with
its claims, returns: owners see theirs, a shared-with join table (itself under
RLS) lets others see some, moves in and out of sight arrive as INSERT/DELETE,
deletes are checked against the old row.  A policy that raises for one
caller's claims cuts that caller off, with the reason, and nobody else.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import asyncpg

from pgpulse import capture
from tests.gateway import SSEStream
from tests.integration.auth_support import SECRET, ensure_roles, token, write_config

ENV = {"PGPULSE_JWT_SECRET": SECRET}
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]

_CLAIM = "current_setting('request.jwt.claims', true)::json->>'sub'"


async def _schema(conn: asyncpg.Connection, rng: random.Random) -> None:
    await ensure_roles(conn)
    await conn.execute(
        "create table notes (id int primary key, owner text not null, body text)"
    )
    await conn.execute(
        "create table shares (note_id int, user_name text, "
        "primary key (note_id, user_name))"
    )
    for table in ("notes", "shares"):
        await conn.execute(f"alter table {table} enable row level security")
        await conn.execute(f"grant select on {table} to authenticated")
    await conn.execute(
        f"create policy own on notes for select to authenticated "
        f"using (owner = {_CLAIM})"
    )
    await conn.execute(
        "create policy shared on notes for select to authenticated using (exists "
        "(select 1 from shares s where s.note_id = notes.id "
        f"and s.user_name = {_CLAIM}))"
    )
    # The join table is itself under RLS: one sees one's own shares only.
    await conn.execute(
        f"create policy mine on shares for select to authenticated "
        f"using (user_name = {_CLAIM})"
    )
    # A policy that raises for one caller's claims (and nobody else's).
    await conn.execute(
        "create policy boom on notes as restrictive for select to authenticated "
        f"using (case when {_CLAIM} = 'mallory' "
        "then 1 / (length(owner) - length(owner)) = 1 else true end)"
    )
    pairs = {(rng.randrange(1, 150), rng.choice(USERS)) for _ in range(200)}
    await conn.executemany("insert into shares values ($1, $2)", sorted(pairs))
    await capture.watch(conn, "notes")


async def _visible(conn: asyncpg.Connection, user: str, where: str) -> dict[int, Any]:
    """What ``SELECT`` as *user* returns (role and claims as the gateway sets)."""
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": user}),
        )
        rows = await conn.fetch(f"select * from notes where {where}")
    return {r["id"]: dict(r) for r in rows}


async def test_every_subscriber_ends_with_what_select_as_its_role_returns(
    conn, gateway_factory, tmp_path: Path
):
    rng = random.Random(7)
    await _schema(conn, rng)
    gw = gateway_factory("--config", write_config(tmp_path), env=ENV)
    streams: list[tuple[str, str, SSEStream]] = []
    for user in USERS:
        t = token({"sub": user})
        for sub in ("notes", "notes:body=like.*x*"):
            streams.append((user, sub, SSEStream(gw.url, [sub], token=t)))
    mallory = SSEStream(gw.url, ["notes"], token=token({"sub": "mallory"}))
    try:
        for _u, _s, stream in streams:
            await stream.__aenter__()
            assert (await stream.next_event()).event == "ready"
        await mallory.__aenter__()
        assert (await mallory.next_event()).event == "ready"
        for _ in range(30):
            async with conn.transaction():
                for _ in range(40):
                    i = rng.randrange(1, 150)
                    roll = rng.random()
                    owner = rng.choice([*USERS, "mallory"])
                    body = rng.choice(["x", "y", "xy", None])
                    if roll < 0.5:
                        await conn.execute(
                            "insert into notes values ($1, $2, $3) on conflict (id) "
                            "do update set owner = $2, body = $3",
                            i,
                            owner,
                            body,
                        )
                    elif roll < 0.8:
                        await conn.execute(
                            "update notes set owner = $2 where id = $1", i, owner
                        )
                    else:
                        await conn.execute("delete from notes where id = $1", i)
        # One last row each user sees, to know when a stream has everything.
        for n, user in enumerate(USERS):
            await conn.execute(
                "insert into notes values ($1, $2, 'x-end')", 10_000 + n, user
            )
        for user, sub, stream in streams:
            marker = 10_000 + USERS.index(user)
            view = await _replay(stream, marker)
            where = "body like '%x%'" if "like" in sub else "true"
            assert view == await _visible(conn, user, where), (user, sub)
        # The raising policy cut mallory off, with the reason; nobody else.
        async with asyncio.timeout(20):
            event = await mallory.next_event()
            while event.event == "change":
                raise AssertionError(f"mallory received {event}")
        assert event.event == "error"
        assert "row-level security of public.notes fails" in event.data["reason"]
        assert "division by zero" in event.data["reason"]
    finally:
        for _u, _s, stream in streams:
            await stream.close()
        await mallory.close()


async def _replay(stream: SSEStream, marker: int) -> dict[int, Any]:
    view: dict[int, Any] = {}
    async with asyncio.timeout(60):
        while marker not in view:
            event = await stream.next_event()
            if event.event != "change":
                continue
            data = event.data
            if data["op"] == "DELETE":
                view.pop(data["pk"]["id"], None)
            else:
                view[data["pk"]["id"]] = data["row"]
    return view


async def _filter_statements(gw: Any) -> int:
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.get(
            gw.url + "/metrics", headers={"authorization": "Bearer scrape"}
        )
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith("pgpulse_filter_statements_total "):
            return int(float(line.split()[1]))
    raise AssertionError("pgpulse_filter_statements_total missing from /metrics")


async def test_row_security_costs_one_statement_per_group_not_per_subscriber(
    conn, gateway_factory, tmp_path: Path
):
    """Counted work: 24 subscribers in 3 (role, claims) groups cost 3
    statements per batch, and 24 more subscribers in the same groups cost
    nothing more, though each has a token of its own (SESSION_CLAIMS)."""
    await _schema(conn, random.Random(3))
    gw = gateway_factory(
        "--config",
        write_config(tmp_path),
        env={**ENV, "PGPULSE_METRICS_TOKEN": "scrape"},
    )
    groups = ["alice", "bob", "carol"]
    streams: list[SSEStream] = []

    async def subscribe(count: int) -> None:
        for i in range(count):
            # Every token differs (jti, exp): sessions, not groups.
            claims = {"sub": groups[i % 3], "jti": f"session-{len(streams)}"}
            t = token(claims, expires_in=3600 + len(streams))
            stream = SSEStream(gw.url, ["notes"], token=t)
            await stream.__aenter__()
            assert (await stream.next_event()).event == "ready"
            streams.append(stream)

    async def statements_for_one_batch(pk: int) -> int:
        before = await _filter_statements(gw)
        await conn.execute("insert into notes values ($1, 'alice', 'x')", pk)
        for stream in streams[::3]:  # alice's: each gets the row
            event = await stream.next_event()
            assert event.event == "change" and event.data["pk"] == {"id": pk}
        return await _filter_statements(gw) - before

    try:
        await subscribe(24)
        assert await statements_for_one_batch(9001) == 3
        await subscribe(24)
        assert await statements_for_one_batch(9002) == 3
    finally:
        for stream in streams:
            await stream.close()


_ITEMS = """
[auth]
audience = "pgpulse-tests"
issuer = "https://issuer.test"

[policies.items]
roles = ["authenticated"]
rls = true
"""

#: Client filters PostgreSQL decides under RLS (each with its SQL twin), bound
#: values of every shape: text, a list (``in``), an array literal, a pattern.
_ITEM_FILTERS = {
    "items": "true",
    "items:ordinality=in.(1,2,3)": "ordinality in (1, 2, 3)",
    "items:tags=cs.{a}": "tags @> '{a}'",
    "items:label=ilike.*A*": "label ilike '%A%'",
    "items:or=(label.is.null,ordinality.gt.1)": "(label is null or ordinality > 1)",
}


async def test_filters_under_row_security_agree_with_select_as_the_role(
    conn, gateway_factory, tmp_path: Path
):
    """Every client filter under RLS, ANDed to the policies, gives exactly the
    rows ``SELECT ... WHERE filter`` as that role returns; a column named
    ``ordinality`` (the name PostgreSQL gives a row's position) is a column
    like any other."""
    rng = random.Random(11)
    await ensure_roles(conn)
    await conn.execute(
        "create table items (id int primary key, owner text not null, "
        "ordinality int, tags text[], label text)"
    )
    await conn.execute("alter table items enable row level security")
    await conn.execute("grant select on items to authenticated")
    await conn.execute(
        f"create policy own on items for select to authenticated "
        f"using (owner = {_CLAIM})"
    )
    await capture.watch(conn, "items")
    gw = gateway_factory("--config", write_config(tmp_path, _ITEMS), env=ENV)
    users = USERS[:4]
    streams: list[tuple[str, str, SSEStream]] = []
    for user in users:
        for sub in _ITEM_FILTERS:
            stream = SSEStream(gw.url, [sub], token=token({"sub": user}))
            streams.append((user, sub, stream))
    try:
        for _u, _s, stream in streams:
            await stream.__aenter__()
            assert (await stream.next_event()).event == "ready"
        for _ in range(25):
            async with conn.transaction():
                for _ in range(20):
                    i = rng.randrange(1, 60)
                    if rng.random() < 0.8:
                        await conn.execute(
                            "insert into items values ($1, $2, $3, $4, $5) "
                            "on conflict (id) do update set owner = $2, "
                            "ordinality = $3, tags = $4, label = $5",
                            i,
                            rng.choice(users),
                            rng.choice([None, 1, 2, 3, 4, 5, 6]),
                            rng.choice([None, [], ["a"], ["b"], ["a", "b"]]),
                            rng.choice([None, "Alpha", "beta", "GAMMA", "x"]),
                        )
                    else:
                        await conn.execute("delete from items where id = $1", i)
        # A last row everyone's filters pass, to know a stream has everything.
        for n, user in enumerate(users):
            await conn.execute(
                "insert into items values ($1, $2, 2, '{a}', 'A')", 10_000 + n, user
            )
        for user, sub, stream in streams:
            try:
                view = await _replay(stream, 10_000 + users.index(user))
            except TimeoutError:
                raise AssertionError(f"{user} {sub}: {gw.log()[-3000:]}") from None
            expected = await _visible_in(conn, "items", user, _ITEM_FILTERS[sub])
            assert view.keys() == expected.keys(), (user, sub)
    finally:
        for _u, _s, stream in streams:
            await stream.close()


async def _visible_in(
    conn: asyncpg.Connection, table: str, user: str, where: str
) -> dict[int, Any]:
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": user}),
        )
        rows = await conn.fetch(f"select * from {table} where {where}")
    return {r["id"]: dict(r) for r in rows}
