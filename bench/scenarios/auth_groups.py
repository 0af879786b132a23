"""Scenario 9: delivery under auth; what policies cost as claim groups grow.

1,000 subscribers hold tokens for ``G`` claim groups (a group: subscribers
whose role and claims are equal, e.g. the members of one tenant; each token
has its own ``jti`` and ``exp``, as real sessions do).  The writer changes rows
of tenants 1..G uniformly, so each change reaches 1000/G subscribers.  Three
ways to get that same delivery, measured side by side in one run:

* ``filter``: no auth, each client asks for ``docs:shipment_id=eq.T`` itself
  (the routing of section 5: the control);
* ``policy``: auth on, ``[policies.docs] filter = "shipment_id=eq.{claims.tenant}"``
  ANDed by the gateway to a bare ``docs`` subscription;
* ``rls``: auth on, ``rls = true``: the table's own ``CREATE POLICY`` (tenant
  from ``request.jwt.claims``) evaluated by PostgreSQL per batch per group.

Besides CPU and latency, each row counts the statements the gateway ran to
check rows (``pgpulse_filter_statements_total``), per change: counted work,
not timing, shows whether the cost follows groups or subscribers.  Then, for
RLS with 100 groups, the writer's rate steps up until delivery no longer keeps
up, to compare with the published Supabase figure (3,000-4,000 msg/s).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from bench.env import DB_PGPULSE
from bench.scenarios import Ctx, connect, measure, start_server, sustained
from bench.servers import Server

__all__ = ["run_auth_groups"]

ROLE = "bench_reader"
SCRAPE = "bench-scrape"
MODES = ("filter", "policy", "rls")

_POLICY = """[auth]

