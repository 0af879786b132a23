"""Scenario 2: the highest fan-out (deliveries/s = changes/s x clients) a
system sustains without falling behind.

For each system and client count: probe rising change rates (x2 each step,
starting at 100,000 deliveries/s) for a short window each until one does not
keep up (:func:`bench.scenarios.sustained`), try the midpoint once, then hold
the best passing rate for the full sustained window and report that window.
"""

from __future__ import annotations

import math
from typing import Any

from bench.scenarios import Ctx, connect, measure, start_server, sustained

__all__ = ["run_fanout"]

MAX_RATE = 4000
"""The writer's ceiling here (single-row transactions, fsync on)."""


def run_fanout(
    ctx: Ctx,
    systems: list[str],
    counts: list[int],
    probe: float,
    hold: float,
    start_deliveries: int = 100_000,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "probe_s": probe,
        "hold_s": hold,
        "counts": counts,
        "systems": {},
    }
    for system in systems:
        cells: list[dict[str, Any]] = []
        out["systems"][system] = cells
        if system in ctx.unavailable:
            cells.append({"status": "cannot", "reason": ctx.unavailable[system]})
            continue
        if system == "tutorial":
            cells.append(
                {
                    "status": "cannot",
                    "reason": "one PostgreSQL connection per client: "
                    f"{min(counts)} clients exceed max_connections "
                    f"({ctx.cluster.cluster.settings['max_connections']})",
                }
            )
            continue
        for n in counts:
            ctx.log(f"  fan-out: {system}, {n} clients")
            server = start_server(ctx, system)
            try:
                got = connect(ctx, server.target, n, samples=50)
                if got["ok"] < n:
                    cells.append(
                        {
                            "clients": n,
                            "status": "cannot",
                            "reason": f"only {got['ok']} of {n} clients connected: "
                            + "; ".join(list(got["errors"])[:2]),
                        }
                    )
                    continue
                cells.append(_ramp(ctx, server, n, probe, hold, start_deliveries))
            finally:
                ctx.loadgen.close()
                server.stop()
    return out


def _ramp(
    ctx: Ctx, server: Any, n: int, probe: float, hold: float, start: int
) -> dict[str, Any]:
    def window(rate: float, seconds: float) -> tuple[bool, dict[str, Any]]:
        w = measure(ctx, server, n, rate, seconds, server.database)
        ok, why = sustained(w)
        w["kept_up"], w["verdict"] = ok, why
        ctx.log(
            f"    {rate:.0f} changes/s x {n}: {w['deliveries_per_s']:.0f} deliveries/s,"
            f" p50 {w['latency_ms']['p50']} ms -> {why}"
        )
        return ok, w

    rate = max(1.0, start / n)
    probes: list[dict[str, Any]] = []
    best: float | None = None
    failed: float | None = None
    while rate <= MAX_RATE:
        ok, w = window(rate, probe)
        probes.append(_brief(w))
        if not ok:
            failed = rate
            break
        best = rate
        rate *= 2
    if best is not None and failed is not None:
        mid = math.sqrt(best * failed)
        ok, w = window(mid, probe)
        probes.append(_brief(w))
        if ok:
            best = mid
    if best is None:
        # Even the first rate was too much: report that window.
        return {
            "clients": n,
            "status": "ok",
            "limit": "below the first probe",
            "probes": probes,
            "result": probes[0],
        }
    ok, held = window(best, hold)
    if not ok:
        # Probes are short: step down once for the long window.
        best *= 0.7
        ok, held = window(best, hold)
    return {
        "clients": n,
        "status": "ok",
        "limit": "writer ceiling" if failed is None else "system",
        "probes": probes,
        "result": held,
    }


def _brief(w: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "rate",
        "achieved_rate",
        "deliveries_per_s",
        "delivered_ratio",
        "kept_up",
        "verdict",
        "server_cpu_pct",
        "machine_busy_pct",
    )
    return {k: w.get(k) for k in keys} | {"p50": w["latency_ms"]["p50"]}
