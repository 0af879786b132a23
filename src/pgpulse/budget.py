"""Connection budgeting: every service's share of ``max_connections``, checked.

Why: PostgreSQL refuses new connections once ``max_connections`` is reached, and
the service that hits the wall is rarely the one that over-allocated.  Declaring
each service's maximum in ``pgpulse.toml`` (or ``[tool.pgpulse.budget]`` in
``pyproject.toml``) lets CI prove the sum fits, lets ``pgpulse serve`` size its
pool to its declared share, and shows who really holds connections now::

    [budget]
    headroom = 5            # kept free for psql, cron jobs, emergencies
    [budget.services]
    api = 20
    worker = 10
    pgpulse = 3             # the gateway
    migrations = 1          # `pgpulse migrate`

A connection belongs to a service when its ``application_name`` equals the
service name or starts with the name followed by ``-`` or ``:`` (``pgpulse``
covers ``pgpulse-listener``); the longest matching name wins.  Connections
matching no service are reported as ``other``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from pgpulse.exceptions import ConfigurationError

__all__ = [
    "OTHER",
    "Budget",
    "BudgetReport",
    "ServiceUsage",
    "check_budget",
    "find_config",
    "load_budget",
    "parse_budget",
]

OTHER = "other"
"""Name of the report row for connections that match no declared service."""

CONFIG_FILES = ("pgpulse.toml", "pyproject.toml")
_KEYS = ("headroom", "services")
_APPLICATION_NAME = "pgpulse-budget"

DsnOrConn: TypeAlias = "str | asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def _matches(service: str, application_name: str) -> bool:
    return application_name == service or application_name.startswith(
        (f"{service}-", f"{service}:")
    )


@dataclass(frozen=True)
class Budget:
    """Declared maximum connections per service, plus headroom."""

    services: Mapping[str, int]
    """Service name → most connections it may hold at once."""
    headroom: int = 0
    """Connections kept free on top of the services (psql, cron, emergencies)."""
    source: Path | None = field(default=None, compare=False)
    """The file the budget was read from, if any."""

    def __post_init__(self) -> None:
        for name, limit in self.services.items():
            if not name:
                raise ValueError("service names must not be empty")
            if type(limit) is not int or limit < 0:
                raise ValueError(
                    f"service {name!r}: expected a whole number >= 0, got {limit!r}"
                )
        if type(self.headroom) is not int or self.headroom < 0:
            raise ValueError(
                f"headroom: expected a whole number >= 0, got {self.headroom!r}"
            )
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))

    @property
    def declared_total(self) -> int:
        """Sum of all services' maxima plus the headroom."""
        return sum(self.services.values()) + self.headroom

    def share_for(self, service: str) -> int | None:
        """The declared maximum of *service*, or ``None`` if it is not declared.

        ``pgpulse serve`` sizes its connections to ``share_for("pgpulse")``.
        """
        return self.services.get(service)

    def service_for(self, application_name: str) -> str | None:
        """The service an ``application_name`` counts under (longest match)."""
        best: str | None = None
        for name in self.services:
            if _matches(name, application_name) and (
                best is None or len(name) > len(best)
            ):
                best = name
        return best


def _whole(value: object, where: str, source: Path | str) -> int:
    if type(value) is not int or value < 0:
        raise ConfigurationError(
            f"{source}: {where} must be a whole number >= 0, got {value!r}"
        )
    return value


def parse_budget(section: object, source: Path | str = "budget") -> Budget:
    """Validate a ``[budget]`` table (already parsed from TOML).

    Raises:
        ConfigurationError: unknown keys, or a limit that is not a whole number
            >= 0; the message names the file and the key.
    """
    if not isinstance(section, dict):
        raise ConfigurationError(f"{source}: [budget] must be a table")
    for key in section:
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"{source}: unknown key {key!r} in [budget]{suggestion}; "
                f"expected {' and '.join(_KEYS)}"
            )
    headroom = _whole(section.get("headroom", 0), "budget.headroom", source)
    services = section.get("services", {})
    if not isinstance(services, dict):
        raise ConfigurationError(
            f"{source}: budget.services must be a table of service = connections, "
            f"got {services!r}"
        )
    limits: dict[str, int] = {}
    for name, limit in services.items():
        if not name.strip():
            raise ConfigurationError(f"{source}: empty service name in budget.services")
        limits[name] = _whole(limit, f"budget.services.{name}", source)
    path = source if isinstance(source, Path) else None
    return Budget(limits, headroom, path)