[policies.docs]
roles = ["bench_reader"]
{rule}
"""
_RULES = {
    "policy": 'filter = "shipment_id=eq.{claims.tenant}"',
    "rls": "rls = true",
}


async def _setup(dsn: str, rls: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"do $$ begin create role {ROLE} nologin; "
            "exception when duplicate_object then null; end $$"
        )
        await conn.execute(f"grant usage on schema public to {ROLE}")
        await conn.execute(f"grant select on docs to {ROLE}")
        await conn.execute("drop policy if exists bench_tenant on docs")
        if rls:
            await conn.execute("alter table docs enable row level security")
            await conn.execute(
                f"create policy bench_tenant on docs for select to {ROLE} using "
                "(shipment_id = (current_setting('request.jwt.claims', true)"
                "::jsonb ->> 'tenant')::int)"
            )
        else:
            await conn.execute("alter table docs disable row level security")
    finally:
        await conn.close()


def _tokens(secret: str, subscribers: int, groups: int) -> list[tuple[int, str]]:
    """(tenant, token) per subscriber; tokens differ only in jti and exp."""
    now = int(time.time())
    out = []
    for i in range(subscribers):
        tenant = i % groups + 1
        claims = {
            "role": ROLE,
            "tenant": tenant,
            "jti": f"session-{i}",
            "iat": now,
            "exp": now + 3600 + i,
        }
        out.append((tenant, jwt.encode(claims, secret, algorithm="HS256")))
    return out


def _filter_statements(server: Server) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"authorization": f"Bearer {SCRAPE}"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("pgpulse_filter_statements_total "):
                return int(float(line.split()[1]))
    return 0


def _start(ctx: Ctx, mode: str, directory: Path, secret: str) -> Server:
    extra = ["--heartbeat", "600"]
    saved = {
        k: os.environ.get(k) for k in ("PGPULSE_JWT_SECRET", "PGPULSE_METRICS_TOKEN")
    }
    os.environ["PGPULSE_METRICS_TOKEN"] = SCRAPE
    if mode != "filter":
        config = directory / f"{mode}.toml"
        config.write_text(_POLICY.format(rule=_RULES[mode]))
        extra += ["--config", str(config)]
        os.environ["PGPULSE_JWT_SECRET"] = secret
    try:
        return start_server(ctx, "pgpulse", extra=extra)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _paths(mode: str, tokens: list[tuple[int, str]]) -> list[str]:
    if mode == "filter":
        return [f"/v1/events?sub=docs:shipment_id=eq.{tenant}" for tenant, _ in tokens]
    return [f"/v1/events?sub=docs&access_token={token}" for _, token in tokens]


def _window(
    ctx: Ctx,
    server: Server,
    subscribers: int,
    groups: int,
    rate: float,
    duration: float,
    baseline_cpu: bool,
) -> dict[str, Any]:
    before = _filter_statements(server)
    row = measure(
        ctx,
        server,
        subscribers,
        rate,
        duration,
        server.database,
        shipments=groups,
        expected_per_change=subscribers // groups,
        baseline_cpu=baseline_cpu,
    )
    statements = _filter_statements(server) - before
    row["groups"] = groups
    row["filter_statements"] = statements
    row["statements_per_change"] = (
        round(statements / row["written"], 3) if row["written"] else None
    )
    cpu = row.get("server_net_cpu_ms_per_change") or row["server_cpu_ms_per_change"]
    per = subscribers // groups
    row["cpu_us_per_delivery"] = round(1000 * cpu / per, 2) if cpu and per else None
    return row


def run_auth_groups(
    ctx: Ctx,
    subscribers: int,
    groups: list[int],
    rate: float,
    duration: float,
    throughput: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subscribers": subscribers,
        "groups": groups,
        "rate": rate,
        "duration_s": duration,
        "rows": [],
        "throughput": {**throughput, "rows": []},
    }
    dsn = ctx.cluster.dsn(DB_PGPULSE)
    secret = secrets.token_urlsafe(32)
    directory = Path(tempfile.mkdtemp(prefix="pgpulse-bench-auth-"))
    try:
        for mode in MODES:
            asyncio.run(_setup(dsn, rls=mode == "rls"))
            for g in groups:
                ctx.log(f"  auth: {mode}, {subscribers} subscribers in {g} groups")
                out["rows"].append(
                    _measure_one(
                        ctx, mode, directory, secret, subscribers, g, rate, duration
                    )
                )
        out["throughput"]["rows"] = _ramp(
            ctx, directory, secret, subscribers, throughput
        )
    finally:
        asyncio.run(_setup(dsn, rls=False))
    return out


def _measure_one(
    ctx: Ctx,
    mode: str,
    directory: Path,
    secret: str,
    subscribers: int,
    groups: int,
    rate: float,
    duration: float,
) -> dict[str, Any]:
    server = _start(ctx, mode, directory, secret)
    try:
        server.target.paths = _paths(mode, _tokens(secret, subscribers, groups))
        got = connect(
            ctx, server.target, subscribers, samples=min(subscribers, 200), timeout=120
        )
        if got["ok"] < subscribers:
            return {
                "mode": mode,
                "groups": groups,
                "status": "cannot",
                "reason": f"only {got['ok']} of {subscribers} connected",
            }
        row = _window(ctx, server, subscribers, groups, rate, duration, True)
        row["mode"] = mode
        row["status"] = "ok"
        ctx.log(
            f"    {row['server_net_cpu_ms_per_change']} ms CPU/change (net), "
            f"{row['statements_per_change']} statements/change, "
            f"p50 {row['latency_ms']['p50']} ms, delivered {row['delivered_ratio']}"
        )
        return row
    finally:
        ctx.loadgen.close()
        server.stop()


def _ramp(
    ctx: Ctx,
    directory: Path,
    secret: str,
    subscribers: int,
    plan: dict[str, Any],
) -> list[dict[str, Any]]:
    """RLS mode, *plan['groups']* groups: step the rate up until delivery no
    longer keeps up (see :func:`bench.scenarios.sustained`)."""
    groups = int(plan["groups"])
    asyncio.run(_setup(ctx.cluster.dsn(DB_PGPULSE), rls=True))
    server = _start(ctx, "rls", directory, secret)
    rows: list[dict[str, Any]] = []
    try:
        server.target.paths = _paths("rls", _tokens(secret, subscribers, groups))
        got = connect(
            ctx, server.target, subscribers, samples=min(subscribers, 200), timeout=120
        )
        if got["ok"] < subscribers:
            return [{"status": "cannot", "reason": f"only {got['ok']} connected"}]
        for rate in plan["rates"]:
            ctx.log(f"  auth throughput: rls, {groups} groups, {rate} changes/s")
            row = _window(
                ctx, server, subscribers, groups, rate, plan["duration"], False
            )
            ok, why = sustained(row)
            row["sustained"] = ok
            row["verdict"] = why
            rows.append(row)
            ctx.log(
                f"    {row['deliveries_per_s']} deliveries/s, {why}, "
                f"p50 {row['latency_ms']['p50']} ms"
            )
            if not ok:
                break
    finally:
        ctx.loadgen.close()
        server.stop()
    return rows
