"""Functions that act as a table's extra columns or relationships.

PostgREST's computed columns and relationships: a function taking one row of a
table (``full_name(people)``) is a column of that table; one returning rows of
another table (``setof cities``) is an embeddable relationship, a list unless
it returns a single row.  They are only read here; whether a caller may use
one is the REST endpoint's business (``rest_functions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgpulse.catalog.model import Column, Table, quote_ident

__all__ = ["Computed", "read_functions"]

_FUNCTIONS_SQL = """
select n.nspname as schema, p.proname as name,
       an.nspname || '.' || ac.relname as arg_table,
       p.proretset as returns_set,
       format_type(p.prorettype, null) as type_name,
       rt.typcategory::text as category, rt.typname::text as base_type,
       rn.nspname || '.' || rc.relname as ret_table
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type at on at.oid = p.proargtypes[0]
join pg_class ac on ac.oid = at.typrelid and ac.relkind in ('r', 'p', 'v', 'm', 'f')
join pg_namespace an on an.oid = ac.relnamespace
join pg_type rt on rt.oid = p.prorettype
left join pg_class rc on rc.oid = rt.typrelid
     and rc.relkind in ('r', 'p', 'v', 'm', 'f')
left join pg_namespace rn on rn.oid = rc.relnamespace
where p.pronargs = 1 and p.prokind = 'f'
  and n.nspname not in ('pg_catalog', 'information_schema')
"""


@dataclass(frozen=True)
class Computed:
    """A function of one row of a table."""

    schema: str
    name: str
    table: str
    """The table whose row it takes (``schema.table``)."""
    type_name: str
    category: str
    base_type: str
    returns_set: bool
    ret_table: str | None
    """For a relationship: the table whose rows it returns."""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def call(self, alias: str) -> str:
        """SQL calling it on the row named *alias*."""
        return (
            f"{quote_ident(self.schema)}.{quote_ident(self.name)}({quote_ident(alias)})"
        )

    def as_column(self) -> Column:
        """What a computed column looks like to filters and casts."""
        return Column(self.name, self.type_name, self.category, self.base_type, True)


async def read_functions(conn: Any, tables: dict[str, Table]) -> None:
    """Attach each one-row function to the table whose row it takes."""
    for r in await conn.fetch(_FUNCTIONS_SQL):
        table = tables.get(r["arg_table"])
        if table is None or (r["returns_set"] and r["ret_table"] is None):
            continue
        found = Computed(
            r["schema"],
            r["name"],
            r["arg_table"],
            r["type_name"],
            r["category"],
            r["base_type"],
            r["returns_set"],
            r["ret_table"] if r["ret_table"] in tables else None,
        )
        # The same name in two schemas: the table's own schema wins.
        if found.name not in table.functions or found.schema == table.schema:
            table.functions[found.name] = found
