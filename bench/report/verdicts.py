"""The targets table: each target's goal, what was measured and the verdict.

The goal constants live here; the analysis of unmet targets reads them too.
"""

from __future__ import annotations

from typing import Any

from bench.report._format import _cell, _floor, _latency_n, _num, _ok_cell, _pct
from bench.report.auth import SUPABASE_MSGS

__all__ = ["BULK_GOAL", "LATENCY_GOAL_MS", "P99_GOAL_MS", "TPS_GOAL", "targets"]

#: The goals of the targets (the benchmark issue's), used for verdicts and text.
LATENCY_GOAL_MS = 1.0
TPS_GOAL = 0.6
BULK_GOAL = 1.8
P99_GOAL_MS = 10.0


def _raw_note(results: dict[str, Any], n: int, rate: int, key: str) -> str:
    """``; raw broadcast floor at N clients: X ms`` when it was measured."""
    if "raw" not in results.get("latency", {}).get("systems", {}):
        return ""
    raw = _ok_cell(results, "raw", n, rate)
    if raw is None:
        return f"; raw broadcast floor at {n} clients: n/a"
    value = f"{_num(raw['latency_ms'][key], 2)} ms"
    ratio = raw.get("delivered_ratio")
    if ratio is not None and ratio < 0.999:
        # Past what the machine can write it falls behind: no floor there.
        value += f" ({_pct(ratio)} delivered)"
    return f"; raw broadcast floor at {n} clients: {value}"


def _two_note(results: dict[str, Any], n: int, rate: int, key: str) -> str:
    """``; with 2 gateway processes: X ms`` when that was measured."""
    two = _ok_cell(results, "pgpulse-2w", n, rate)
    if two is None:
        return ""
    return f"; with 2 gateway processes: {_num(two['latency_ms'][key], 2)} ms"


