"""What tables, columns, keys and foreign keys exist, read from the system catalog.

Why: every identifier a user gives (a table in ``?sub=``, a column in a filter, a
name in a query builder chain) is checked against this snapshot of the catalog
before any SQL is built, so unknown names fail with a clear message and nothing
user-typed ever reaches SQL unvalidated.  The snapshot is cached and refreshed on
demand (``await catalog.refresh(conn)``).
"""

from __future__ import annotations

from typing import Any

from pgpulse.catalog.functions import read_functions
from pgpulse.catalog.model import Column, ForeignKey, Table, quote_ident
from pgpulse.catalog.views import read_view_origins
from pgpulse.exceptions import UnknownTableError

__all__ = ["Catalog", "Column", "ForeignKey", "Table", "quote_ident"]


_TABLES_SQL = """
select n.nspname as schema, c.relname as name, c.relkind::text as kind,
       a.attname as column, format_type(a.atttypid, a.atttypmod) as type_name,
       coalesce(bt.typcategory, t.typcategory)::text as category,
       coalesce(bt.typname, t.typname)::text as base_type,
       not a.attnotnull as nullable, a.atthasdef as has_default,
       coalesce(a.attnum = any(pk.conkey), false) as in_pk,
       array_position(pk.conkey, a.attnum) as pk_pos,
       a.attcollation = 100 as default_collation,
       co.collprovider::text as coll_provider, co.collcollate as coll_collate,
       co.collisdeterministic as coll_deterministic
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
left join pg_type bt on t.typtype = 'd' and bt.oid = t.typbasetype
left join pg_constraint pk on pk.conrelid = c.oid and pk.contype = 'p'
left join pg_collation co on co.oid = a.attcollation
where c.relkind in ('r', 'p', 'v', 'm', 'f')
  and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
  and n.nspname not like 'pg_temp%' and n.nspname not like 'pg_toast_temp%'
order by n.nspname, c.relname, a.attnum
"""

_UNIQUES_SQL = """
select n.nspname || '.' || c.relname as tbl,
       array(select a.attname from unnest(i.indkey::int2[]) with ordinality k(n, o)
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n
             order by k.o) as columns
from pg_index i
join pg_class c on c.oid = i.indrelid
join pg_namespace n on n.oid = c.relnamespace
where i.indisunique and not i.indisprimary and i.indpred is null
  and i.indexprs is null
  and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
"""

_FKS_SQL = """
select con.conname as name,
       sn.nspname || '.' || sc.relname as tbl,
       tn.nspname || '.' || tc.relname as ref_tbl,
       array(select a.attname from unnest(con.conkey) with ordinality k(n, i)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n
             order by k.i) as columns,
       array(select a.attname from unnest(con.confkey) with ordinality k(n, i)
             join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n
             order by k.i) as ref_columns
from pg_constraint con
join pg_class sc on sc.oid = con.conrelid
join pg_namespace sn on sn.oid = sc.relnamespace
join pg_class tc on tc.oid = con.confrelid
join pg_namespace tn on tn.oid = tc.relnamespace
where con.contype = 'f'
order by con.conname
"""


# The database's default collation (pg_database has its provider since 15).
_DEFAULT_COLLATION_SQL = """
select datcollate,
       case when current_setting('server_version_num')::int >= 150000
            then (to_jsonb(d) ->> 'datlocprovider') else 'c' end as provider
from pg_database d where datname = current_database()
"""

_CODE_POINT_LOCALES = ("C", "POSIX")


def _code_point_order(provider: str | None, collate: str | None) -> bool:
    """Whether a collation sorts by code point: libc's C/POSIX or the builtin
    provider (PostgreSQL 17+, whose locales all sort by code point)."""
    if provider == "b":
        return True
    return provider == "c" and collate in _CODE_POINT_LOCALES


