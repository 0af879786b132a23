"""A private NATS server with JetStream, started by the tests that need one.

In a temporary directory, on a free port, from the distribution's
``nats-server``; it can be stopped and started again on the same store (the
stream survives), as a restart in production would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgpulse.embedded import free_port

__all__ = ["NatsServer"]


@dataclass
class NatsServer:
    port: int = 0
    store: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nats-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> NatsServer:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not self.port:
            self.port = free_port()
        with open(self.store / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                 "-sd", str(self.store / "js")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.store / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)
