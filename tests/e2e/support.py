"""Helpers for the browser end-to-end tests: the demo gateway process, deadlines.

Why a real subprocess: these tests exercise what a user runs (`pgpulse demo`),
over real HTTP, including the gateway being SIGKILLed and started again on the
same port while a browser page stays open.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import pytest

from pgpulse.embedded import free_port

__all__ = [
    "CHROMIUM_ARGS",
    "DemoGateway",
    "chromium_executable",
    "deadline",
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

P = ParamSpec("P")
T = TypeVar("T")


def chromium_executable() -> str:
    """The distribution's Chromium; the tests never download a browser."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Chromium is not installed; the browser tests need Debian's package: "
            "apt-get install -y chromium (./run test installs it)."
        )
    return path


def deadline(seconds: float) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Any]]:
    """Fail an async test that runs longer than *seconds* (a hung browser or server
    must not hang the suite)."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Any]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                async with asyncio.timeout(seconds):
                    return await fn(*args, **kwargs)
            except TimeoutError:
                pytest.fail(f"{fn.__name__} did not finish within {seconds} s")

        return run

    return wrap


@dataclass
class DemoGateway:
    """``python -m pgpulse demo`` on a fixed port, with the demo writer disabled.

    With ``serve=True`` it is ``pgpulse serve`` instead: no demo tables, no
    auth, for tests of client.js on tables of their own.
    """

    dsn: str
    serve: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(
        default_factory=lambda: Path(
            tempfile.mkstemp(prefix="pgpulse-demo-", suffix=".log")[1]
        )
    )
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        if self.serve:
            return [
                sys.executable,
                "-m",
                "pgpulse",
                "serve",
                "--database-url",
                self.dsn,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        return [
            sys.executable,
            "-m",
            "pgpulse",
            "demo",
            "--database-url",
            self.dsn,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-browser",
            "--writer-interval",
            "0",
        ]

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until ``GET /healthz`` answers 200."""
        if self.running:
            raise RuntimeError(f"the gateway on port {self.port} is already running")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DATABASE_URL", None)
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1}: {self.command()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.starts += 1
        stop_at = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < stop_at:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pgpulse demo exited early:\n{self.log()}")
                try:
                    response = await client.get(self.url + "/healthz")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        self.kill()
        raise RuntimeError(f"pgpulse demo did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.kill()
        self.log_path.unlink(missing_ok=True)
