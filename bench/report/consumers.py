"""Section 10 of the page: consumer groups against polling and LISTEN workers."""

from __future__ import annotations

from typing import Any

from bench.report._format import _num

__all__ = ["_consumers"]

_DESIGNS = {
    "pgpulse": "pgpulse consumer group (1 worker)",
    "poll": "polling worker (`select ... where id > $last` every 1 s)",
    "listen": "bare LISTEN/NOTIFY worker (trigger `pg_notify`; loses jobs "
    "committed while it is down)",
}


def _consumers(results: dict[str, Any]) -> list[str]:
    data = results.get("consumers")
    if not data:
        return []
    lines = [
        "",
        "## 10. Consumer groups: throughput and wake-up latency",
        "",
        f"Throughput: {data['backlog']:,} jobs committed in one transaction, "
        "drained by worker processes of one group (acknowledging each batch, "
        "no work in the handler), from the commit to the last acknowledgement; "
        "the workers share the machine's cores with PostgreSQL.",
        "",
        "| workers | batch size | jobs | drain s | jobs/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in data["throughput"]:
        lines.append(
            f"| {row['workers']} | {row['batch']} | {row['changes']:,} | "
            f"{_num(row['drain_s'], 2)} | {_num(row['changes_per_s'])} |"
        )
    lines += [
        "",
        f"Wake-up latency: {data['jobs']} jobs, one every ~{data['interval_s']:g} s "
        "(jittered), from COMMIT returned to the handler seeing the job, each "
        "design in its own process.",
        "",
        "| worker | handled | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in data["latency"]:
        lat = row["latency_ms"]
        lines.append(
            f"| {_DESIGNS.get(row['design'], row['design'])} | "
            f"{row['handled']}/{row['jobs']} | {_num(lat['p50'], 2)} | "
            f"{_num(lat['p95'], 2)} | {_num(lat['p99'], 2)} | {_num(lat['max'], 2)} |"
        )
    return lines
