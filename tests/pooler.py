"""A PgBouncer of the tests' own (Debian's package), in transaction mode.

Why here: users put PgBouncer in front of PostgreSQL; the gateway's pool must
work through it and its listener must refuse it.  Each test that needs one
starts it in a temporary directory on a free port, as the suite starts its own
PostgreSQL; it runs as the suite's unprivileged service user (PgBouncer
refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from pgpulse.embedded import SERVICE_USER, free_port


def _binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    if found is None:
        raise RuntimeError(
            "PgBouncer is not installed; apt-get install -y pgbouncer "
            "(./run test installs it)"
        )
    return found


# Startup parameters PgBouncer should not refuse (asyncpg and pgpulse send
# them; PgBouncer only passes a few on).
_IGNORED = ",".join(
    [
        "extra_float_digits",
        "plan_cache_mode",
        "enable_seqscan",
        "max_parallel_workers_per_gather",
        "jit",
        "statement_timeout",
    ]
)


@contextmanager
def pgbouncer(dsn: str, mode: str = "transaction") -> Iterator[str]:
    """Run PgBouncer in front of the server of *dsn*; yields the DSN through it."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/")
    base = Path(tempfile.mkdtemp(prefix="pgpulse-bouncer-"))
    port = free_port()
    (base / "userlist.txt").write_text(f'"{parts.username}" ""\n')
    (base / "pgbouncer.ini").write_text(
        f"""[databases]
{database} = host={parts.hostname} port={parts.port} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {base}/userlist.txt
pool_mode = {mode}
default_pool_size = 4
max_client_conn = 200
ignore_startup_parameters = {_IGNORED}
logfile = {base}/pgbouncer.log
pidfile = {base}/pgbouncer.pid
"""
    )
    user = pwd.getpwnam(SERVICE_USER) if os.geteuid() == 0 else None
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
        for name in ("userlist.txt", "pgbouncer.ini"):
            os.chown(base / name, user.pw_uid, user.pw_gid)
    proc = subprocess.Popen(
        [_binary(), str(base / "pgbouncer.ini")],
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = base / "pgbouncer.log"
                    text = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"pgbouncer did not start:\n{text}") from None
                time.sleep(0.05)
        yield f"postgresql://{parts.username}@127.0.0.1:{port}/{database}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)
