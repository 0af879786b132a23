"""The test suite's own PostgreSQL: one cluster per session, a database per test.

Why: tests must run the same on CI and on a newcomer's machine, against a real
server they can also stop and restart (fault tests).  Each test gets a fresh
database cloned from a template that already has the capture schema, so tests
are isolated and cheap.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgpulse.embedded import EmbeddedCluster, distribution_bin_dir

TEST_SETTINGS = {
    "wal_level": "logical",
    "max_connections": "400",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}

TEMPLATE = "pgpulse_template"
_counter = itertools.count()


#: The two builds the suite runs on: the embedded PostgreSQL 18 (no JIT, C
#: collation, UTC) and the distribution's (JIT on, an ICU default collation and
#: a time zone that is not UTC: what most users run).
BUILDS = ("embedded", "system")


@dataclass
class TestServer:
    cluster: EmbeddedCluster
    build: str = "embedded"

    def dsn(self, database: str = "postgres") -> str:
        return self.cluster.dsn(database)

    def new_database_name(self) -> str:
        return f"t{os.getpid()}_{next(_counter)}"


@contextmanager
def running_server(build: str = "embedded") -> Iterator[TestServer]:
    base = Path(tempfile.mkdtemp(prefix="pgpulse-test-"))
    settings = dict(TEST_SETTINGS)
    if build == "system":
        settings.update({"jit": "on", "timezone": "America/New_York"})
        cluster = EmbeddedCluster(
            base / "data",
            settings=settings,
            bin_dir=distribution_bin_dir(),
            initdb_options=[
                "--locale-provider=icu",
                "--icu-locale=en-US",
                "--locale=C.UTF-8",
            ],
        )
    else:
        cluster = EmbeddedCluster(base / "data", settings=settings)
    cluster.start()
    try:
        yield TestServer(cluster, build)
    finally:
        cluster.destroy()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
