"""Scenario 5: filtered routing; cost per change as filtered clients grow.

N clients each subscribe to a different shipment
(``/v1/events?sub=docs:shipment_id=eq.K``, K = 1..N); the writer changes rows
of uniformly random shipments 1..N, so every change matches exactly one
client.  Cost per change is the gateway's CPU time (utime + stime of its
process, ``/proc/PID/stat``) during the writes divided by the changes, minus
its idle CPU over an equally long window just before (what N idle connections
cost by themselves).  Heartbeats are set to 600 s so the window measures
routing, not keep-alives.  Every client records receipt times (each gets only
a few events), so delivered latency covers all clients.

The peers have no server-side filtering (every client receives every change
and filters itself), so they are not measured here.
"""

from __future__ import annotations

from typing import Any

from bench.scenarios import Ctx, connect, measure, start_server

__all__ = ["run_routing"]


def run_routing(
    ctx: Ctx, counts: list[int], rate: float, duration: float
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rate": rate,
        "duration_s": duration,
        "counts": counts,
        "rows": [],
    }
    for n in counts:
        ctx.log(f"  routing: {n} filtered clients")
        server = start_server(ctx, "pgpulse", extra=["--heartbeat", "600"])
        try:
            server.target.paths = [
                f"/v1/events?sub=docs:shipment_id=eq.{k}" for k in range(1, n + 1)
            ]
            got = connect(ctx, server.target, n, samples=n, timeout=120)
            if got["ok"] < n:
                out["rows"].append(
                    {
                        "clients": n,
                        "status": "cannot",
                        "reason": f"only {got['ok']} of {n} connected",
                    }
                )
                continue
            row = measure(
                ctx,
                server,
                n,
                rate,
                duration,
                server.database,
                shipments=n,
                expected_per_change=1,
                baseline_cpu=True,
            )
            row["status"] = "ok"
            out["rows"].append(row)
            ctx.log(
                f"    {row['server_net_cpu_ms_per_change']} ms CPU/change (net), "
                f"{row['server_cpu_ms_per_change']} gross, "
                f"p50 {row['latency_ms']['p50']} ms, "
                f"delivered {row['delivered_ratio']}"
            )
        finally:
            ctx.loadgen.close()
            server.stop()
    return out
