"""Percentiles and the join of receipt stamps with commit stamps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["latencies_ms", "percentile", "summary"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (*q* in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def latencies_ms(
    seqs: Iterable[int], times: Iterable[int], commits: dict[int, int]
) -> list[float]:
    """Receipt minus COMMIT-returned, in ms, for every sampled receipt whose
    ``seq`` the writer committed in this run."""
    out = []
    for seq, t in zip(seqs, times, strict=True):
        c = commits.get(seq)
        if c is not None:
            out.append((t - c) / 1e6)
    return out


def summary(values_ms: list[float]) -> dict[str, Any]:
    s = sorted(values_ms)
    return {
        "n": len(s),
        "p50": round(percentile(s, 50), 3),
        "p95": round(percentile(s, 95), 3),
        "p99": round(percentile(s, 99), 3),
        "max": round(s[-1], 3) if s else float("nan"),
    }
