"""Scenario 1: write-to-client latency, and the raw LISTEN floor.

Latency is ``client receipt - writer COMMIT returned`` on CLOCK_MONOTONIC,
sampled on about 50 clients spread evenly over the connection order (all of
them when fewer), for each client count and change rate.  A cell is measured
when at least 99% of its clients connected (it shows how many did).
"""

from __future__ import annotations

import time
from typing import Any

from bench.env import DB_COST
from bench.scenarios import Ctx, connect, measure, start_server
from bench.stats import latencies_ms, summary
from bench.writer import Listen, WriteJob, Writer

__all__ = ["run_floor", "run_latency"]

SAMPLES = 50


def run_floor(ctx: Ctx, rates: list[int], duration: float) -> dict[str, Any]:
    """``pg_notify`` in one connection, receipt in another (separate processes)."""
    dsn = ctx.cluster.dsn(DB_COST)
    rows = []
    with Listen(dsn) as listen:
        for rate in rates:
            ctx.log(f"  floor at {rate}/s")
            listen.collect()
            job = WriteJob(dsn, rate, duration, ctx.next_seq(), mode="notify")
            result = Writer(job).run()
            time.sleep(0.5)
            seqs, times = listen.collect()
            lat = latencies_ms(seqs, times, result.commit_map())
            rows.append(
                {
                    "rate": rate,
                    "written": result.written,
                    "received": len(seqs),
                    "latency_ms": summary(lat),
                }
            )
    return {"duration_s": duration, "rows": rows}


def run_latency(
    ctx: Ctx,
    systems: list[str],
    counts: list[int],
    rates: list[int],
    duration: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "duration_s": duration,
        "samples": SAMPLES,
        "counts": counts,
        "rates": rates,
        "systems": {},
    }
    for system in systems:
        cells: list[dict[str, Any]] = []
        out["systems"][system] = cells
        if system in ctx.unavailable:
            cells.append({"status": "cannot", "reason": ctx.unavailable[system]})
            continue
        ctx.log(f"  latency: {system}")
        server = start_server(ctx, system)
        try:
            blocked: str | None = None
            for n in counts:
                if blocked is not None:
                    for rate in rates:
                        cells.append(_cannot(n, rate, blocked))
                    continue
                got = connect(ctx, server.target, n, samples=SAMPLES)
                if got["ok"] < 0.99 * n:
                    blocked = _why(got, n)
                    for rate in rates:
                        cells.append(_cannot(n, rate, blocked))
                    ctx.loadgen.close()
                    continue
                for rate in rates:
                    ctx.log(f"    {n} clients, {rate} changes/s")
                    cell = measure(
                        ctx, server, got["ok"], rate, duration, server.database
                    )
                    cell["status"] = "ok"
                    cell["requested"] = n
                    cell["connect_errors"] = got["errors"]
                    cells.append(cell)
                    ctx.log(
                        f"      p50 {cell['latency_ms']['p50']} ms, "
                        f"p99 {cell['latency_ms']['p99']} ms, "
                        f"delivered {cell['delivered_ratio']}"
                    )
                ctx.loadgen.close()
        finally:
            ctx.loadgen.close()
            server.stop()
    return out


def _why(got: dict[str, Any], n: int) -> str:
    errors = "; ".join(f"{k} (x{v})" for k, v in list(got["errors"].items())[:2])
    return f"only {got['ok']} of {n} clients could connect: {errors}"


def _cannot(n: int, rate: int, reason: str) -> dict[str, Any]:
    return {"clients": n, "rate": rate, "status": "cannot", "reason": reason}
