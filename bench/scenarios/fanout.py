"""Scenario 2: the highest fan-out (deliveries/s = changes/s x clients) a
system sustains without falling behind.

For each system and client count: probe change rates for a short window each,
doubling from 100,000 deliveries/s until one does not keep up
(:func:`bench.scenarios.sustained`), or halving until one does when even the
first did not; try the midpoint once, then hold the best passing rate for the
full sustained window and report that window.
"""

from __future__ import annotations

import math
from typing import Any

from bench.scenarios import Ctx, connect, measure, start_server, sustained

__all__ = ["run_fanout"]

MAX_RATE = 4000
"""Highest change rate probed (single-row transactions, fsync on)."""


def run_fanout(
    ctx: Ctx,
    systems: list[str],
    counts: list[int],
    probe: float,
    hold: float,
    start_deliveries: int = 100_000,
    max_rate: float = MAX_RATE,
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
                    f"({ctx.cluster.settings['max_connections']})",
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
                cells.append(
                    _ramp(ctx, server, n, probe, hold, start_deliveries, max_rate)
                )
            finally:
                ctx.loadgen.close()
                server.stop()
    return out


def _ramp(
    ctx: Ctx,
    server: Any,
    n: int,
    probe: float,
    hold: float,
    start: int,
    max_rate: float,
) -> dict[str, Any]:
    def window(rate: float, seconds: float) -> tuple[bool, dict[str, Any]]:
        w = measure(ctx, server, n, rate, seconds, server.database, drain=2.0)
        ok, why = sustained(w)
        w["kept_up"], w["verdict"] = ok, why
        ctx.log(
            f"    {rate:.0f} changes/s x {n}: {w['deliveries_per_s']:.0f} deliveries/s,"
            f" p50 {w['latency_ms']['p50']} ms -> {why}"
        )
        return ok, w

    rate = max(1.0, start / n)
    probes: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    best: float | None = None
    failed: float | None = None
    writer_limited = False
    while rate <= max_rate:
        ok, w = window(rate, probe)
        probes.append(_brief(w))
        first = first or w
        if ok:
            best = rate
            if failed is not None:
                break  # coming down: the first rate that keeps up
            rate *= 2
            continue
        if w["achieved_rate"] < 0.9 * rate:
            writer_limited = True
            break
        failed = rate
        if best is not None or rate <= 1.0 or len(probes) >= 6:
            break
        rate = max(1.0, rate / 2)  # even the first rate was too much: go down
    if best is not None and failed is not None and failed > best:
        mid = math.sqrt(best * failed)
        ok, w = window(mid, probe)
        probes.append(_brief(w))
        if ok:
            best = mid
    if best is None:
        return {
            "clients": n,
            "status": "ok",
            "limit": "did not keep up at any rate probed",
            "probes": probes,
            "result": first,
        }
    ok, held = window(best, hold)
    if not ok:
        # Probes are short: step down once for the long window.
        best *= 0.7
        ok, held = window(best, hold)
    return {
        "clients": n,
        "status": "ok",
        "limit": "system"
        if failed is not None
        else ("writer ceiling" if writer_limited else "highest rate probed"),
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
