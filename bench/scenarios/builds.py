"""Scenario 'builds': the same measurements on the embedded PostgreSQL and on
the distribution's (JIT on, as most servers users run).

Why: the rest of the page runs on the embedded build, which has no JIT; on a
stock distribution build every listener read used to be JIT-compiled (p50
273 ms at one client).  Each build gets its own cluster and, in it: the raw
LISTEN floor, pgpulse's commit-to-client latency at 1 and 100 clients, and the
writers' throughput with capture on (pgbench, as in scenario 4).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from bench.env import BenchCluster
from bench.scenarios import Ctx
from bench.scenarios.dbcost import run_dbcost
from bench.scenarios.latency import run_floor, run_latency

__all__ = ["BUILDS", "run_builds"]

BUILDS = ("embedded", "system")


async def _server_facts(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "version": await conn.fetchval("show server_version"),
            "jit": await conn.fetchval("show jit"),
            "jit_available": await conn.fetchval("select pg_jit_available()"),
        }
    finally:
        await conn.close()


def run_builds(
    ctx: Ctx,
    counts: list[int],
    rate: int,
    duration: float,
    cost: dict[str, Any],
    builds: tuple[str, ...] = BUILDS,
) -> dict[str, Any]:
    out: dict[str, Any] = {"counts": counts, "rate": rate, "builds": {}}
    for build in builds:
        ctx.log(f"  builds: {build}")
        try:
            cluster = BenchCluster(build=build)
        except Exception as exc:  # the distribution's build is not installed
            out["builds"][build] = {"status": "cannot", "reason": str(exc)}
            continue
        with cluster:
            sub = Ctx(cluster, ctx.loadgen, ctx.quick, ctx.log)
            facts = asyncio.run(_server_facts(cluster.dsn()))
            out["builds"][build] = {
                "status": "ok",
                **facts,
                "floor": run_floor(sub, [rate], duration),
                "latency": run_latency(sub, ["pgpulse"], counts, [rate], duration),
                "dbcost": run_dbcost(sub, **cost),
            }
    return out
