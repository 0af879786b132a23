"""Test helpers: a real gateway process and a minimal SSE client.

Why a subprocess: the tests must exercise what users run (`pgpulse serve`), over
real HTTP, including being killed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from pgpulse.embedded import free_port
from pgpulse.routing.values import loads_exact


@dataclass
class GatewayProcess:
    dsn: str
    port: int = 0
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the process (e.g. PGPULSE_JWT_SECRET)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        if not self.port:
            self.port = free_port()
        self.log_path = f"/tmp/pgpulse-gw-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
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
    """Reads one SSE response in a background task; ``await next_event()``.

    The reader runs on its own so a timed-out wait never cancels the HTTP
    stream half-way through a line.
    """

    def __init__(
        self,
        url: str,
        subs: list[str],
        last_event_id: str | None = None,
        header: bool = True,
        token: str | None = None,
    ) -> None:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("sub", s) for s in subs
        ]
        if token is not None:
            params.append(("access_token", token))
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
        self.last_id: str | None = last_event_id
        self.comments = 0
        self.reading = asyncio.Event()
        """Clear it to stop reading the response (the server's writes back up)."""
        self.reading.set()
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SSEStream:
        self.response = await self._client.send(self._request, stream=True)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.response is not None:
            await self.response.aclose()
        await self._client.aclose()

    async def _read(self) -> None:
        assert self.response is not None
        event, eid = "message", None
        data: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                await self.reading.wait()
                if line == "":
                    if eid is not None:
                        self.last_id = eid
                    if data:
                        self._queue.put_nowait(
                            Event(event, loads_exact("\n".join(data)), eid)
                        )
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
            self._queue.put_nowait(EOFError("stream closed"))
        except Exception as exc:
            self._queue.put_nowait(exc)

    async def next_event(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            item = await self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)
            raise item
        return item

    async def changes(self, count: int, timeout: float = 30.0) -> list[Event]:
        out: list[Event] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                ev = await self.next_event(timeout=timeout)
                if ev.event == "change":
                    out.append(ev)
        return out

    async def expect_nothing(self, wait: float = 0.5) -> None:
        try:
            ev = await self.next_event(timeout=wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {ev}")
