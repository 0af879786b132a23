"""``pgpulse consume`` into a command and into a webhook, as users run it (the
real CLI in its own process), with the sink failing and down."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn

from pgpulse import capture
from pgpulse.consumers.sinks import verify
from pgpulse.embedded import free_port

SECRET = "webhook-test-secret"


async def _orders(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "create table orders (id int primary key, status text, amount numeric)"
    )
    await capture.watch(conn, "orders")


def _cli(*args: str, dsn: str) -> list[str]:
    return [sys.executable, "-m", "pgpulse", *args, "--database-url", dsn]


@asynccontextmanager
async def _consume(
    *args: str, dsn: str, env: dict[str, str] | None = None
) -> AsyncIterator[Any]:
    proc = await asyncio.create_subprocess_exec(
        *_cli("consume", *args, dsn=dsn),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "pgpulse consume exited before it started"
                if b"consuming" in line:
                    break
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                raise AssertionError("pgpulse consume did not stop on SIGINT") from None


async def _run(*args: str, dsn: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *_cli(*args, dsn=dsn),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def _until(check: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


async def test_exec_sink_gets_exact_json_and_dead_letters_are_retried(
    conn, database, tmp_path: Path
):
    await _orders(conn)
    received = tmp_path / "received.jsonl"
    fail = tmp_path / "fail"
    script = tmp_path / "handler.py"
    script.write_text(
        "import sys, pathlib\n"
        f"if pathlib.Path({str(fail)!r}).exists():\n"
        "    sys.stderr.write('refusing: the mail server is down')\n"
        "    sys.exit(3)\n"
        f"with open({str(received)!r}, 'a') as f:\n"
        "    f.write(sys.stdin.read())\n"
    )
    command = f"{sys.executable} {script}"
    async with _consume(
        "mailer",
        "--table",
        "orders",
        "--filter",
        "status=eq.paid",
        "--exec",
        command,
        "--max-attempts",
        "2",
        dsn=database,
    ):
        await conn.execute(
            "insert into orders values (1, 'paid', 12345678901234567890.123456789), "
            "(2, 'new', 1)"
        )

        async def got(n: int) -> Any:
            async def check() -> bool:
                return received.exists() and len(received.read_text().splitlines()) >= n

            return check

        await _until(await got(1))
        (line,) = received.read_text().splitlines()
        change = json.loads(line, parse_float=str)
        assert change["table"] == "orders" and change["op"] == "INSERT"
        assert change["row"]["amount"] == "12345678901234567890.123456789"
        assert isinstance(change["id"], int) and change["cursor"]
        # The command fails: after two attempts the change is a dead letter.
        fail.touch()
        await conn.execute("insert into orders values (3, 'paid', 3)")

        async def dead_lettered() -> bool:
            return bool(
                await conn.fetchval("select count(*) from pgpulse.dead_letters")
            )

        await _until(dead_lettered)
        status, out, _ = await _run("consumers", "dead", "mailer", dsn=database)
        assert status == 0 and "mail server is down" in out and "2 attempts" in out
        status, out, _ = await _run("consumers", dsn=database)
        assert "mailer" in out and "status=eq.paid" in out
        # Fixed, and retried: delivered, and no longer a dead letter.
        fail.unlink()
        status, _, err = await _run("consumers", "retry", "mailer", dsn=database)
        assert status == 0 and "1 dead letters" in err

        async def retried() -> bool:
            return (
                len(received.read_text().splitlines()) == 2
                and not await dead_lettered()
            )

        await _until(retried)
        ids = [json.loads(x)["row"]["id"] for x in received.read_text().splitlines()]
        assert ids == [1, 3]


class Receiver:
    """A webhook endpoint that fails some requests and can go down."""

    def __init__(self, failure_rate: float, seed: int = 5) -> None:
        self.port = free_port()
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.ids: list[int] = []
        self.bad_signatures = 0
        self.requests = 0
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        headers = dict(scope["headers"])
        signature = headers.get(b"pgpulse-signature", b"").decode()
        if not verify(SECRET, body, signature):
            self.bad_signatures += 1
            status = 401
        elif self.rng.random() < self.failure_rate:
            status = 503
        else:
            payload = json.loads(body)
            self.ids += [c["id"] for c in payload.get("changes", [])]
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            interface="asgi3",
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = None


async def test_webhook_delivers_everything_through_failures_and_downtime(
    conn, database
):
    await _orders(conn)
    receiver = Receiver(failure_rate=0.3)
    await receiver.start()
    try:
        async with _consume(
            "hooks",
            "--table",
            "orders",
            "--webhook",
            f"http://127.0.0.1:{receiver.port}/hook",
            "--batch-size",
            "10",
            "--timeout",
            "2s",
            dsn=database,
            env={"PGPULSE_WEBHOOK_SECRET": SECRET},
        ):
            for i in range(1, 101):
                await conn.execute(
                    "insert into orders values ($1::int, 'new', $1::int)", i
                )
                if i == 40:
                    await receiver.stop()  # down for 10 s while writes go on
                    down = asyncio.get_running_loop().time()
                if i == 70:
                    await asyncio.sleep(
                        max(0.0, 10 - (asyncio.get_running_loop().time() - down))
                    )
                    await receiver.start()
                await asyncio.sleep(0.05)

            async def complete() -> bool:
                return len(set(receiver.ids)) >= 100

            await _until(complete, timeout=120)
    finally:
        await receiver.stop()
    logged = [
        r["id"]
        for r in await conn.fetch(
            "select id from pgpulse.changes where tbl = 'public.orders' order by id"
        )
    ]
    assert sorted(set(receiver.ids)) == logged  # every change, deduplicated by id
    assert receiver.bad_signatures == 0
    assert receiver.requests > len(set(receiver.ids)) / 10  # failures were retried
    assert await conn.fetchval("select count(*) from pgpulse.dead_letters") == 0


async def test_consume_refuses_bad_input_with_the_reason(conn, database):
    await _orders(conn)
    cases = [
        (["consume", "g", "--table", "orders"], "exactly one of --exec"),
        (["consume", "g", "--table", "orders", "--webhook", "ftp://x"], "http(s)"),
        (
            ["consume", "g", "--table", "orders", "--webhook", "http://x"],
            "PGPULSE_WEBHOOK_SECRET",
        ),
        (["consume", "g", "--table", "nope", "--exec", "true"], "nope"),
        (
            [
                "consume",
                "g",
                "--table",
                "orders",
                "--filter",
                "x=eq.1",
                "--exec",
                "true",
            ],
            "x",
        ),
        (
            [
                "consume",
                "g",
                "--table",
                "orders",
                "--exec",
                "true",
                "--timeout",
                "soon",
            ],
            "duration",
        ),
        (["consumers", "retry", "ghost"], "no consumer group"),
        (["consumers", "drop", "ghost"], "--yes"),
    ]
    env = dict(os.environ)
    env.pop("PGPULSE_WEBHOOK_SECRET", None)
    for args, needle in cases:
        proc = await asyncio.create_subprocess_exec(
            *_cli(*args, dsn=database),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        _, err = await proc.communicate()
        assert proc.returncode != 0, args
        assert needle in err.decode(), (args, err.decode())
        assert "Traceback" not in err.decode(), (args, err.decode())
