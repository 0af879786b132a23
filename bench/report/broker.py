"""Section 12 of the page: gateways behind NATS JetStream, against gateways
on the database."""

from __future__ import annotations

from typing import Any

from bench.report._format import _num, _pct

__all__ = ["_broker"]

_SETUPS = {
    "direct": "one gateway on the database",
    "direct-3": "3 gateways, each on the database",
    "broker-1": "relay + NATS + 1 gateway",
    "broker-2": "relay + NATS + 2 gateways",
    "broker-3": "relay + NATS + 3 gateways",
}


def _broker(results: dict[str, Any]) -> list[str]:
    data = results.get("broker")
    if not data:
        return []
    lines = [
        "",
        "## 12. Past one process: gateways behind NATS JetStream",
        "",
        f"{data['clients']:,} SSE clients split evenly over the gateways of each "
        f"setup, single-row inserts at each rate for {data['duration_s']} s. "
        "*Broker* setups: `pgpulse relay` reads the log and publishes each change "
        "to a JetStream stream on one local `nats-server` (file storage); the "
        "gateways run `serve --broker` and never follow the database. *DB "
        "connections*: pgpulse's connections in `pg_stat_activity` after the "
        "window (relay, gateways' listeners and pools). *Log reads/s*: scans of "
        "`pgpulse.changes` (`pg_stat_user_tables`), whoever made them. CPU: every "
        "process of the setup (gateways, relay, NATS), % of one core. Everything, "
        "the load generator included, shares this machine's 2 cores, so more "
        "gateway processes here do not add cores: the rows show what each "
        "setup costs, not what more machines would gain.",
        "",
        "| setup | changes/s | deliveries/s | p50 | p99 | delivered | DB connections "
        "| log reads/s | CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setup, rows in data["setups"].items():
        for r in rows:
            if r.get("status") != "ok":
                lines.append(f"| {setup} | cannot: {r.get('reason', '')} |" + " |" * 7)
                continue
            lines.append(
                f"| {_SETUPS.get(setup, setup)} | {_num(r['rate'])} | "
                f"{_num(r['deliveries_per_s'])} | "
                f"{_num(r['latency_ms'].get('p50'), 2)} | "
                f"{_num(r['latency_ms'].get('p99'), 2)} | "
                f"{_pct(r.get('delivered_ratio'))} | {r['database_connections']} | "
                f"{_num(r['log_reads_per_s'])} | {_num(r['setup_cpu_pct'])} |"
            )
    lines += _notes(data["setups"])
    lines += _reconnect(data.get("reconnect") or {})
    return lines


def _reconnect(rows: dict[str, Any]) -> list[str]:
    """The mass-reconnect table."""
    if not rows:
        return []
    lines = [
        "",
        "**A mass reconnect** (what losing a gateway costs the one its clients "
        "move to): every client of the setup's gateway resumes at once with the "
        "same Last-Event-ID, the given number of changes back. *Seconds*: until "
        "every client had every missed change. *Log reads*, *DB transactions*: "
        "in the database meanwhile (`pg_stat_user_tables`, `pg_stat_database`; "
        "the relay's own, if any, included). *Read from*: where the gateway read "
        "the missed changes (`pgpulse_resumes_total`).",
        "",
        "| setup | clients | changes missed | seconds | delivered | log reads "
        "| DB transactions | read from | CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setup, r in rows.items():
        source = ", ".join(
            f"{r[key]:,} {name}"
            for key, name in (("from_stream", "stream"), ("from_log", "log"))
            if r.get(key)
        )
        lines.append(
            f"| {_SETUPS.get(setup, setup)} | {_num(r['clients'])} | "
            f"{_num(r['missed'])} | {_num(r['seconds'], 2)} | "
            f"{_pct(r.get('delivered_ratio'))} | {_num(r['log_reads'])} | "
            f"{_num(r['database_transactions'])} | {source} | "
            f"{_num(r['setup_cpu_s'], 2)} |"
        )
    return lines


def _notes(setups: dict[str, Any]) -> list[str]:
    """What the table says, from its own numbers."""

    def cell(setup: str, rate: int) -> dict[str, Any] | None:
        for r in setups.get(setup, []):
            if r.get("status") == "ok" and r["rate"] == rate:
                return dict(r)
        return None

    notes = []
    for rate in sorted({r["rate"] for rows in setups.values() for r in rows}):
        direct, broker = cell("direct", rate), cell("broker-1", rate)
        if direct and broker:
            notes.append(
                f"at {rate:,} changes/s the hop through the relay and JetStream "
                f"adds {broker['latency_ms']['p50'] - direct['latency_ms']['p50']:.1f}"
                " ms to the median"
            )
    return [
        "",
        "Read with it: "
        + "; ".join(notes)
        + (". " if notes else "")
        + "The relay's reader is a gateway's listener (one read per wake-up, or "
        "polling when wake-ups come faster than it reads), so its reads per "
        "second vary between runs at one rate; what does not vary is who reads: "
        "behind the broker only the relay, on the database every gateway process "
        "(N processes, N readers and N listener connections).",
    ]
