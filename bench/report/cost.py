"""Sections of the page about what capture costs the database: TPS and bulk
inserts (4), instructions per process (6) and the writer's instructions part by
part (7).
"""

from __future__ import annotations

from typing import Any

from bench.report._format import _num


def _dbcost(results: dict[str, Any]) -> list[str]:
    cost = results.get("dbcost")
    if not cost:
        return []
    label = {
        "plain": "no capture",
        "pgpulse": "pgpulse capture (gateway following)",
        "pgpulse_solo": "pgpulse capture alone (no gateway reading)",
        "notify": "tutorial per-row NOTIFY trigger (1 listener)",
        "floor_trigger": "*floor: empty transition-table trigger*",
        "floor_copy": "*floor: every row written again, verbatim, no index*",
        "pgpulse_wal": "pgpulse wal source (no trigger; gateway decoding the WAL)",
        "pgpulse_wal_paused": "pgpulse wal source, nothing decoding meanwhile",
    }
    lines = [
        "",
        "## 4. Cost to the database",
        "",
        f"pgbench, {cost['clients']} clients, `-M prepared`, single-row INSERT "
        f"transactions, {cost['seconds']} s per run, {cost['rounds']} alternating "
        "round(s) (mean); `fsync=on`, `synchronous_commit=on`. Bulk: one "
        f"{cost['bulk_rows']:,}-row `INSERT ... SELECT`, median of "
        f"{cost['bulk_reps']}."
        + (
            " The two *floor* rows are references, not systems: an AFTER INSERT "
            "statement-level trigger `referencing new table` whose function only "
            "returns (the price of a transition-table trigger alone), and the "
            "same trigger doing `insert into sink select * from n` into an "
            "unindexed, logged table with the same columns and no constraints "
            "(every row written a second time, verbatim, no JSON, no index: the "
            "least any trigger-based durable log can cost)."
            if "floor_copy" in cost["tps"]
            else ""
        )
        + (
            " The *wal source* row: the table has no trigger; the gateway streams "
            "its changes from a logical replication slot and appends them to the "
            "log in batches, on the same 2 cores while pgbench runs (its WAL "
            "bytes include those log writes); *nothing decoding meanwhile* is the "
            "same table with no gateway running: what the writers themselves pay "
            "(the slot keeps the WAL; it is decoded before the next wal run). Every "
            "scenario runs with `wal_level=logical`."
            if "pgpulse_wal" in cost["tps"]
            else ""
        ),
        "",
        "| Capture | TPS | vs no capture | each round | WAL bytes/tx | "
        "DB CPU us/tx | Gateway CPU us/tx | Bulk insert (ms) | vs no capture |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cpu = cost.get("db_cpu_us_per_tx", {})
    gateway = cost.get("gateway_cpu_us_per_tx", {})
    for mode in label:
        if mode not in cost["tps"]:
            continue  # results from before the floors were measured
        lines.append(
            f"| {label[mode]} | {_num(cost['tps'][mode])} | "
            f"{cost['tps_ratio'][mode]:.2f}x | {_round_ratios(cost, mode)} | "
            f"{_num(cost['wal_bytes_per_tx'][mode])}"
            f" | {_num(cpu.get(mode))} | "
            f"{_num(gateway[mode]) if mode in gateway else ''} | "
            f"{cost['bulk_s'][mode] * 1000:,.0f} | "
            f"{cost['bulk_ratio'][mode]:.2f}x |"
        )
    if cpu:
        lines += [
            "",
            "*Each round*: the round's TPS over the no-capture TPS of the same "
            "round, in round order: how far the machine moved the ratio during "
            "the run. DB CPU us/tx: CPU time of every PostgreSQL process "
            "(backends, the walsender, background writers; exited backends "
            "included) during the run, per transaction: what the database "
            "server itself spent. The gateway's own Python (the wal decoder, "
            "the listener) is not in it: *Gateway CPU us/tx* is that, the "
            "gateway's processes over the same run, where a gateway runs.",
        ]
    return lines


def _round_ratios(cost: dict[str, Any], mode: str) -> str:
    """Each round's TPS over the same round's no-capture TPS ("" for none)."""
    runs = cost.get("pgbench", {})
    if mode == "plain" or mode not in runs or "plain" not in runs:
        return ""
    pairs = zip(runs[mode], runs["plain"], strict=False)
    return " / ".join(f"{r['tps'] / p['tps']:.2f}" for r, p in pairs if p["tps"])


def _instructions(results: dict[str, Any]) -> list[str]:
    """Section 6: the work per transaction by process, in instructions."""
    ins = results.get("instructions")
    if not ins:
        return []
    lines = ["", "## 6. Where the work goes (instructions)", ""]
    if ins.get("status") != "ok":
        return [*lines, f"Not measured: {ins.get('reason', '?')}."]
    w = ins["writer_kinstr_per_tx"]
    f = ins["following"]
    t, wl = f["trigger"]["kinstr_per_change"], f["wal"]["kinstr_per_change"]
    lines += [
        "Thousands of instructions retired per single-row INSERT transaction "
        "(`perf stat -e instructions` on each process): repeatable to a few "
        "percent where CPU seconds on this machine are not. *Writer*: one "
        f"connection, {ins['transactions']:,} prepared INSERTs into each table. "
        f"*Following*: {ins['clients']} pgbench writers for {ins['seconds']:g} s "
        "with a gateway following (trigger) or decoding (wal), counted until "
        "every change was logged and read, per change.",
        "",
        "| Process | no capture | trigger source | wal source |",
        "| --- | --- | --- | --- |",
        f"| writer's backend | {w['plain']:.1f} | {w['trigger']:.1f} | "
        f"{w['wal']:.1f} |",
        f"| listener's backend (reads the log) | | {t['listener']:.1f} | "
        f"{wl['listener']:.1f} |",
        f"| decoder's backend (writes the log) | | | {wl['decoder_writes']:.1f} |",
        f"| walsender (decodes the WAL) | | | {wl['walsender']:.1f} |",
        f"| gateway process (Python) | | {t['gateway']:.1f} | {wl['gateway']:.1f} |",
    ]
    total_t = w["trigger"] + t["listener"] + t["gateway"]
    total_w = w["wal"] + sum(wl.values())
    lines.append(
        f"| **all of it** | **{w['plain']:.1f}** | **{total_t:.1f}** "
        f"({total_t / w['plain']:.2f}x) | **{total_w:.1f}** "
        f"({total_w / w['plain']:.2f}x) |"
    )
    lines += [
        "",
        "pgbench's own client work is not in it (the same in every column). "
        "The writer's row is what each writer pays on its commit path; the rest "
        "runs beside it: on these 2 shared cores it competes with the writers "
        "(the TPS of section 4), with the gateway on its own machine only the "
        "backends stay on the database server.",
    ]
    return lines


def _parts(results: dict[str, Any]) -> list[str]:
    """Section 7: the writer's instructions, capture part by part (callgrind)."""
    parts = results.get("parts")
    if not parts:
        return []
    lines = ["", "## 7. What trigger capture costs the writer, part by part", ""]
    if parts.get("status") != "ok":
        return [*lines, f"Not measured: {parts.get('reason', '?')}."]
    one, bulk = parts["single_kinstr_per_tx"], parts["bulk_kinstr_per_row"]
    (t0, t1), (r0, r1) = parts["transactions"], parts["rows"]
    lines += [
        "Thousands of instructions executed by a single-user PostgreSQL backend "
        "(`postgres --single`: no client, no network) under callgrind, which "
        "counts every instruction: the same numbers on every run, on any "
        "machine with valgrind. *Single-row*: prepared single-row INSERT "
        f"transactions ({t1 - t0:,} more in one run than in another, the "
        "difference per transaction). *Bulk*: one `INSERT ... SELECT` "
        f"({r1 - r0:,} rows more, per row). Each step adds one part to the step "
        "above it; the last is pgpulse's own capture. Without the client round "
        "trip a backend does less per transaction than in section 4, so ratios "
        "here are larger than there.",
        "",
        "| Step | adds | single-row (k) | this step | vs no capture | "
        "bulk per row (k) | this step | vs no capture |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base_one, base_bulk = one["plain"], bulk["plain"]
    before: str | None = None
    for entry in parts["steps"]:
        step = entry["step"]
        d1 = f"{one[step] - one[before]:+.1f}" if before else ""
        d2 = f"{bulk[step] - bulk[before]:+.2f}" if before else ""
        lines.append(
            f"| {step} | {entry['adds']} | {one[step]:.1f} | {d1} | "
            f"{one[step] / base_one:.2f}x | {bulk[step]:.2f} | {d2} | "
            f"{bulk[step] / base_bulk:.2f}x |"
        )
        before = step
    for alt in parts.get("alternatives", []):
        name, instead = alt["name"], alt["instead_of"]
        lines += [
            "",
            f"Measured beside the ladder: *{name}*, {alt['changes']}: "
            f"{one[name]:.1f}k per transaction ({one[name] - one[instead]:+.1f}k "
            f"against step {instead}), {bulk[name]:.2f}k per row in bulk "
            f"({bulk[name] - bulk[instead]:+.2f}k).",
        ]
    return lines
