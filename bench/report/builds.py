"""Section 8 of the page: the same measurements on the embedded PostgreSQL and
on the distribution's (JIT on)."""

from __future__ import annotations

from typing import Any

from bench.report._format import _cell, _num

__all__ = ["_builds"]


def _builds(results: dict[str, Any]) -> list[str]:
    data = results.get("builds")
    if not data:
        return []
    rate = data["rate"]
    lines = [
        "",
        "## 8. On the PostgreSQL users run: embedded and distribution builds",
        "",
        "The other sections run on the embedded PostgreSQL, built without JIT. "
        "Here each build gets its own cluster and the same measurements: the raw "
        f"LISTEN floor and pgpulse's COMMIT -> event latency at {rate} changes/s "
        "(milliseconds), and writers' TPS with trigger capture on against none "
        "(pgbench, as in section 4). Before pgpulse turned JIT off for its own "
        "statements, the distribution's build (JIT on) compiled every listener "
        "read: p50 273 ms at one client (measured on Debian's PostgreSQL 15).",
        "",
        "| build | PostgreSQL | JIT | LISTEN floor p50 | clients | pgpulse p50 | "
        "p95 | p99 | p50 - floor | TPS with capture / without |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for build, one in data["builds"].items():
        if one.get("status") != "ok":
            lines.append(f"| {build} | cannot: {one.get('reason', '?')} |" + " |" * 9)
            continue
        floor = one["floor"]["rows"][0]["latency_ms"]["p50"]
        jit = "on" if one["jit"] == "on" and one["jit_available"] else "off"
        ratio = one["dbcost"]["tps_ratio"].get("pgpulse")
        cells = one["latency"]["systems"]["pgpulse"]
        for n in data["counts"]:
            cell = _cell(cells, n, rate)
            if cell is None or cell.get("status") != "ok":
                lines.append(f"| {build} | {one['version']} | {jit} | | {n} | n/a |")
                continue
            ms = cell["latency_ms"]
            lines.append(
                f"| {build} | {one['version']} | {jit} | {_num(floor, 2)} | {n} | "
                f"{_num(ms['p50'], 2)} | {_num(ms['p95'], 2)} | "
                f"{_num(ms['p99'], 2)} | {_num(ms['p50'] - floor, 2)} | "
                f"{_num(ratio, 2)} |"
            )
    return lines