def find_config(directory: str | Path | None = None) -> Path | None:
    """The first of ``pgpulse.toml`` / ``pyproject.toml`` in *directory* (cwd)."""
    root = Path(directory) if directory is not None else Path.cwd()
    for name in CONFIG_FILES:
        candidate = root / name
        if candidate.is_file():
            if name == "pyproject.toml" and "pgpulse" not in _read_toml(candidate).get(
                "tool", {}
            ):
                continue
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None


def load_budget(path: str | Path | None = None) -> Budget | None:
    """Read the budget from *path*, or from ``pgpulse.toml``/``pyproject.toml``.

    In ``pyproject.toml`` the table is ``[tool.pgpulse.budget]``; in any other
    file it is ``[budget]``.  Returns ``None`` when no config file is found
    (without *path*) or the file has no budget table.

    Raises:
        ConfigurationError: *path* does not exist, the file is not valid TOML,
            or the budget table has unknown keys or bad numbers.
    """
    if path is None:
        found = find_config()
        if found is None:
            return None
        config = found
    else:
        config = Path(path)
        if not config.is_file():
            raise ConfigurationError(
                f"config file {str(config)!r} does not exist; pass an existing "
                "pgpulse.toml or pyproject.toml with --config"
            )
    data = _read_toml(config)
    if config.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("pgpulse", {}) if isinstance(tool, dict) else {}
        if not isinstance(data, dict):
            raise ConfigurationError(f"{config}: [tool.pgpulse] must be a table")
    if "budget" not in data:
        return None
    return parse_budget(data["budget"], config)


@dataclass(frozen=True)
class ServiceUsage:
    """One row of the report: a service's declared maximum and live usage."""

    service: str
    """The service name, or ``"other"`` for undeclared applications."""
    declared: int | None
    """Declared maximum; ``None`` on the ``other`` row."""
    in_use: int
    """Client connections open now (every database of the server)."""
    application_names: tuple[str, ...] = ()
    """The distinct ``application_name`` values counted in this row."""

    @property
    def over(self) -> bool:
        """More connections are open than the service declared."""
        return self.declared is not None and self.in_use > self.declared


@dataclass(frozen=True)
class BudgetReport:
    """The budget compared with the server's limits and its live connections."""

    fits: bool
    """Declared services plus headroom fit in the connections the server allows."""
    message: str
    """One paragraph naming the services and numbers, for logs and the CLI."""
    services: tuple[ServiceUsage, ...]
    """Declared services in file order, then the ``other`` row."""
    max_connections: int
    superuser_reserved: int
    reserved: int
    """``reserved_connections`` (PostgreSQL 16+; 0 before)."""
    headroom: int
    declared_total: int

    @property
    def available(self) -> int:
        """Connections ordinary roles may open: max minus the reserved slots."""
        return self.max_connections - self.superuser_reserved - self.reserved

    @property
    def in_use(self) -> int:
        return sum(row.in_use for row in self.services)

    @property
    def over_services(self) -> tuple[ServiceUsage, ...]:
        """Services holding more connections right now than they declared."""
        return tuple(row for row in self.services if row.over)

    @property
    def ok(self) -> bool:
        """Fits, and no service is over its share right now (CLI exit status)."""
        return self.fits and not self.over_services

    def raise_for_fit(self) -> None:
        """Raise `ConfigurationError` with `message` when the budget does not fit."""
        if not self.fits:
            raise ConfigurationError(self.message)


def _terms(budget: Budget) -> str:
    parts = [f"{name} {limit}" for name, limit in budget.services.items()]
    parts.append(f"headroom {budget.headroom}")
    return " + ".join(parts)


