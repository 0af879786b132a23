"""What the REST endpoint shows: no more than the stream would.

Why: REST reads run SQL on live tables, which hold columns that capture keeps
out of the stream (``watch --exclude password_hash``) and tables nobody
watches.  So REST exposes only watched tables of the configured schemas
(``[rest] schemas``, default ``public``) and their published columns, unless a
table is opened for REST explicitly (``rest_tables``: all its columns); with
auth on, the caller's policy narrows that further (its columns, its filter on
every level of the query, including embedded tables).  Computed columns and
relationships (SQL functions of a row) exist only when listed in
``rest_functions``, as for ``rpc/``.  Anything else is
unknown: 404 for a table, "does not exist" for a column, and error messages
list only what is visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pgpulse.auth.access import Access, TableRules
from pgpulse.capture import WatchedTable
from pgpulse.catalog import Catalog, Table
from pgpulse.catalog.functions import Computed
from pgpulse.exceptions import UnknownTableError
from pgpulse.routing.filters import Filter
from pgpulse.routing.subscriptions import published_columns

__all__ = ["RestExposure", "qualified_functions"]


class RestExposure:
    """The REST rules for one request (tables, columns, policy filters)."""

    def __init__(
        self,
        catalog: Catalog,
        watched: Mapping[str, WatchedTable],
        access: Access,
        schemas: Iterable[str] = ("public",),
        open_tables: Iterable[str] = (),
        functions: Iterable[str] = (),
    ) -> None:
        self.catalog = catalog
        self.watched = watched
        self.access = access
        self.schemas = frozenset(schemas)
        self.open_tables = frozenset(_qualified(catalog, t) for t in open_tables)
        self.functions = qualified_functions(functions)
        self._rules: dict[str, TableRules] = {}
        self.viewers: set[tuple[str | None, str]] = set()
        """Roles and claims of tables read under row-level security."""

    def exposed(self, table: Table) -> bool:
        if table.schema not in self.schemas:
            return False
        return table.qualified in self.watched or table.qualified in self.open_tables

    def rules(self, table: Table) -> TableRules:
        found = self._rules.get(table.qualified)
        if found is None:
            found = self.access.rules(table, self.catalog.display_name(table))
            self._rules[table.qualified] = found
            if found.viewer is not None:
                self.viewers.add((found.viewer.role, found.viewer.claims))
        return found

    def columns(self, table: Table) -> frozenset[str] | None:
        rules = self.rules(table)
        info = self.watched.get(table.qualified)
        if info is None or table.qualified in self.open_tables:
            visible = None
        else:
            visible = frozenset(published_columns(table, info))
        if rules.columns is not None:
            visible = rules.columns if visible is None else visible & rules.columns
        if visible is not None and visible == frozenset(table.columns):
            return None
        return visible

    def filters(self, table: Table) -> tuple[Filter, ...]:
        return self.rules(table).filters

    def callable(self, function: Computed) -> bool:
        """Computed columns and relationships run SQL functions: only those
        listed in ``rest_functions`` (as for ``rpc/``), in exposed schemas."""
        return function.qualified in self.functions and function.schema in self.schemas


def qualified_functions(names: Iterable[str]) -> frozenset[str]:
    """``rest_functions`` as ``schema.name`` (unqualified names are public's)."""
    return frozenset(f if "." in f else f"public.{f}" for f in names)


def _qualified(catalog: Catalog, name: str) -> str:
    try:
        return catalog.table(name).qualified
    except UnknownTableError:  # not (yet) a table: opened by name
        return name if "." in name else f"public.{name}"
