"""Which table column each view column shows, so keys follow through views.

Why from the stored query: PostgreSQL records, for each output column of a
view's query, the table column it shows as it is (``resorigtbl`` and
``resorigcol`` in ``pg_rewrite.ev_action``, the same origin a client sees in
a row description); a computed column has none.  PostgREST reads the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pgpulse.catalog.model import Table

__all__ = ["read_view_origins", "view_targets"]

_VIEWS_SQL = """
select n.nspname || '.' || c.relname as view, r.ev_action::text as action
from pg_rewrite r
join pg_class c on c.oid = r.ev_class
join pg_namespace n on n.oid = c.relnamespace
where r.rulename = '_RETURN' and c.relkind in ('v', 'm')
  and n.nspname not in ('pg_catalog', 'information_schema')
"""

_ATTRIBUTES_SQL = """
select a.attrelid::int8 as relid, a.attnum, a.attname,
       n.nspname || '.' || c.relname as tbl
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped
"""


async def read_view_origins(conn: Any, tables: dict[str, Table]) -> None:
    """Which table column each view column shows (``resorigtbl``/``resorigcol``
    of the view's stored query), followed through views of views."""
    targets: dict[str, list[tuple[str, int, int]]] = {}
    for r in await conn.fetch(_VIEWS_SQL):
        if r["view"] in tables:
            targets[r["view"]] = view_targets(r["action"])
    oids = sorted({oid for found in targets.values() for _, oid, _ in found if oid})
    if not oids:
        return
    names = {
        (r["relid"], r["attnum"]): (r["tbl"], r["attname"])
        for r in await conn.fetch(_ATTRIBUTES_SQL, oids)
    }
    for view, found in targets.items():
        table = tables[view]
        for column, oid, attnum in found:
            origin = names.get((oid, attnum))
            if column in table.columns and origin is not None:
                table.origins[column] = origin
    for table in tables.values():  # a view of a view: to the table beneath
        for column, origin in list(table.origins.items()):
            seen = {table.qualified}
            while origin[0] in tables and origin[0] not in seen:
                seen.add(origin[0])
                deeper = tables[origin[0]].origins.get(origin[1])
                if deeper is None:
                    break
                origin = deeper
            table.origins[column] = origin


def view_targets(action: str) -> list[tuple[str, int, int]]:
    """(column, origin table oid, origin attnum) of each output column of a
    view's stored query (PostgreSQL's node text in ``pg_rewrite.ev_action``):
    the target list of the top query only, not of its subqueries."""
    out: list[tuple[str, int, int]] = []
    depth = 0
    in_targets = False
    entry: dict[str, str] | None = None
    field_name: str | None = None
    for token in _node_tokens(action):
        if token in ("{", "("):
            depth += 1
            if in_targets and depth == 4 and token == "{":
                entry = {}
        elif token in ("}", ")"):
            if in_targets and depth == 4 and token == "}" and entry is not None:
                if entry.get("resjunk") != "true" and "resname" in entry:
                    out.append(
                        (
                            entry["resname"],
                            int(entry.get("resorigtbl", "0")),
                            int(entry.get("resorigcol", "0")),
                        )
                    )
                entry = None
            if in_targets and depth == 3 and token == ")":
                return out
            depth -= 1
        elif depth == 2 and token == ":targetList":
            in_targets = True
        elif entry is not None and depth == 4:
            if field_name is not None:
                entry[field_name] = token
                field_name = None
            elif token in (":resname", ":resorigtbl", ":resorigcol", ":resjunk"):
                field_name = token[1:]
    return out


def _node_tokens(text: str) -> Iterator[str]:
    """Braces and parentheses alone, words between (backslash escapes kept
    as the character they escape)."""
    word: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            word.append(text[i + 1])
            i += 2
            continue
        if ch in "{}()" or ch.isspace():
            if word:
                yield "".join(word)
                word = []
            if not ch.isspace():
                yield ch
        else:
            word.append(ch)
        i += 1
    if word:
        yield "".join(word)
