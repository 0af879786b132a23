"""The benchmark suite in its tiniest configuration, so it cannot rot.

No timing is asserted here (timed results live in docs/benchmarks.md); only
that every scenario runs end to end against real processes and produces
well-formed results and a report.  About two minutes (server and process
start-ups, callgrind), hence ``slow``; it still runs in CI.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from typing import Any

import pytest
from bench import run
from bench.report import render, targets
from bench.scenarios.capture_parts import valgrind_problem
from bench.scenarios.instructions import perf_problem

import tests.pg

TINY: dict[str, dict[str, Any]] = {
    "floor": {"rates": [50], "duration": 0.5},
    "latency": {
        "systems": ["pgpulse", "pgpulse-wal", "raw", "node"],
        "counts": [2],
        "rates": [50],
        "duration": 0.5,
    },
    "routing": {"counts": [3], "rate": 30.0, "duration": 0.5},
    "idle": {"systems": ["pgpulse"], "clients": 5, "settle": 0.2},
    "fanout": {
        "systems": ["pgpulse", "node", "tutorial"],
        "counts": [4],
        "probe": 0.5,
        "hold": 0.5,
        "start_deliveries": 200,
        "max_rate": 100,
    },
    "dbcost": {
        "clients": 4,
        "seconds": 1.0,
        "rounds": 1,
        "bulk_rows": 200,
        "bulk_reps": 1,
    },
    "instructions": {"transactions": 50, "clients": 2, "seconds": 1.0},
    "parts": {"transactions": (5, 25), "rows": (5, 105)},
    "builds": {
        "counts": [1],
        "rate": 20,
        "duration": 0.5,
        "cost": {
            "clients": 2,
            "seconds": 0.5,
            "rounds": 1,
            "bulk_rows": 50,
            "bulk_reps": 1,
        },
        # One more cluster of the distribution's build (the test itself runs
        # on both builds).
        "builds": ("system",),
    },
    "auth": {
        "subscribers": 6,
        "groups": [1, 3],
        "rate": 20.0,
        "duration": 0.5,
        "throughput": {"groups": 3, "rates": [30], "duration": 0.5},
    },
    "consumers": {
        "backlog": 300,
        "workers": [1, 2],
        "batch": 50,
        "jobs": 3,
        "interval": 0.1,
    },
    "live": {
        "clients": [2],
        "queries": [2],
        "refetch": [2],
        "rate": 20.0,
        "duration": 0.5,
    },
    "broker": {
        "setups": ["direct", "broker-1", "broker-2"],
        "clients": 4,
        "rates": [20],
        "duration": 0.5,
        "reconnect": {"clients": 4, "missed": 20},
    },
}


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# Once, on the embedded build: the 'builds' scenario starts the distribution's
# PostgreSQL (JIT on) itself and runs latency and cost there, so a second run
# on the suite's distribution cluster would measure the same thing again.
@pytest.mark.slow
@pytest.mark.parametrize("pg_server", ["embedded"], indirect=True, ids=["bench"])
def test_benchmark_scenarios_produce_well_formed_results(
    pg_server: tests.pg.TestServer, tmp_path
):
    messages: list[str] = []
    results, meta = run.run(
        list(run.SCENARIOS),
        plan=TINY,
        log=messages.append,
        cluster=pg_server.cluster,
    )
    assert set(results) == set(run.SCENARIOS)
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["postgresql"]

    floor = results["floor"]["rows"][0]
    assert floor["written"] > 0 and floor["received"] == floor["written"]
    assert _finite(floor["latency_ms"]["p50"])

    ours = results["latency"]["systems"]["pgpulse"]
    assert [c["status"] for c in ours] == ["ok"]
    assert ours[0]["delivered"] == ours[0]["written"] * 2
    assert ours[0]["latency_ms"]["n"] > 0 and _finite(ours[0]["latency_ms"]["p99"])
    assert ours[0]["server_cpu_s"] >= 0

    wal = results["latency"]["systems"]["pgpulse-wal"]
    assert [c["status"] for c in wal] == ["ok"]
    assert wal[0]["delivered"] == wal[0]["written"] * 2  # decoded, then delivered

    raw = results["latency"]["systems"]["raw"]
    assert [c["status"] for c in raw] == ["ok"]
    assert raw[0]["delivered"] == raw[0]["written"] * 2
    assert raw[0]["latency_ms"]["n"] > 0

    node = results["latency"]["systems"]["node"]
    if shutil.which("node") is None:
        assert node[0]["status"] == "cannot"
    elif node[0]["status"] == "ok":
        assert node[0]["delivered"] == node[0]["written"] * 2

    row = results["routing"]["rows"][0]
    assert row["status"] == "ok" and row["delivered"] == row["written"]

    idle = results["idle"]["systems"]["pgpulse"]
    assert idle["clients"] == 5 and 1 <= idle["db_connections"] <= 3

    fan = results["fanout"]["systems"]
    assert fan["pgpulse"][0]["result"]["deliveries_per_s"] > 0
    assert fan["tutorial"][0]["status"] == "cannot"

    cost = results["dbcost"]
    assert set(cost["tps"]) == {
        "plain",
        "pgpulse",
        "pgpulse_solo",
        "notify",
        "floor_trigger",
        "floor_copy",
        "pgpulse_wal",
        "pgpulse_wal_paused",
    }
    assert all(v > 0 for v in cost["tps"].values())
    assert all(v > 0 for v in cost["bulk_s"].values())
    # The gateways' own CPU: the listener following, the decoder decoding.
    assert set(cost["gateway_cpu_us_per_tx"]) == {"pgpulse", "pgpulse_wal"}
    assert cost["gateway_cpu_us_per_tx"]["pgpulse_wal"] > 0
    # The wal source's bulk rows all reached the log (within the 60 s allowed).
    assert 0 < cost["bulk_logged_s"] < 60

    instr = results["instructions"]
    if perf_problem() is None:
        assert instr["status"] == "ok"
        writer = instr["writer_kinstr_per_tx"]
        assert writer["trigger"] > writer["plain"] > 0  # the trigger's own work
        trigger = instr["following"]["trigger"]["kinstr_per_change"]
        wal = instr["following"]["wal"]["kinstr_per_change"]
        assert trigger["listener"] > 0 and trigger["gateway"] > 0
        assert trigger["walsender"] == 0  # nothing decodes the trigger's database
        assert wal["walsender"] > 0 and wal["decoder_writes"] > 0
    else:
        assert instr["status"] == "cannot" and instr["reason"]

    parts = results["parts"]
    if valgrind_problem() is None:
        assert parts["status"] == "ok"
        one, bulk = parts["single_kinstr_per_tx"], parts["bulk_kinstr_per_row"]
        # Every step of the ladder adds work to a single-row transaction.
        steps = [s["step"] for s in parts["steps"]]
        assert steps[0] == "plain" and steps[-1] == "pgpulse"
        assert all(one[a] < one[b] for a, b in itertools.pairwise(steps))
        assert one["pgpulse"] > one["copy"] > one["plain"] > 10
        assert bulk["json"] > bulk["copy"] > bulk["plain"] > 1
    else:
        assert parts["status"] == "cannot" and "valgrind" in parts["reason"]

    system = results["builds"]["builds"]["system"]
    assert system["status"] == "ok" and system["jit_available"]
    assert system["latency"]["systems"]["pgpulse"][0]["status"] == "ok"
    assert system["dbcost"]["tps"]["pgpulse"] > 0

    auth = {(r["mode"], r["groups"]): r for r in results["auth"]["rows"]}
    assert set(auth) == {(m, g) for m in ("filter", "policy", "rls") for g in (1, 3)}
    for (mode, groups), row in auth.items():
        assert row["status"] == "ok", row
        assert row["delivered"] == row["written"] * 6 // groups, (mode, groups)
        if mode == "rls":  # counted: one check per batch per group at most
            assert 0 < row["filter_statements"] <= row["written"] * groups
        else:  # the stream decides these in Python
            assert row["filter_statements"] == 0
    (step,) = results["auth"]["throughput"]["rows"]
    assert step["deliveries_per_s"] > 0 and step["filter_statements"] > 0

    consumers = results["consumers"]
    assert [r["workers"] for r in consumers["throughput"]] == [1, 2]
    assert all(r["changes_per_s"] > 0 for r in consumers["throughput"])
    wake = {r["design"]: r for r in consumers["latency"]}
    assert set(wake) == {"pgpulse", "poll", "listen"}
    for design, row in wake.items():
        assert row["handled"] == row["jobs"] == 3, design

    live = results["live"]
    for r in [*live["fanout"], *live["distinct"], *live["refetch"]]:
        assert r["status"] == "ok", r
        assert r["written"] > 0 and r["latency_ms"]["n"] > 0, r
    # Counted, not timed: clients of one query share its reads; refetching
    # clients read once per change each.
    assert live["fanout"][0]["reads_per_change"] <= 1.5
    assert live["refetch"][0]["reads_per_change"] >= 1.5

    broker = results["broker"]["setups"]
    for setup, (row,) in broker.items():
        assert row["status"] == "ok" and row["delivered"] == row["written"] * 4, setup
    # Counted: behind the broker the gateways hold no listener connections.
    assert broker["broker-2"][0]["gateways"] == 2
    assert broker["broker-2"][0]["log_reads_per_s"] > 0
    # Counted: a mass reconnect behind the broker is read from the stream,
    # on the database from the log; every client gets every missed change.
    reconnect = results["broker"]["reconnect"]
    assert set(reconnect) == {"direct", "broker-1"}
    for setup, row in reconnect.items():
        assert row["clients"] == 4 and row["delivered_ratio"] == 1.0, (setup, row)
    assert (reconnect["direct"]["from_log"], reconnect["direct"]["from_stream"]) == (
        4,
        0,
    )
    assert (
        reconnect["broker-1"]["from_stream"],
        reconnect["broker-1"]["from_log"],
    ) == (4, 0)

    json.dumps(results)  # the raw results are JSON-serialisable
    verdicts = {t["verdict"] for t in targets(results)}
    assert verdicts <= {"met", "NOT met", "not measured"}
    page = render(results, {**meta, "command": "pytest"})
    assert "| raw | 2 | 50 |" in page
    assert "floor: every row written again, verbatim, no index" in page
    assert "| pgpulse-wal | 2 | 50 |" in page
    if parts["status"] == "ok":
        assert "## 7. What trigger capture costs the writer" in page
        assert "| pgpulse | pgpulse's capture function" in page
    assert "(wal source)" in page
    for heading in (
        "## Targets",
        "## 1. Latency",
        "## 2. Fan-out",
        "## 3. Idle",
        "## 4. Cost",
        "## 5. Filtered routing",
        "## 6. Where the work goes",
        "## 8. On the PostgreSQL users run",
        "## 9. Delivery under auth",
        "## 10. Consumer groups",
        "## 11. Live queries",
    ):
        assert heading in page
    (tmp_path / "benchmarks.md").write_text(page)
