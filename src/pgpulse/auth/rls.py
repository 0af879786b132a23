"""PostgreSQL's row-level security, applied to rows from the change log.

Why not ``SELECT`` the table as the subscriber: the row a change describes may
no longer be there (a DELETE, a later UPDATE), and a DELETE must be checked
against the old row, which only the log still has.  So the table's own
``CREATE POLICY`` rules are read from ``pg_policy`` and evaluated on the logged
row, as PostgreSQL combines them for a ``SELECT``: permissive ``USING``
expressions ORed, restrictive ones ANDed, none permissive = nothing visible;
a role that bypasses RLS (superuser, ``BYPASSRLS``, the owner unless ``FORCE``)
sees every row; a role without ``SELECT`` on the table sees none.  The
expressions run with ``SET LOCAL ROLE`` and ``request.jwt.claims`` set (the
PostgREST convention), so ``current_setting('request.jwt.claims')``, helper
functions and subqueries on other tables (a shared-with join table, itself
under RLS) behave as in a query by that role.  Evaluation is per batch per
distinct (role, claims) group (:mod:`pgpulse.routing.db_filters`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RowSecurity"]

_POLICIES_SQL = """
select c.relrowsecurity as enabled, c.relforcerowsecurity as forced,
       pg_get_userbyid(c.relowner) = $2 as owner,
       coalesce((select rolsuper or rolbypassrls from pg_roles where rolname = $2),
                false) as bypass,
       has_table_privilege($2, c.oid, 'SELECT') as can_select,
       array(select coalesce(pg_get_expr(p.polqual, p.polrelid), 'true')
             from pg_policy p
             where p.polrelid = c.oid and p.polpermissive and p.polcmd in ('r', '*')
               and (p.polroles = '{0}' or exists (
                    select 1 from unnest(p.polroles) r
                    where pg_has_role($2, r, 'MEMBER')))
             order by p.polname) as permissive,
       array(select coalesce(pg_get_expr(p.polqual, p.polrelid), 'true')
             from pg_policy p
             where p.polrelid = c.oid and not p.polpermissive
               and p.polcmd in ('r', '*')
               and (p.polroles = '{0}' or exists (
                    select 1 from unnest(p.polroles) r
                    where pg_has_role($2, r, 'MEMBER')))
             order by p.polname) as restrictive
from pg_class c where c.oid = $1::regclass
"""


class RowSecurity:
    """The SELECT policies of tables, per role, as one SQL expression each.

    Cached per (table, role); :meth:`forget` after the catalog changes.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], str] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def expression(self, conn: Any, table_sql: str, role: str) -> str:
        """A boolean SQL expression over the table's columns (unqualified, or
        qualified by the table's name) that is true for rows *role* may see."""
        key = (table_sql, role)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        row = await conn.fetchrow(_POLICIES_SQL, table_sql, role)
        if row is None:
            expression = "false"
        elif (
            row["bypass"] or not row["enabled"] or (row["owner"] and not row["forced"])
        ):
            expression = "true" if row["can_select"] or row["bypass"] else "false"
        elif not row["can_select"] or not row["permissive"]:
            expression = "false"
        else:
            permissive = " OR ".join(f"({e})" for e in row["permissive"])
            parts = [f"({permissive})", *(f"({e})" for e in row["restrictive"])]
            expression = " AND ".join(parts)
        self._cache[key] = expression
        return expression