def evaluate(
    budget: Budget,
    *,
    max_connections: int,
    superuser_reserved: int,
    reserved: int,
    activity: Mapping[str, int],
) -> BudgetReport:
    """Build the report from server settings and ``application_name`` counts.

    Pure, so the arithmetic and the wording are testable without a server.
    """
    counts: dict[str, int] = dict.fromkeys(budget.services, 0)
    names: dict[str, list[str]] = {name: [] for name in [*budget.services, OTHER]}
    other = 0
    for app, count in sorted(activity.items()):
        service = budget.service_for(app)
        if service is None:
            other += count
            names[OTHER].append(app)
        else:
            counts[service] += count
            names[service].append(app)
    rows = [
        ServiceUsage(name, limit, counts[name], tuple(names[name]))
        for name, limit in budget.services.items()
    ]
    rows.append(ServiceUsage(OTHER, None, other, tuple(names[OTHER])))
    available = max_connections - superuser_reserved - reserved
    declared = budget.declared_total
    fits = declared <= available
    limits = (
        f"max_connections {max_connections} - superuser_reserved_connections "
        f"{superuser_reserved} - reserved_connections {reserved}"
    )
    sentences = []
    if fits:
        sentences.append(
            f"within budget: declared {declared} ({_terms(budget)}) of {available} "
            f"available connections ({limits})."
        )
    else:
        sentences.append(
            f"over budget: the declared connections need {declared} "
            f"({_terms(budget)}) but the server allows {available} ({limits}); "
            f"lower the services' limits or the headroom by {declared - available}, "
            "or raise max_connections."
        )
    for row in rows:
        if row.over:
            sentences.append(
                f"{row.service} holds {row.in_use} connections, over its declared "
                f"{row.declared}: lower its pool size or raise its share."
            )
    if other > budget.headroom:
        sentences.append(
            f"{other} connections come from undeclared applications "
            f"({', '.join(repr(n) for n in names[OTHER])}), more than the headroom "
            f"of {budget.headroom}: declare them as services."
        )
    return BudgetReport(
        fits=fits,
        message=" ".join(sentences),
        services=tuple(rows),
        max_connections=max_connections,
        superuser_reserved=superuser_reserved,
        reserved=reserved,
        headroom=budget.headroom,
        declared_total=declared,
    )


def _redact(dsn: str) -> str:
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable database URL>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def _connection(
    target: DsnOrConn,
) -> AsyncIterator[tuple[asyncpg.Connection[Any] | PoolConnectionProxy[Any], bool]]:
    if not isinstance(target, str):
        yield target, False
        return
    settings = None
    if "application_name=" not in target and "PGAPPNAME" not in os.environ:
        settings = {"application_name": _APPLICATION_NAME}
    try:
        conn = await asyncpg.connect(target, server_settings=settings)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(
            f"could not connect to {_redact(target)}: {exc}; check the database "
            "URL (--database-url or DATABASE_URL) and that the server is running"
        ) from None
    try:
        yield conn, True
    finally:
        await conn.close()


async def check_budget(conn_or_dsn: DsnOrConn, budget: Budget) -> BudgetReport:
    """Compare *budget* with the server's limits and its open connections.

    Counts client backends on the whole server (``max_connections`` is
    server-wide).  A connection this function opened itself (a DSN was given)
    is not counted; a connection passed in is, under its application_name.

    Raises:
        ConfigurationError: the database cannot be reached.
    """
    async with _connection(conn_or_dsn) as (conn, own):
        limits = await conn.fetchrow(
            "select current_setting('max_connections')::int as max_connections,"
            " current_setting('superuser_reserved_connections')::int as superuser,"
            " coalesce(current_setting('reserved_connections', true), '0')::int"
            " as reserved"
        )
        rows = await conn.fetch(
            "select coalesce(application_name, '') as app, count(*)::int as n"
            " from pg_stat_activity"
            " where backend_type = 'client backend' and pid <> $1"
            " group by 1",
            conn.get_server_pid() if own else 0,
        )
    if limits is None:  # a one-row select always returns a row
        raise ConfigurationError("the server did not report max_connections")
    return evaluate(
        budget,
        max_connections=limits["max_connections"],
        superuser_reserved=limits["superuser"],
        reserved=limits["reserved"],
        activity={row["app"]: row["n"] for row in rows},
    )
