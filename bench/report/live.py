"""Section 11 of the page: live queries, against refetch-on-notify."""

from __future__ import annotations

from typing import Any

from bench.report._format import _num, _pct

__all__ = ["_live"]


def _live(results: dict[str, Any]) -> list[str]:
    data = results.get("live")
    if not data:
        return []
    rate = data["rate"]
    lines = [
        "",
        "## 11. Live queries",
        "",
        f"A live query of the ten newest rows (`/v1/live?table=docs&{data['query']}`); "
        "every insert enters its window, so each change is one `insert` patch per "
        f"client, timed from the writer's commit ({rate:.0f} changes/s for "
        f"{data['duration_s']} s). *Reads/change*: the query's executions per "
        "change, counted (`pgpulse_live_refreshes_total`, or the clients' REST "
        "requests); CPU: the gateway process. Refetch-on-notify is the pattern live "
        "queries replace: each client follows the change stream and runs the same "
        "query over `/v1/rest` on every event, at "
        f"{data.get('refetch_rate', rate):.0f} changes/s (its clients are httpx "
        "clients in one Python process on the same machine: at 100 of them that "
        "process is saturated, so its latency there includes their own queueing; "
        "the reads per change are what a database would serve).",
        "",
        "| design | clients | queries | reads/change | CPU ms/change | p50 | p99 | "
        "delivered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(design: str, r: dict[str, Any], clients: int, queries: int) -> str:
        if r.get("status") != "ok":
            return f"| {design} | {clients:,} | {queries:,} | cannot |" + " |" * 4
        return (
            f"| {design} | {clients:,} | {queries:,} | "
            f"{_num(r.get('reads_per_change'), 2)} | "
            f"{_num(r.get('server_cpu_ms_per_change'), 3)} | "
            f"{_num(r['latency_ms'].get('p50'), 2)} | "
            f"{_num(r['latency_ms'].get('p99'), 2)} | "
            f"{_pct(r.get('delivered_ratio'))}"
            + (
                " (the clients could not keep up: not a measure of the server)"
                if (r.get("delivered_ratio") or 0) < 0.9
                else ""
            )
            + " |"
        )

    for r in data["fanout"]:
        lines.append(row("live query, shared", r, r["clients"], 1))
    for r in data["distinct"]:
        lines.append(
            row("live queries, one client each", r, r["queries"], r["queries"])
        )
    for r in data["refetch"]:
        lines.append(row("refetch-on-notify", r, r["clients"], r["clients"]))
    return lines
