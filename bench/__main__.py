"""``python -m bench SCENARIO [--quick]``: all, one scenario (floor, latency,
fanout, idle, dbcost, routing, instructions, parts, builds, auth,
consumers, live, broker), or report.

Starts its own PostgreSQL, runs the scenarios against pgpulse and the peers,
writes raw JSON to ``bench/results/`` and the tables to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench import run

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="pgpulse benchmarks, side by side with peers.",
    )
    parser.add_argument("scenario", choices=["all", "report", *run.SCENARIOS])
    parser.add_argument(
        "--quick", action="store_true", help="Scaled-down run (minutes -> seconds)."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown report (default docs/benchmarks.md; with --quick "
        "bench/results/benchmarks-quick.md).",
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--loadgen-processes",
        type=int,
        default=2,
        help="Load generator worker processes (default 2).",
    )
    args = parser.parse_args(argv)
    out = args.out or (
        ROOT / "bench" / "results" / "benchmarks-quick.md"
        if args.quick
        else ROOT / "docs" / "benchmarks.md"
    )
    if args.scenario == "report":
        # Re-render the page from the last results, without running anything.
        from bench.report import render

        kind = "quick" if args.quick else "full"
        merged = json.loads((args.results_dir / f"latest-{kind}.json").read_text())
        out.write_text(render(merged["results"], merged["meta"]))
        print(f"==> {out}")
        return 0
    names = list(run.SCENARIOS) if args.scenario == "all" else [args.scenario]
    started = time.monotonic()
    command = "./run bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    results, meta = run.run(
        names,
        quick=args.quick,
        loadgen_processes=args.loadgen_processes,
    )
    meta["command"] = command
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    merged = _save(args.results_dir, results, meta, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    from bench.report import render

    out.write_text(render(merged["results"], merged["meta"]))
    print(f"==> {out} ({meta['elapsed_s']} s)")
    return 0


def _save(
    directory: Path, results: dict[str, Any], meta: dict[str, Any], quick: bool
) -> dict[str, Any]:
    """Write this run's JSON and merge it into ``latest[-quick].json``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "quick" if quick else "full"
    (directory / f"{stamp}-{kind}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )
    latest = directory / f"latest-{kind}.json"
    merged: dict[str, Any] = {"meta": meta, "results": {}}
    if latest.exists():
        try:
            merged = json.loads(latest.read_text())
        except ValueError:
            pass
    # A scenario this machine cannot measure (no perf, no valgrind) keeps the
    # numbers an earlier run measured, with that run's origin.
    kept = [
        name
        for name, result in results.items()
        if result.get("status") == "cannot"
        and merged["results"].get(name, {}).get("status") == "ok"
    ]
    for name in kept:
        print(f"==> {name}: {results[name]['reason']}; keeping the earlier results")
    merged["results"].update({k: v for k, v in results.items() if k not in kept})
    # Which commit, date and machine each scenario's numbers come from.
    origin = {
        "revision": meta["machine"].get("revision"),
        "date": meta["machine"].get("date"),
        "cpu": meta["machine"].get("cpu"),
    }
    sources = dict(merged.get("meta", {}).get("sources", {}))
    sources.update({name: origin for name in results if name not in kept})
    meta = {**meta, "sources": sources}
    if len(results) < len(run.SCENARIOS) and merged.get("meta"):
        # A partial rerun: keep the machine line, note the command of each part.
        meta = {**meta, "command": _commands(merged["meta"], meta)}
    merged["meta"] = meta
    latest.write_text(json.dumps(merged, indent=1))
    return merged


def _commands(old: dict[str, Any], new: dict[str, Any]) -> str:
    previous = old.get("command", "")
    parts = [p for p in previous.split("\n") if p and p != new["command"]]
    return "\n".join([*parts, new["command"]])


if __name__ == "__main__":
    sys.exit(main())
