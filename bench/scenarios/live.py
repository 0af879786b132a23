"""Scenario 11: live queries, against refetch-on-notify.

The query: the ten newest rows (``/v1/live?table=docs&select=id,seq&
order=id.desc&limit=10``); every insert enters its window, so every change is
one ``insert`` patch per client (carrying the row's ``seq``, which the load
generator times against the commit).

* Fan-out: 1, 100 and 1,000 clients on that one query: commit -> patch
  latency, and the gateway's CPU per change (it reads the query once per
  batch however many clients share it).
* Distinct queries: 1, 10 and 100 queries (``limit=1..Q``), one client each:
  the cost of a change grows with the queries it touches (one read each).
* Refetch-on-notify, the common React pattern the mission replaces: each
  client follows the change stream and runs the same query over REST on
  every event; commit -> refetched rows latency and the database reads per
  change (one per client).  Its clients are httpx clients in one Python
  process on the same machine (at its rate, 100 of them already saturate
  that process), so it runs at a lower rate, stated in the report.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.request
from typing import Any

import httpx
import orjson

from bench.scenarios import Ctx, connect, measure, start_server
from bench.servers import Server
from bench.stats import latencies_ms, summary
from bench.writer import WriteJob, Writer

__all__ = ["run_live"]

QUERY = "select=id,seq&order=id.desc&limit=10"
SCRAPE = "bench-scrape"


def _metric(server: Server, name: str) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"authorization": f"Bearer {SCRAPE}"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def _window(
    ctx: Ctx, server: Server, clients: int, rate: float, duration: float
) -> dict[str, Any]:
    before = _metric(server, "pgpulse_live_refreshes_total")
    row = measure(ctx, server, clients, rate, duration, server.database)
    reads = _metric(server, "pgpulse_live_refreshes_total") - before
    row["reads"] = reads
    row["reads_per_change"] = (
        round(reads / row["written"], 3) if row["written"] else None
    )
    return row


def run_live(
    ctx: Ctx,
    clients: list[int],
    queries: list[int],
    refetch: list[int],
    rate: float,
    duration: float,
    refetch_rate: float | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rate": rate,
        "refetch_rate": refetch_rate or rate,
        "duration_s": duration,
        "query": QUERY,
        "fanout": [],
        "distinct": [],
        "refetch": [],
    }
    saved = os.environ.get("PGPULSE_METRICS_TOKEN")
    os.environ["PGPULSE_METRICS_TOKEN"] = SCRAPE
    try:
        server = start_server(ctx, "pgpulse", extra=["--rest", "--heartbeat", "600"])
    finally:
        if saved is None:
            os.environ.pop("PGPULSE_METRICS_TOKEN", None)
        else:
            os.environ["PGPULSE_METRICS_TOKEN"] = saved
    try:
        target = server.target
        target.ready = b"snapshot"
        for n in clients:
            ctx.log(f"  live: {n} clients on one query")
            target.paths = [f"/v1/live?table=docs&{QUERY}"]
            got = connect(ctx, target, n, samples=min(n, 200), timeout=120)
            if got["ok"] < n:
                out["fanout"].append({"clients": n, "status": "cannot"})
            else:
                row = _window(ctx, server, n, rate, duration)
                row["status"] = "ok"
                out["fanout"].append(row)
                ctx.log(
                    f"    p50 {row['latency_ms']['p50']} ms, "
                    f"{row['server_cpu_ms_per_change']} ms CPU/change, "
                    f"{row['reads_per_change']} reads/change"
                )
            ctx.loadgen.close()
        for q in queries:
            ctx.log(f"  live: {q} distinct queries, one client each")
            target.paths = [
                f"/v1/live?table=docs&select=id,seq&order=id.desc&limit={k + 1}"
                for k in range(q)
            ]
            got = connect(ctx, target, q, samples=min(q, 200), timeout=120)
            if got["ok"] < q:
                out["distinct"].append({"queries": q, "status": "cannot"})
            else:
                row = _window(ctx, server, q, rate, duration)
                row["queries"] = q
                row["status"] = "ok"
                out["distinct"].append(row)
                ctx.log(
                    f"    {row['server_cpu_ms_per_change']} ms CPU/change, "
                    f"{row['reads_per_change']} reads/change"
                )
            ctx.loadgen.close()
        for n in refetch:
            ctx.log(f"  refetch-on-notify: {n} clients")
            out["refetch"].append(
                _refetch(ctx, server, n, refetch_rate or rate, duration)
            )
    finally:
        ctx.loadgen.close()
        server.stop()
    return out


def _refetch(
    ctx: Ctx, server: Server, clients: int, rate: float, duration: float
) -> dict[str, Any]:
    """Clients that refetch the query over REST on every change event."""
    base = f"http://127.0.0.1:{server.port}"
    received: list[tuple[int, int]] = []  # (seq, monotonic_ns) per client read
    fetches = 0
    errors: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    async def one(http: httpx.AsyncClient, started: list[int]) -> None:
        nonlocal fetches
        seen: set[int] = set()

        async def fetch() -> None:
            nonlocal fetches
            try:
                response = await http.get(f"{base}/v1/rest/docs?{QUERY}")
                response.raise_for_status()
            except Exception as exc:
                errors.append(repr(exc))
                return
            fetches += 1
            now = time.monotonic_ns()
            for row in orjson.loads(response.content):
                if row["seq"] not in seen:
                    seen.add(row["seq"])
                    received.append((row["seq"], now))

        async with http.stream(
            "GET", f"{base}/v1/events", params={"sub": "docs"}
        ) as stream:
            pending: set[asyncio.Task[None]] = set()
            async for line in stream.aiter_lines():
                if line.startswith("event: ready"):
                    started.append(1)
                    await fetch()  # the rows before the first change
                elif line.startswith("event: change"):
                    task = asyncio.create_task(fetch())
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if stop.is_set():
                    break

    def run() -> None:
        async def main() -> None:
            limits = httpx.Limits(max_connections=clients * 2 + 10)
            timeout = httpx.Timeout(30, read=None)
            async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
                started: list[int] = []
                tasks = [
                    asyncio.create_task(one(http, started)) for _ in range(clients)
                ]
                while len(started) < clients:
                    await asyncio.sleep(0.05)
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(120):
        stop.set()
        return {"clients": clients, "status": "cannot"}
    time.sleep(0.5)
    received.clear()
    fetches = 0
    job = WriteJob(ctx.cluster.dsn(server.database), rate, duration, ctx.next_seq())
    cpu0 = server.cpu()
    writer = Writer(job)
    writer.start()
    result = writer.wait()
    cpu1 = server.cpu()
    time.sleep(1.0)
    stop.set()
    thread.join(10)
    commits = result.commit_map()
    mine = [(s, t) for s, t in received if s in commits]
    lat = latencies_ms([s for s, _ in mine], [t for _, t in mine], commits)
    written = result.written
    row: dict[str, Any] = {
        "clients": clients,
        "status": "ok",
        "written": written,
        "seconds": round(result.seconds, 3),
        "delivered": len(mine),
        "delivered_ratio": round(len(mine) / (written * clients), 4)
        if written
        else None,
        "latency_ms": summary(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "reads_per_change": round(fetches / written, 3) if written else None,
        "server_cpu_ms_per_change": round(1000 * (cpu1 - cpu0) / written, 4)
        if written
        else None,
    }
    ctx.log(
        f"    p50 {row['latency_ms']['p50']} ms, "
        f"{row['server_cpu_ms_per_change']} ms CPU/change, "
        f"{row['reads_per_change']} reads/change"
    )
    return row
