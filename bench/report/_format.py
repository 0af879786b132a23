"""Number formatting and result-cell lookups shared by the page's sections.

Small helpers only: how a value is printed (``n/a`` for missing ones) and how
a cell, a floor row or the client count the targets are judged at is found in
the results.
"""

from __future__ import annotations

import math
from typing import Any


def _num(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, int) or (isinstance(v, float) and v >= 1000):
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _lg(cpu: list[float] | None) -> str:
    if not cpu:
        return "n/a"
    return " + ".join(f"{c:.0f}" for c in cpu)


def _cell(cells: list[dict[str, Any]], n: int, rate: int) -> dict[str, Any] | None:
    for c in cells:
        if c.get("requested", c.get("clients")) == n and c.get("rate") == rate:
            return c
    return None


def _floor(results: dict[str, Any], rate: int) -> dict[str, Any] | None:
    row: dict[str, Any]
    for row in results.get("floor", {}).get("rows", []):
        if row["rate"] == rate:
            return row
    return None


def _latency_n(results: dict[str, Any]) -> int:
    """The client count the latency targets are judged at: 1,000 when that was
    measured, else the largest count (scaled-down runs)."""
    lat = results.get("latency", {}).get("systems", {}).get("pgpulse", [])
    n_big = max((c.get("clients", 0) for c in lat), default=0)
    return 1000 if _cell(lat, 1000, 100) is not None else n_big


def _ok_cell(
    results: dict[str, Any], system: str, n: int, rate: int
) -> dict[str, Any] | None:
    """A measured latency cell of *system*, or None (absent or could not run)."""
    cells = results.get("latency", {}).get("systems", {}).get(system, [])
    cell = _cell(cells, n, rate)
    return cell if cell is not None and cell.get("status") == "ok" else None
