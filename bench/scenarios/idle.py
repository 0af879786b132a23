"""Scenario 3: many idle clients on one process: memory and DB connections.

RSS per client is ``(RSS with N clients - RSS after a 20-client warm-up) / N``
of the server's whole process tree; DB connections are counted in
``pg_stat_activity`` for the system's database (client backends).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.scenarios import Ctx, connect, start_server

__all__ = ["run_idle"]

TUTORIAL_CLIENTS = 250
"""Peer (a) holds a DB connection per client; measured below max_connections."""


def run_idle(
    ctx: Ctx, systems: list[str], clients: int, settle: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"clients": clients, "settle_s": settle, "systems": {}}
    for system in systems:
        if system in ctx.unavailable:
            out["systems"][system] = {
                "status": "cannot",
                "reason": ctx.unavailable[system],
            }
            continue
        n = clients
        note = ""
        if system == "tutorial":
            n = min(clients, TUTORIAL_CLIENTS)
            if n < clients:
                note = (
                    f"{clients} clients need {clients} PostgreSQL connections "
                    f"(max_connections "
                    f"{ctx.cluster.settings['max_connections']}); "
                    f"measured at {n}"
                )
        ctx.log(f"  idle: {system}, {n} clients")
        server = start_server(ctx, system)
        try:
            got = connect(ctx, server.target, 20, samples=0)
            ctx.loadgen.close()
            time.sleep(1.0)
            rss0 = server.rss()
            db0 = asyncio.run(ctx.cluster.connections(server.database))
            got = connect(ctx, server.target, n, samples=0, timeout=120)
            time.sleep(settle)
            rss1 = server.rss()
            c0 = server.cpu()
            time.sleep(settle)
            idle_cpu = server.cpu() - c0
            db1 = asyncio.run(ctx.cluster.connections(server.database))
            names = asyncio.run(ctx.cluster.connection_names(server.database))
            ok = got["ok"]
            out["systems"][system] = {
                "status": "ok" if ok == n else "partial",
                "clients": ok,
                "requested": clients,
                "note": note,
                "errors": got["errors"],
                "connect_s": round(got["seconds"], 2),
                "rss_before_mib": round(rss0 / 2**20, 1),
                "rss_after_mib": round(rss1 / 2**20, 1),
                "rss_per_client_kb": round((rss1 - rss0) / max(ok, 1) / 1000, 2),
                "db_connections": db1,
                "db_connections_before": db0,
                "db_connection_names": names,
                "idle_cpu_pct": round(100 * idle_cpu / settle, 1),
                "processes": len(server.pids()),
            }
            ctx.log(
                f"    {ok} clients: "
                f"{out['systems'][system]['rss_per_client_kb']} KB/client, "
                f"{db1} DB connections"
            )
        finally:
            ctx.loadgen.close()
            server.stop()
    return out
