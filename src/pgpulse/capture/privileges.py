"""Least privilege: what a gateway's role needs, granted once by an admin.

Why: on managed PostgreSQL nobody runs as a superuser, and a gateway should
not own the capture schema it reads.  ``pgpulse setup --grant ROLE`` (run by
the database owner) installs or upgrades the schema and grants ROLE exactly:

* reading the log and its bookkeeping (listener, resumes, ``watched``);
* registering for wake-ups (``pgpulse.listeners``, the ``wakeups`` sequence);
* pruning (``DELETE`` on the log, ``UPDATE`` of ``pgpulse.state``);
* writing the log for the wal decoder (``INSERT``, ``decoded_lsn``);
* ``watch``/``unwatch`` of tables ROLE owns (``CREATE`` in the ``pgpulse``
  schema for the per-table trigger functions, rows in ``pgpulse.watched``).

What GRANT cannot give is named with the command that does: the REPLICATION
attribute for the wal source (``ALTER ROLE ... REPLICATION``, or
``rds_replication`` on RDS), ``wal_level = logical``.  A gateway that finds the
schema missing or older than it needs does not try to install it without the
rights to: it stops with the command to run.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pgpulse.capture.schema import SCHEMA_VERSION, install_schema, installed_version
from pgpulse.catalog import quote_ident
from pgpulse.exceptions import ConfigurationError

__all__ = ["check_schema", "grant_sql", "setup"]


def grant_sql(role: str) -> str:
    """The GRANT statements for *role* (idempotent), as one script."""
    r = quote_ident(role)
    return f"""
grant usage, create on schema pgpulse to {r};
grant select, insert, delete on pgpulse.changes to {r};
grant select, update on pgpulse.state to {r};
grant select on pgpulse.schema_version to {r};
grant select, insert, update, delete on pgpulse.watched to {r};
grant select, insert, update, delete on pgpulse.listeners to {r};
grant usage, select, update on sequence pgpulse.wakeups to {r};
grant select, insert, update, delete on pgpulse.consumer_groups,
    pgpulse.consumer_partitions, pgpulse.consumer_workers, pgpulse.dead_letters
    to {r};
grant usage, select on all sequences in schema pgpulse to {r};
grant execute on all functions in schema pgpulse to {r};
"""


async def setup(conn: Any, role: str) -> int:
    """Install or upgrade the capture schema and grant *role* what it needs;
    returns the schema version."""
    exists = await conn.fetchval("select 1 from pg_roles where rolname = $1", role)
    if not exists:
        raise ConfigurationError(
            f"role {role!r} does not exist; create it first "
            f"(CREATE ROLE {quote_ident(role)} LOGIN PASSWORD '...')"
        )
    version = await install_schema(conn)
    await conn.execute(grant_sql(role))
    return version


async def check_schema(conn: Any) -> None:
    """Raise a :class:`ConfigurationError` naming the command to run when the
    capture schema is missing or older than this pgpulse, and this
    connection's role cannot install it."""
    try:
        current = await installed_version(conn)
    except asyncpg.InsufficientPrivilegeError:
        role = await conn.fetchval("select current_user")
        raise ConfigurationError(
            f"role {role!r} may not use the capture schema; as the database owner "
            f"run: pgpulse setup --grant {role} (or emit it as a migration with "
            "--emit-migration)"
        ) from None
    if current is not None and current >= SCHEMA_VERSION:
        return
    can_create = await conn.fetchval(
        "select has_database_privilege(current_database(), 'CREATE')"
    )
    owns = current is None or await conn.fetchval(
        "select pg_get_userbyid(nspowner) = current_user "
        "or (select rolsuper from pg_roles where rolname = current_user) "
        "from pg_namespace where nspname = 'pgpulse'"
    )
    if can_create and owns:
        return
    role = await conn.fetchval("select current_user")
    what = (
        "is not installed"
        if current is None
        else f"is at version {current}, this pgpulse needs {SCHEMA_VERSION}"
    )
    raise ConfigurationError(
        f"the capture schema {what}, and role {role!r} may not install it; as the "
        f"database owner run: pgpulse setup --grant {role} (or emit it as a "
        "migration with --emit-migration)"
    )
