"""Section 9 of the page: delivery under auth, as claim groups grow."""

from __future__ import annotations

from typing import Any

from bench.report._format import _num, _pct

__all__ = ["SUPABASE_MSGS", "_auth"]

#: Supabase Realtime's published Postgres Changes throughput with RLS (msg/s).
SUPABASE_MSGS = (3000, 4000)

_MODES = {
    "filter": "no auth; each client's own filter (control)",
    "policy": "policy filter `shipment_id=eq.{claims.tenant}`",
    "rls": "row-level security (`CREATE POLICY`, per group per batch)",
}


def _auth(results: dict[str, Any]) -> list[str]:
    data = results.get("auth")
    if not data:
        return []
    n = data["subscribers"]
    lines = [
        "",
        "## 9. Delivery under auth: policies and row-level security",
        "",
        f"{n:,} subscribers hold tokens for G claim groups (a group: equal role and "
        "claims, such as one tenant's members; every token has its own `jti` and "
        "`exp`, as sessions do). The writer changes rows of tenants 1..G "
        f"({data['rate']:.0f} changes/s for {data['duration_s']} s), so each change "
        f"reaches {n:,}/G subscribers, the same deliveries in every mode. "
        "*Statements/change*: the gateway's checks counted by "
        "`pgpulse_filter_statements_total` (counted, not timed). CPU: the gateway "
        "process during the writes, minus its idle CPU over an equal window.",
        "",
        "| mode | groups | per change | statements/change | CPU ms/change (net) | "
        "CPU us/delivery | p50 | p99 | delivered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        mode = _MODES.get(row["mode"], row["mode"])
        if row.get("status") != "ok":
            lines.append(
                f"| {mode} | {row['groups']} | cannot: {row.get('reason', '?')} |"
                + " |" * 6
            )
            continue
        lines.append(
            f"| {mode} | {row['groups']:,} | {n // row['groups']:,} | "
            f"{_num(row['statements_per_change'], 2)} | "
            f"{_num(row.get('server_net_cpu_ms_per_change'), 3)} | "
            f"{_num(row.get('cpu_us_per_delivery'), 2)} | "
            f"{_num(row['latency_ms']['p50'], 2)} | "
            f"{_num(row['latency_ms']['p99'], 2)} | {_pct(row['delivered_ratio'])} |"
        )
    ramp = data.get("throughput", {})
    rows = ramp.get("rows") or []
    if rows:
        low, high = SUPABASE_MSGS
        lines += [
            "",
            f"Throughput, row-level security, {n:,} subscribers in "
            f"{ramp['groups']} groups ({n // ramp['groups']} per change), "
            f"{ramp['duration']} s per step; the rate steps up until delivery no "
            "longer keeps up (everything delivered by the end of the drain, lag "
            f"not growing). Supabase publishes {low:,}-{high:,} msg/s for Postgres "
            f"Changes with RLS (their hardware; 10x is {10 * high:,}).",
            "",
            "| changes/s asked | achieved | deliveries/s | vs 4,000 msg/s | "
            "statements/change | p50 | p99 | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in rows:
            if row.get("status") == "cannot":
                lines.append(f"| cannot: {row.get('reason', '?')} |" + " |" * 7)
                continue
            lines.append(
                f"| {row['rate']:,.0f} | {_num(row['achieved_rate'])} | "
                f"{_num(row['deliveries_per_s'])} | "
                f"{row['deliveries_per_s'] / high:.1f}x | "
                f"{_num(row['statements_per_change'], 3)} | "
                f"{_num(row['latency_ms']['p50'], 1)} | "
                f"{_num(row['latency_ms']['p99'], 1)} | {row['verdict']} |"
            )
    return lines
