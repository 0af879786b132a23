"""A redis-server of the tests' own (Debian's package), on a free port.

Why not the machine's: a developer's Redis on 6379 holds their data, and a
test that stops and restarts Redis (an outage) must own the process.  Data
persists in an append-only file in the temporary directory, so a restart
keeps the keys, as a production Redis with persistence does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from pgpulse.embedded import free_port


class RedisServer:
    """``redis-server`` in a temporary directory; ``stop()``/``start()`` keep
    the port and the data."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; apt-get install -y redis-server "
                "(./run test installs it)"
            )
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgpulse-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = self._spawn(log)
        self._wait(timeout)

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _wait(self, timeout: float) -> None:
        assert self.proc is not None
        stop_at = time.monotonic() + timeout
        while time.monotonic() < stop_at:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer:\n{self.log()}")

    def stop(self) -> None:
        """SIGKILL (an outage; the append-only file keeps what was written)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