def _cost_floor(cost: dict[str, Any], key: str) -> str:
    """``; floor (every row written again): X.XXx`` when it was measured."""
    ratio = cost.get(key, {}).get("floor_copy")
    return "" if ratio is None else f"; floor (every row written again): {ratio:.2f}x"


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The five targets: what was measured, the ratio, met or not."""
    out: list[dict[str, str]] = []

    def add(name: str, goal: str, measured: str, ratio: str, met: bool | None) -> None:
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        out.append(
            {
                "target": name,
                "goal": goal,
                "measured": measured,
                "ratio": ratio,
                "verdict": verdict,
            }
        )

    lat = results.get("latency", {}).get("systems", {}).get("pgpulse", [])
    n = _latency_n(results)
    floor = _floor(results, 100)
    cell = _cell(lat, n, 100)
    if floor and cell and cell.get("status") == "ok":
        d = cell["latency_ms"]["p50"] - floor["latency_ms"]["p50"]
        add(
            f"Latency p50, {n} clients, 100 changes/s",
            "within 1 ms of the LISTEN floor",
            f"{cell['latency_ms']['p50']:.2f} ms vs floor "
            f"{floor['latency_ms']['p50']:.2f} ms"
            + _raw_note(results, n, 100, "p50")
            + _two_note(results, n, 100, "p50"),
            f"+{d:.2f} ms",
            d <= LATENCY_GOAL_MS,
        )
    else:
        add("Latency p50 vs floor", "within 1 ms", "n/a", "n/a", None)
    cell = _cell(lat, n, 1000)
    if cell and cell.get("status") == "ok":
        p99 = cell["latency_ms"]["p99"]
        add(
            f"Latency p99, {n} clients x 1,000 changes/s",
            f"< {P99_GOAL_MS:g} ms",
            f"{p99:.1f} ms"
            + _raw_note(results, n, 1000, "p99")
            + _two_note(results, n, 1000, "p99"),
            f"{p99 / P99_GOAL_MS:.2f}x the limit",
            p99 < P99_GOAL_MS,
        )
    else:
        add("Latency p99 at 1,000 changes/s", "< 10 ms", "n/a", "n/a", None)

    fan = results.get("fanout", {}).get("systems", {})
    for n in results.get("fanout", {}).get("counts", []):
        ours = _fan(fan.get("pgpulse", []), n)
        ours2 = _fan(fan.get("pgpulse-2w", []), n)
        node = _fan(fan.get("node", []), n)
        if ours is None or node is None:
            add(f"Fan-out, {n:,} clients", ">= 1.5x Node bridge", "n/a", "n/a", None)
            continue
        ratio = ours / node if node else float("inf")
        extra = (
            f"; 2 workers {ours2:,.0f} ({ours2 / node:.2f}x)"
            if ours2 and node
            else (f"; 2 workers {ours2:,.0f}" if ours2 else "")
        )
        add(
            f"Fan-out, {n:,} clients (1 process)",
            ">= 1.5x Node bridge",
            f"{ours:,.0f} vs {node:,.0f} deliveries/s{extra}",
            f"{ratio:.2f}x",
            ratio >= 1.5,
        )

    idle = results.get("idle", {})
    ours_idle = idle.get("systems", {}).get("pgpulse")
    if ours_idle and ours_idle.get("status") in ("ok", "partial"):
        kb = ours_idle["rss_per_client_kb"]
        conns = ours_idle["db_connections"]
        add(
            f"{ours_idle['clients']:,} idle clients, one process",
            "<= 3 DB connections, <= 30 KB RSS/client",
            f"{conns} connections, {kb:.1f} KB/client",
            f"{conns / 3:.2f}x, {kb / 30:.2f}x",
            conns <= 3 and kb <= 30 and ours_idle["clients"] >= idle["clients"],
        )
    else:
        add("Idle clients", "<= 3 conns, <= 30 KB", "n/a", "n/a", None)

    cost = results.get("dbcost")
    if cost:
        for mode, source in (("pgpulse", "trigger"), ("pgpulse_wal", "wal")):
            if mode not in cost["tps"]:
                continue  # results from before the wal source existed
            r = cost["tps_ratio"][mode]
            add(
                f"TPS, {cost['clients']} writers, capture on / off ({source} source)",
                ">= 0.6x",
                f"{cost['tps'][mode]:,.0f} vs {cost['tps']['plain']:,.0f} TPS"
                + (_cost_floor(cost, "tps_ratio") if source == "trigger" else ""),
                f"{r:.2f}x",
                r >= TPS_GOAL,
            )
        for mode, source in (("pgpulse", "trigger"), ("pgpulse_wal", "wal")):
            if mode not in cost["tps"]:
                continue
            b = cost["bulk_ratio"][mode]
            logged = cost.get("bulk_logged_s")
            add(
                f"{cost['bulk_rows']:,}-row INSERT ... SELECT, capture on / off "
                f"({source} source)",
                "<= 1.8x",
                f"{cost['bulk_s'][mode] * 1000:,.0f} vs "
                f"{cost['bulk_s']['plain'] * 1000:,.0f} ms"
                + (_cost_floor(cost, "bulk_ratio") if source == "trigger" else "")
                + (
                    f"; all rows in the log after {logged * 1000:,.0f} ms"
                    if source == "wal" and logged
                    else ""
                ),
                f"{b:.2f}x",
                b <= BULK_GOAL,
            )
    else:
        add("Cost to the database", ">= 0.6x TPS, <= 1.8x bulk", "n/a", "n/a", None)

    rows = [
        r for r in results.get("routing", {}).get("rows", []) if r.get("status") == "ok"
    ]
    if len(rows) >= 2:
        costs = [r["server_net_cpu_ms_per_change"] or 0.0 for r in rows]
        base = costs[0]
        worst = max(abs(c / base - 1) for c in costs[1:]) if base else float("inf")
        add(
            f"Routing cost/change, {rows[0]['clients']:,} -> {rows[-1]['clients']:,}"
            " filtered clients",
            "flat (+-20%)",
            " / ".join(f"{c:.3f}" for c in costs) + " ms CPU",
            f"{costs[-1] / base:.2f}x (worst {worst:+.0%})" if base else "n/a",
            worst <= 0.2,
        )
    else:
        add("Routing cost per change", "flat (+-20%)", "n/a", "n/a", None)

    ramp = results.get("auth", {}).get("throughput", {})
    steps = [r for r in ramp.get("rows") or [] if r.get("status", "ok") == "ok"]
    goal = 10 * SUPABASE_MSGS[1]
    if steps:
        kept = [r for r in steps if r.get("sustained")]
        best = max((r["deliveries_per_s"] for r in kept), default=0.0)
        last = steps[-1]
        measured = f"{best:,.0f} deliveries/s sustained" + (
            ""
            if last.get("sustained")
            else f"; at {last['rate']:,.0f} changes/s: {last['verdict']}"
        )
        add(
            f"Row-level security, {results['auth']['subscribers']:,} subscribers "
            f"in {ramp.get('groups')} groups",
            f">= {goal:,} deliveries/s (10x Supabase's published RLS figure)",
            measured,
            f"{best / goal:.2f}x",
            best >= goal,
        )
    else:
        add(
            "Row-level security throughput",
            f">= {goal:,} deliveries/s",
            "n/a",
            "n/a",
            None,
        )
    return out


def _fan(cells: list[dict[str, Any]], n: int) -> float | None:
    for c in cells:
        if c.get("clients") == n and c.get("status") == "ok":
            r = c["result"]
            return float(r["deliveries_per_s"]) if r.get("kept_up") else 0.0
    return None