class Catalog:
    """A cached snapshot of user tables; resolve names with :meth:`table`."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.search_path: list[str] = ["public"]

    @classmethod
    async def load(cls, conn: Any) -> Catalog:
        catalog = cls()
        await catalog.refresh(conn)
        return catalog

    async def refresh(self, conn: Any) -> None:
        """Re-read the catalog (after migrations or ``watch``)."""
        # Catalog queries over a large schema cost past jit_above_cost, and
        # compiling them takes longer than running them: no JIT here.
        async with conn.transaction():
            before = await conn.fetchval(
                "select current_setting('jit'), set_config('jit', 'off', true)"
            )
            await self._read(conn)
            # Inside a caller's transaction the setting would outlive us.
            await conn.execute("select set_config('jit', $1, true)", before)

    async def _read(self, conn: Any) -> None:
        tables: dict[str, Table] = {}
        pk_cols: dict[str, list[tuple[int, str]]] = {}
        default = await conn.fetchrow(_DEFAULT_COLLATION_SQL)
        default_order = _code_point_order(default["provider"], default["datcollate"])
        for r in await conn.fetch(_TABLES_SQL):
            key = f"{r['schema']}.{r['name']}"
            table = tables.get(key)
            if table is None:
                table = Table(r["schema"], r["name"], {}, (), kind=r["kind"])
                tables[key] = table
                pk_cols[key] = []
            table.columns[r["column"]] = Column(
                name=r["column"],
                type_name=r["type_name"],
                category=r["category"],
                base_type=r["base_type"],
                nullable=r["nullable"],
                has_default=r["has_default"],
                code_point_order=default_order
                if r["default_collation"]
                else _code_point_order(r["coll_provider"], r["coll_collate"]),
                deterministic=r["coll_deterministic"] is not False,
            )
            if r["in_pk"]:
                pk_cols[key].append((r["pk_pos"], r["column"]))
        for key, cols in pk_cols.items():
            tables[key].primary_key = tuple(name for _, name in sorted(cols))
        for r in await conn.fetch(_FKS_SQL):
            if r["tbl"] in tables and r["ref_tbl"] in tables:
                tables[r["tbl"]].foreign_keys.append(
                    ForeignKey(
                        name=r["name"],
                        table=r["tbl"],
                        columns=tuple(r["columns"]),
                        ref_table=r["ref_tbl"],
                        ref_columns=tuple(r["ref_columns"]),
                    )
                )
        for r in await conn.fetch(_UNIQUES_SQL):
            if r["tbl"] in tables:
                tables[r["tbl"]].unique_keys.append(tuple(r["columns"]))
        await read_view_origins(conn, tables)
        await read_functions(conn, tables)
        path = await conn.fetchval("select current_schemas(false)")
        self.search_path = list(path) or ["public"]
        self.tables = tables

    def table(self, name: str) -> Table:
        """Resolve ``name`` or ``schema.name`` to a table, or raise.

        Unqualified names are looked up along the search path, then in any schema
        where the name is unique.
        """
        if not isinstance(name, str) or not name:
            raise UnknownTableError(str(name), self.names(), "is not a valid name")
        if name in self.tables:
            return self.tables[name]
        if "." not in name:
            for schema in self.search_path:
                found = self.tables.get(f"{schema}.{name}")
                if found is not None:
                    return found
            matches = [t for t in self.tables.values() if t.name == name]
            if len(matches) == 1:
                return matches[0]
        raise UnknownTableError(name, self.names())

    def names(self) -> list[str]:
        """Short names (unqualified when on the search path) of all tables."""
        out = []
        for table in self.tables.values():
            if table.schema in self.search_path:
                out.append(table.name)
            else:
                out.append(table.qualified)
        return sorted(out)

    def display_name(self, table: Table) -> str:
        """How a table is named in events and messages (``documents``)."""
        return self.short_name(table.qualified)

    def short_name(self, qualified: str) -> str:
        """``public.documents`` → ``documents`` when the schema is the first on
        the search path; other schemas stay qualified."""
        schema, _, name = qualified.partition(".")
        return name if schema in self.search_path[:1] else qualified
