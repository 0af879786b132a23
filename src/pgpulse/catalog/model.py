"""The catalog's records: tables, columns, foreign keys (no database here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgpulse.exceptions import UnknownColumnError

__all__ = ["Column", "ForeignKey", "Table", "quote_ident"]


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's ``quote_ident`` does (always)."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str
    """Formatted type, e.g. ``integer`` or ``timestamp with time zone``."""
    category: str
    """pg_type.typcategory: N numeric, S string, B boolean, D date/time, ..."""
    base_type: str
    """Underlying pg_type.typname (``int4``, ``text``, ``timestamptz``...)."""
    nullable: bool
    has_default: bool = False
    code_point_order: bool = False
    """The column's collation sorts text by code point (``C``, ``POSIX``, the
    builtin provider), so Python's string order is PostgreSQL's."""
    deterministic: bool = True
    """Its collation calls strings equal only when they are byte-equal."""


@dataclass(frozen=True)
class ForeignKey:
    name: str
    """Constraint name, used by the ``table!fk_name(...)`` hint syntax."""
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    kind: str = "r"
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    """Column sets of UNIQUE constraints and unique indexes (not partial, no
    expressions): a foreign key on one of them is one-to-one."""
    functions: dict[str, Any] = field(default_factory=dict)
    """One-row functions of this table by name (:class:`~pgpulse.catalog.
    functions.Computed`): computed columns and relationships."""
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)
    """A view's columns that show a table's column as it is: column →
    (``schema.table``, column).  Foreign keys are followed through them."""

    def is_unique(self, columns: tuple[str, ...]) -> bool:
        """Whether *columns* identify at most one row (primary or unique key)."""
        wanted = set(columns)
        if self.primary_key and wanted == set(self.primary_key):
            return True
        return any(wanted == set(key) for key in self.unique_keys)

    @property
    def qualified(self) -> str:
        """``schema.name`` as text (for messages and the change log)."""
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        """The quoted, schema-qualified name to put into SQL."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def column(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise UnknownColumnError(self.name, name, self.columns) from None
