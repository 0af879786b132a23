"""The scenario plans (full and ``--quick``) and the run that executes them.

Full plan on the 2-core reference machine: about 30 minutes in all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench._proc import raise_nofile
from bench.env import (
    BenchCluster,
    ensure_node_bridge,
    ensure_python_peers,
    machine_info,
)
from bench.loadgen import LoadGen
from bench.scenarios import Ctx
from bench.scenarios.auth_groups import run_auth_groups
from bench.scenarios.broker import run_broker
from bench.scenarios.builds import run_builds
from bench.scenarios.capture_parts import run_capture_parts
from bench.scenarios.consumers import run_consumers
from bench.scenarios.dbcost import run_dbcost
from bench.scenarios.fanout import run_fanout
from bench.scenarios.idle import run_idle
from bench.scenarios.instructions import run_instructions
from bench.scenarios.latency import run_floor, run_latency
from bench.scenarios.live import run_live
from bench.scenarios.routing import run_routing
from pgpulse.embedded import EmbeddedCluster

__all__ = ["PLANS", "SCENARIOS", "run"]

PEERS = ["tutorial", "node", "broadcaster"]

PLANS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "floor": {"rates": [100, 1000], "duration": 5.0},
        "latency": {
            "systems": ["pgpulse", "pgpulse-2w", "pgpulse-wal", "raw", *PEERS],
            "counts": [1, 100, 1000, 5000],
            "rates": [100, 1000],
            "duration": 4.0,
        },
        "fanout": {
            "systems": ["pgpulse", "pgpulse-2w", "node", "broadcaster", "tutorial"],
            "counts": [1000, 10000],
            "probe": 4.0,
            "hold": 30.0,
        },
        "idle": {
            "systems": ["pgpulse", "node", "broadcaster", "tutorial"],
            "clients": 10000,
            "settle": 3.0,
        },
        "dbcost": {
            "clients": 16,
            "seconds": 8.0,
            # Five alternating rounds: on this machine one mode's ratio moved
            # from 0.42 to 0.62 within three rounds of one run.
            "rounds": 5,
            "bulk_rows": 50000,
            "bulk_reps": 5,
        },
        "routing": {"counts": [1000, 5000, 10000], "rate": 200.0, "duration": 8.0},
        "instructions": {"transactions": 5000, "clients": 16, "seconds": 8.0},
        "parts": {"transactions": (200, 1200), "rows": (100, 5100)},
        "builds": {
            "counts": [1, 100],
            "rate": 50,
            "duration": 4.0,
            "cost": {
                "clients": 16,
                "seconds": 6.0,
                "rounds": 2,
                "bulk_rows": 20000,
                "bulk_reps": 1,
            },
        },
        "auth": {
            "subscribers": 1000,
            "groups": [1, 10, 100, 1000],
            "rate": 100.0,
            "duration": 8.0,
            "throughput": {
                "groups": 100,
                "rates": [500, 1000, 2000, 4000, 6000, 8000],
                "duration": 5.0,
            },
        },
        "consumers": {
            "backlog": 50000,
            "workers": [1, 4],
            "batch": 500,
            "jobs": 100,
            "interval": 0.2,
        },
        "live": {
            "clients": [1, 100, 1000],
            "queries": [1, 10, 100],
            "refetch": [1, 10, 100],
            "rate": 50.0,
            "duration": 5.0,
            "refetch_rate": 10.0,
        },
        "broker": {
            "setups": ["direct", "direct-3", "broker-1", "broker-2", "broker-3"],
            "clients": 1000,
            "rates": [100, 1000],
            "duration": 4.0,
            "reconnect": {"clients": 1000, "missed": 500},
        },
    },
    "quick": {
        "floor": {"rates": [100], "duration": 1.0},
        "latency": {
            "systems": ["pgpulse", "pgpulse-wal", "raw", *PEERS],
            "counts": [1, 20],
            "rates": [100],
            "duration": 1.5,
        },
        "fanout": {
            "systems": ["pgpulse", "node"],
            "counts": [50],
            "probe": 1.0,
            "hold": 2.0,
            "start_deliveries": 5000,
        },
        "idle": {"systems": ["pgpulse", "node"], "clients": 200, "settle": 1.0},
        "dbcost": {
            "clients": 16,
            "seconds": 2.0,
            "rounds": 1,
            "bulk_rows": 5000,
            "bulk_reps": 1,
        },
        "routing": {"counts": [20, 40], "rate": 50.0, "duration": 1.5},
        "instructions": {"transactions": 300, "clients": 4, "seconds": 2.0},
        "parts": {"transactions": (20, 120), "rows": (10, 510)},
        "builds": {
            "counts": [1],
            "rate": 20,
            "duration": 1.0,
            "cost": {
                "clients": 4,
                "seconds": 1.0,
                "rounds": 1,
                "bulk_rows": 500,
                "bulk_reps": 1,
            },
        },
        "auth": {
            "subscribers": 40,
            "groups": [1, 10],
            "rate": 20.0,
            "duration": 1.5,
            "throughput": {"groups": 10, "rates": [100], "duration": 1.5},
        },
        "consumers": {
            "backlog": 2000,
            "workers": [1, 2],
            "batch": 200,
            "jobs": 8,
            "interval": 0.2,
        },
        "live": {
            "clients": [1, 10],
            "queries": [1, 3],
            "refetch": [1, 3],
            "rate": 20.0,
            "duration": 1.0,
        },
        "broker": {
            "setups": ["direct", "broker-1", "broker-2"],
            "clients": 20,
            "rates": [100],
            "duration": 1.5,
            "reconnect": {"clients": 20, "missed": 50},
        },
    },
}

RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "floor": run_floor,
    "latency": run_latency,
    "routing": run_routing,
    "idle": run_idle,
    "fanout": run_fanout,
    "dbcost": run_dbcost,
    "instructions": run_instructions,
    "parts": run_capture_parts,
    "builds": run_builds,
    "auth": run_auth_groups,
    "consumers": run_consumers,
    "live": run_live,
    "broker": run_broker,
}

#: Order of ``all``.
SCENARIOS = tuple(RUNNERS)


def prepare(systems: set[str]) -> dict[str, str]:
    """Install what the peers need; returns system -> why it is unavailable."""
    unavailable: dict[str, str] = {}
    if systems & {"tutorial", "broadcaster"}:
        why = ensure_python_peers()
        if why:
            unavailable["tutorial"] = unavailable["broadcaster"] = why
    if "node" in systems:
        why = ensure_node_bridge()
        if why:
            unavailable["node"] = why
    return unavailable


def run(
    names: list[str],
    *,
    quick: bool = False,
    loadgen_processes: int = 2,
    plan: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    cluster: EmbeddedCluster | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the scenarios *names*; returns (results by scenario, meta).

    *plan* overrides the built-in plans; *cluster* is a running PostgreSQL to
    use instead of starting one (the test suite's).
    """
    plan = plan or PLANS["quick" if quick else "full"]
    say = log or (lambda s: print(s, flush=True))
    nofile = raise_nofile()
    systems = {s for n in names for s in plan[n].get("systems", [])}
    unavailable = prepare(systems)
    results: dict[str, Any] = {}
    with BenchCluster(cluster) as bench_db, LoadGen(loadgen_processes) as loadgen:
        ctx = Ctx(bench_db, loadgen, quick=quick, log=say, unavailable=unavailable)
        meta: dict[str, Any] = {
            "machine": machine_info(bench_db.version),
            "pg_settings": bench_db.settings,
            "quick": quick,
            "nofile": nofile,
            "loadgen_processes": loadgen_processes,
            "plan": {n: plan[n] for n in names},
            "unavailable": unavailable,
            "timings_s": {},
        }
        for name in names:
            say(f"==> {name}")
            started = time.monotonic()
            results[name] = RUNNERS[name](ctx, **plan[name])
            meta["timings_s"][name] = round(time.monotonic() - started, 1)
    return results, meta
