"""A private NATS server with JetStream, started by the tests that need one.

In a temporary directory, on a free port, from the distribution's
``nats-server``; it can be stopped and started again on the same store (the
stream survives), as a restart in production would.  :class:`NatsCluster`
starts three of them as one JetStream cluster (streams with 3 replicas).
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

__all__ = ["NatsCluster", "NatsServer"]


@dataclass
class NatsServer:
    port: int = 0
    store: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nats-")))
    proc: subprocess.Popen[bytes] | None = None
    name: str = ""
    cluster_port: int = 0
    """With routes: this node's port for the other nodes of its cluster."""
    routes: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> NatsServer:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not self.port:
            self.port = free_port()
        args = [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", str(self.store / "js")]  # fmt: skip
        if self.cluster_port:
            routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            args += ["-n", self.name, "--cluster_name", "pgpulse",
                     "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "--routes", routes]  # fmt: skip
        with open(self.store / "server.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
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


class NatsCluster:
    """Three NATS servers routed into one JetStream cluster."""

    def __init__(self, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                name=f"n{i}",
                cluster_port=port,
                routes=[p for p in cluster_ports if p != port],
            )
            for i, port in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_for_leader(timeout)
        return self

    def wait_for_leader(self, timeout: float = 60.0) -> None:
        """Until JetStream has a meta leader (streams can be created)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                log = node.store / "server.log"
                if log.exists() and "new metadata leader" in log.read_text(
                    errors="replace"
                ):
                    return
            time.sleep(0.2)
        raise RuntimeError(
            "the NATS cluster elected no leader:\n" + self.nodes[0].log()
        )

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()
