"""Sections of the page about getting changes to clients: latency (1), fan-out
throughput (2), idle connections and memory (3) and filtered routing (5).
"""

from __future__ import annotations

from typing import Any

from bench.report._format import _lg, _num, _pct


def _latency(results: dict[str, Any]) -> list[str]:
    lat = results.get("latency")
    if not lat:
        return []
    lines = [
        "",
        "## 1. Latency: COMMIT returned -> event received",
        "",
        f"Milliseconds, CLOCK_MONOTONIC. Each cell: {lat['duration_s']} s of "
        "single-row INSERT transactions at the given rate with N SSE/WebSocket "
        f"clients connected; latency sampled on about {lat['samples']} clients "
        "spread evenly over the connection order (all clients when fewer). "
        "Delivered = changes received by all clients / (changes x clients). "
        "CPU columns: % of one core (server = its whole process tree; load "
        "generator = each worker process); machine = % of both cores busy.",
        "",
    ]
    floor = results.get("floor")
    if floor:
        lines += [
            f"**Floor**: raw asyncpg `pg_notify` in one connection, `LISTEN` in "
            f"another process ({floor['duration_s']} s per rate):",
            "",
            "| changes/s | p50 | p95 | p99 | received |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in floor["rows"]:
            ms = r["latency_ms"]
            lines.append(
                f"| {r['rate']:,} | {_num(ms['p50'], 2)} | {_num(ms['p95'], 2)} | "
                f"{_num(ms['p99'], 2)} | {r['received']:,}/{r['written']:,} |"
            )
        lines.append("")
    if "raw" in lat["systems"]:
        lines += [
            "**Second floor, `raw`**: the cheapest one-process broadcast on this "
            "machine, measured like the systems below: one asyncpg `LISTEN` on the "
            "tutorial channel, and per notification one SSE frame built from the "
            "payload as it came (no JSON re-encoding) and handed to "
            "`transport.write` of every client (uvloop `asyncio.Protocol`, no HTTP "
            "library, no per-client task, no flow control); notifications that "
            "arrive together (one event-loop iteration) go out as one joined write "
            "per client, so it keeps up as long as the machine can. Its rows are what "
            "writing each change to N sockets from one Python process costs here, "
            "before any framework, routing or buffering.",
            "",
        ]
    if "pgpulse-2w" in lat["systems"]:
        lines += [
            "**`pgpulse-2w`**: the same gateway with `--workers 2`: two "
            "processes, each with its own listener, sharing the port; each "
            "client's events come from the process it connected to, so each "
            "writes to about half of the sockets.",
            "",
        ]
    if "pgpulse-wal" in lat["systems"]:
        lines += [
            "**`pgpulse-wal`**: the same gateway with the table watched with the "
            "wal source (no trigger): commit -> WAL -> walsender -> the gateway's "
            "decoder -> the log -> its listener -> clients. The latency targets "
            "are read on `pgpulse` (triggers).",
            "",
        ]
    lines += [
        "| System | Clients | Changes/s | p50 | p95 | p99 | Delivered | "
        "Server CPU % | Load gen CPU % | Machine busy % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, cells in lat["systems"].items():
        for c in cells:
            if c.get("status") != "ok":
                where = (
                    f"{c['clients']:,} | {c['rate']:,}"
                    if "clients" in c
                    else "all | all"
                )
                lines.append(
                    f"| {system} | {where} | cannot: {c['reason']} | | | | | | |"
                )
                continue
            ms = c["latency_ms"]
            lines.append(
                f"| {system} | {c['clients']:,} | {c['rate']:,} | {_num(ms['p50'], 2)} "
                f"| {_num(ms['p95'], 2)} | {_num(ms['p99'], 2)} | "
                f"{_pct(c['delivered_ratio'])} | {_num(c.get('server_cpu_pct'))} | "
                f"{_lg(c['loadgen_cpu_pct'])} | {_num(c['machine_busy_pct'])} |"
            )
    return lines


def _fanout(results: dict[str, Any]) -> list[str]:
    fan = results.get("fanout")
    if not fan:
        return []
    lines = [
        "",
        "## 2. Fan-out throughput",
        "",
        "Deliveries/s = changes/s x clients receiving them, all clients subscribed "
        "to every change. Rates are probed (x2 from 100,000 deliveries/s, or /2 "
        f"when that is already too much; {fan['probe_s']} s each, then the "
        "midpoint) until a window does not keep up (less than 98% delivered by 2 s"
        " after the last write, p50 latency of the last quarter of the window more"
        " than 2x + 50 ms that of the first quarter, or p99 over 5 s); "
        f"the best rate is then held for {fan['hold_s']} s and that window is "
        "reported. Latency in ms (sampled on ~50 clients).",
        "",
        "| System | Clients | Deliveries/s sustained | Changes/s | p50 | p99 | "
        "Server CPU % | Load gen CPU % | Machine busy % | Limit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, cells in fan["systems"].items():
        for c in cells:
            if c.get("status") != "ok":
                lines.append(
                    f"| {system} | {c.get('clients', 'all')} | cannot: {c['reason']} "
                    "| | | | | | | |"
                )
                continue
            r = c["result"]
            ms = r["latency_ms"]
            verdict = r.get("verdict", "")
            dps = _num(r["deliveries_per_s"]) + (
                "" if r.get("kept_up") else " (fell behind)"
            )
            lines.append(
                f"| {system} | {c['clients']:,} | {dps} | {_num(r['achieved_rate'])} | "
                f"{_num(ms['p50'], 2)} | {_num(ms['p99'], 2)} | "
                f"{_num(r.get('server_cpu_pct'))} | {_lg(r['loadgen_cpu_pct'])} | "
                f"{_num(r['machine_busy_pct'])} | {c['limit']}; {verdict} |"
            )
    return lines


def _idle(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle")
    if not idle:
        return []
    lines = [
        "",
        f"## 3. Idle connections and memory ({idle['clients']:,} SSE/WebSocket "
        "clients)",
        "",
        "RSS per client = (RSS of the server's process tree with the clients "
        "connected - RSS after a 20-client warm-up) / clients, in KB (1,000 "
        "bytes). DB connections = client backends on the system's database in "
        f"`pg_stat_activity`. Idle CPU = % of one core over {idle['settle_s']} s "
        "with the clients connected and no writes.",
        "",
        "| System | Clients | RSS/client (KB) | RSS before -> after (MiB) | "
        "DB connections | Idle CPU % | Note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, s in idle["systems"].items():
        if s.get("status") == "cannot":
            lines.append(f"| {system} | | | | | | cannot: {s['reason']} |")
            continue
        names = ", ".join(f"{k}: {v}" for k, v in s["db_connection_names"].items())
        lines.append(
            f"| {system} | {s['clients']:,} | {_num(s['rss_per_client_kb'])} | "
            f"{s['rss_before_mib']} -> {s['rss_after_mib']} | {s['db_connections']}"
            f" ({names}) | {_num(s['idle_cpu_pct'])} | {s['note']} |"
        )
    return lines


def _routing(results: dict[str, Any]) -> list[str]:
    rt = results.get("routing")
    if not rt:
        return []
    lines = [
        "",
        "## 5. Filtered routing (pgpulse)",
        "",
        "N clients each subscribed to a different shipment "
        "(`?sub=docs:shipment_id=eq.K`); "
        f"{rt['rate']:,} changes/s for {rt['duration_s']} s to random shipments, so"
        " each change matches one client. CPU per change = gateway utime+stime "
        "during the writes / changes (gross), and minus its idle CPU over an equal "
        "window before (net). Latency over all clients, ms. Heartbeats at 600 s. "
        "The peers cannot filter on the server (every client gets every change), "
        "so they are not in this table.",
        "",
        "| Filtered clients | CPU ms/change (net) | CPU ms/change (gross) | p50 | p99 "
        "| Delivered | Machine busy % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rt["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['clients']:,} | cannot: {r['reason']} | | | | | |")
            continue
        ms = r["latency_ms"]
        lines.append(
            f"| {r['clients']:,} | {_num(r['server_net_cpu_ms_per_change'], 3)} | "
            f"{_num(r['server_cpu_ms_per_change'], 3)} | {_num(ms['p50'], 2)} | "
            f"{_num(ms['p99'], 2)} | {_pct(r['delivered_ratio'])} | "
            f"{_num(r['machine_busy_pct'])} |"
        )
    return lines
