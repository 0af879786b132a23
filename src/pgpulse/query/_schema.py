"""The catalog as one query may see it.

Why apart: the REST endpoint narrows what a caller sees (exposed tables,
published and policy columns, policy filters); every name a query uses is
looked up here, so a hidden table or column is simply unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from pgpulse.catalog import Catalog, Column, Table
from pgpulse.catalog.functions import Computed
from pgpulse.exceptions import UnknownColumnError, UnknownTableError
from pgpulse.query._sql import json_path, path_column
from pgpulse.routing.filters import Filter

__all__ = ["Exposure", "Schema"]


class Exposure(Protocol):
    """What a query may see of the catalog (the REST endpoint's rules): a
    table it may not read is unknown, its hidden columns are unknown, and its
    policy's filters apply wherever it appears."""

    def exposed(self, table: Table) -> bool:
        """Whether *table* exists for this query (else: unknown)."""

    def columns(self, table: Table) -> frozenset[str] | None:
        """Its visible columns (None: all); raises AuthError when denied."""

    def filters(self, table: Table) -> tuple[Filter, ...]:
        """Filters ANDed to every read of *table* (a policy's)."""

    def callable(self, function: Computed) -> bool:
        """Whether a computed column or relationship may be used (else unknown)."""


class Schema:
    """The catalog as the query layer may see it (some schemas can be hidden,
    and an :class:`Exposure` can narrow tables and columns further)."""

    def __init__(
        self,
        catalog: Catalog,
        hidden: Iterable[str] = (),
        exposure: Exposure | None = None,
    ) -> None:
        self.catalog = catalog
        self.hidden = frozenset(hidden)
        self.exposure = exposure

    def _visible(self, table: Table) -> bool:
        if table.schema in self.hidden:
            return False
        return self.exposure is None or self.exposure.exposed(table)

    def table(self, name: str) -> Table:
        try:
            table = self.catalog.table(name)
        except UnknownTableError:
            raise UnknownTableError(name, self.names()) from None
        if not self._visible(table):
            raise UnknownTableError(name, self.names())
        return table

    def tables(self) -> Iterator[Table]:
        return (t for t in self.catalog.tables.values() if self._visible(t))

    def names(self) -> list[str]:
        visible = {t.qualified for t in self.tables()}
        return [
            n
            for n in self.catalog.names()
            if (n if "." in n else self._qualify(n)) in visible
        ]

    def _qualify(self, name: str) -> str:
        for schema in self.catalog.search_path:
            if f"{schema}.{name}" in self.catalog.tables:
                return f"{schema}.{name}"
        return name

    def columns(self, table: Table) -> list[str]:
        """The columns a query may name, in table order."""
        allowed = None if self.exposure is None else self.exposure.columns(table)
        return [c for c in table.columns if allowed is None or c in allowed]

    def column(self, table: Table, name: str) -> Column:
        """A column a query may name (hidden ones are unknown), or a JSON path
        into one (``data->a->>b``)."""
        visible = self.columns(table)
        computed = self.computed(table, name)
        if computed is not None and computed.ret_table is None:
            return computed.as_column()
        path = json_path(name)
        head = name if path is None else path[0]
        if head not in visible:
            raise UnknownColumnError(table.name, head, visible)
        return path_column(table, name)

    def computed(self, table: Table, name: str) -> Computed | None:
        """A function of *table*'s rows named *name* that this query may use
        (a column of the table by that name wins)."""
        found: Computed | None = table.functions.get(name)
        if found is None or name in table.columns:
            return None
        if found.schema in self.hidden:
            return None
        if self.exposure is not None and not self.exposure.callable(found):
            return None
        return found

    def restricted(self, table: Table) -> bool:
        return self.exposure is not None and self.exposure.columns(table) is not None

    def filters(self, table: Table) -> tuple[Filter, ...]:
        return () if self.exposure is None else self.exposure.filters(table)
