"""Test helpers: a real gateway process and a minimal SSE client.

Why a subprocess: the tests must exercise what users run (`pgpulse serve`), over
real HTTP, including being killed and restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from pgpulse.embedded import free_port


@dataclass
class GatewayProcess:
    dsn: str
    port: int = 0
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        if not self.port:
            self.port = free_port()
        self.log_path = f"/tmp/pgpulse-gw-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DATABASE_URL", None)
        with open(self.log_path, "ab") as log:
            self.proc = self._spawn(log, env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become healthy:\n{self.log()}")

    def _spawn(self, log: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgpulse",
                "serve",
                "--database-url",
                self.dsn,
                "--port",
                str(self.port),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


@dataclass
class Event:
    event: str
    data: Any
    id: str | None


class SSEStream:
    """Reads one SSE response; ``await next_event()`` with a deadline."""

    def __init__(
        self,
        url: str,
        subs: list[str],
        last_event_id: str | None = None,
        header: bool = True,
    ) -> None:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("sub", s) for s in subs
        ]
        headers = {}
        if last_event_id is not None:
            if header:
                headers["last-event-id"] = last_event_id
            else:
                params.append(("last_event_id", last_event_id))
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
        self._request = self._client.build_request(
            "GET", url + "/v1/events", params=params, headers=headers
        )
        self.response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self.last_id: str | None = last_event_id
        self.comments = 0

    async def __aenter__(self) -> SSEStream:
        self.response = await self._client.send(self._request, stream=True)
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.response is not None:
            await self.response.aclose()
        await self._client.aclose()

    async def next_event(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            return await self._next()

    async def _next(self) -> Event:
        assert self._lines is not None
        event, eid = "message", None
        data: list[str] = []
        async for line in self._lines:
            if line == "":
                if data:
                    if eid is not None:
                        self.last_id = eid
                    return Event(event, orjson.loads("\n".join(data)), eid)
                if eid is not None:
                    self.last_id = eid
                event, eid = "message", None
                data = []
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                eid = value
        raise EOFError("stream closed")

    async def changes(self, count: int, timeout: float = 30.0) -> list[Event]:
        out: list[Event] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                ev = await self._next()
                if ev.event == "change":
                    out.append(ev)
        return out

    async def expect_nothing(self, wait: float = 0.5) -> None:
        try:
            ev = await self.next_event(timeout=wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {ev}")
