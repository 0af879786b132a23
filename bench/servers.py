"""The systems under test, each started as its own process (tree).

* ``pgpulse``: ``python -m pgpulse serve`` (what users run), 1 or N workers;
* ``tutorial``: peer (a), FastAPI + asyncpg, a LISTEN connection per client;
* ``node``: peer (b), Node.js ``pg`` + ``ws``, one LISTEN broadcast to all;
* ``broadcaster``: peer (c), ``broadcaster`` (postgres backend) + sse-starlette;
* ``raw``: not a peer but a floor, the cheapest one-process broadcast (one
  LISTEN, one SSE frame per change written to every transport; uvloop, no
  framework), so pgpulse's fan-out latency can be read against what any
  single Python process pays here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._proc import cpu_seconds, rss_bytes, tree
from bench.env import DB_NOTIFY, DB_PGPULSE, DB_PGPULSE_WAL, NODE_DIR
from bench.loadgen import Target
from pgpulse.embedded import free_port

__all__ = ["LOG_DIR", "SYSTEMS", "Server", "make_server"]

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = Path(os.environ.get("PGPULSE_BENCH_LOGS", "/tmp/pgpulse-bench-logs"))

#: Short names used in results, with what they are.
SYSTEMS = {
    "pgpulse": "pgpulse (1 process)",
    "pgpulse-2w": "pgpulse (--workers 2)",
    "tutorial": "(a) FastAPI + asyncpg, LISTEN per client",
    "node": "(b) Node.js pg + ws bridge",
    "broadcaster": "(c) broadcaster + sse-starlette",
    "raw": "floor: raw uvloop broadcast, no framework",
}


@dataclass
class Server:
    name: str
    cmd: list[str]
    database: str
    target: Target
    cwd: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    settle: float = 0.0
    """Extra seconds to wait after the health check (multi-worker start-up)."""

    def start(self, timeout: float = 60.0) -> Server:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.name}-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DATABASE_URL", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd or ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=1
                ) as resp:
                    if resp.status == 200:
                        time.sleep(self.settle)
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        # Stop it: the caller never got a Server to stop, and an orphan would
        # keep its port and CPU through the rest of the run.
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log()}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/healthz", timeout=5
        ) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        return tree(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            for pid in reversed(self.pids()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_server(
    system: str,
    dsn_of: Any,
    path: str = "",
    extra: list[str] | None = None,
    database: str | None = None,
) -> Server:
    """A server for *system*; ``dsn_of(database)`` gives connection strings."""
    port = free_port()
    py = [sys.executable, "-m"]
    if system in ("pgpulse", "pgpulse-2w", "pgpulse-wal"):
        workers = "2" if system == "pgpulse-2w" else "1"
        if system == "pgpulse-wal":
            database = database or DB_PGPULSE_WAL
        return Server(
            system,
            [
                *py,
                "pgpulse",
                "serve",
                "--database-url",
                dsn_of(database or DB_PGPULSE),
                "--port",
                str(port),
                "--workers",
                workers,
                *(extra or []),
            ],
            database or DB_PGPULSE,
            Target(port, path or "/v1/events?sub=docs", "sse"),
            port=port,
            settle=1.5 if workers != "1" else 0.0,
        )
    if system == "tutorial":
        module = "bench.peers.tutorial_fastapi"
    elif system == "broadcaster":
        module = "bench.peers.broadcaster_sse"
    elif system == "raw":
        module = "bench.peers.raw_broadcast"
    elif system == "node":
        return Server(
            system,
            [
                "node",
                "server.js",
                "--database-url",
                dsn_of(DB_NOTIFY),
                "--port",
                str(port),
                "--channel",
                "docs",
            ],
            DB_NOTIFY,
            Target(port, "/", "ws"),
            cwd=str(NODE_DIR),
            port=port,
        )
    else:
        raise ValueError(f"unknown system {system!r}; expected one of {list(SYSTEMS)}")
    return Server(
        system,
        [*py, module, "--database-url", dsn_of(DB_NOTIFY), "--port", str(port)],
        DB_NOTIFY,
        Target(port, "/events", "sse"),
        port=port,
    )
