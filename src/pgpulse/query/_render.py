"""Render a level tree as ONE SQL statement that returns JSON.

Shape (``documents`` with an embedded list of ``nodes``)::

    SELECT coalesce(json_agg("r0"), '[]'::json) AS "data"
    FROM (
      SELECT "t0".*, coalesce("e1"."j", '[]'::json) AS "nodes"
      FROM "public"."documents" AS "t0"
      LEFT JOIN LATERAL (
        SELECT json_agg("r1") AS "j"
        FROM (
          SELECT "t1".* FROM "public"."nodes" AS "t1"
          WHERE "t1"."document_id" = "t0"."id"
        ) AS "r1"
      ) AS "e1" ON true
    ) AS "r0"

Why: each embedded table is a lateral subquery aggregated to JSON, so any depth
of nesting costs one round trip and no N+1; PostgreSQL builds the nested
documents, Python decodes one string with orjson.  ``!inner`` keeps a parent only
when its lateral produced something (``"e1"."j" IS NOT NULL``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pgpulse.catalog import Table, quote_ident
from pgpulse.query._plan import Level, embed_order
from pgpulse.query._select import Field, Star
from pgpulse.query._sql import Params, column_ref, column_sql, render_filter
from pgpulse.query._write import WRITE_CTE
from pgpulse.routing.filters import Filter

__all__ = ["render_read", "render_returning"]
_IN = "  "
#: Marks a spread embed's row as present (its own columns may all be NULL).
_PRESENT = "pgpulse_present"


def _q(name: str) -> str:
    return quote_ident(name)


@dataclass
class _Parts:
    select: list[str] = field(default_factory=list)
    source: str = ""
    joins: list[list[str]] = field(default_factory=list)
    inner_joins: list[list[str]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    inner_where: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    def lines(
        self, *, only_inner: bool = False, select: str | None = None
    ) -> list[str]:
        head = select if select is not None else ", ".join(self.select)
        out = [f"SELECT {head}".rstrip(), f"FROM {self.source}"]
        for join in self.inner_joins if only_inner else self.joins:
            out.extend(join)
        conditions = self.where + self.inner_where
        if conditions:
            out.append("WHERE " + conditions[0])
            out.extend(f"{_IN}AND {c}" for c in conditions[1:])
        if not only_inner:
            out.extend(self.group)
            out.extend(self.tail)
        return out


def _pairs(level: Level, parent: Level) -> list[str]:
    """The join condition between *level* and its *parent* (catalog names only)."""
    relation = level.relation
    if relation is None or relation.function is not None:
        return []  # a computed relationship's function does the joining
    fk = relation.fk
    child, up = level.table, parent.table
    a, p = level.alias, parent.alias
    if relation.kind == "many_to_one":
        return [
            f"{column_ref(a, child.column(ref))} = {column_ref(p, up.column(col))}"
            for col, ref in zip(fk.columns, fk.ref_columns, strict=True)
        ]
    if relation.junction is None or relation.target_fk is None:
        return [
            f"{column_ref(a, child.column(col))} = {column_ref(p, up.column(ref))}"
            for col, ref in zip(fk.columns, fk.ref_columns, strict=True)
        ]
    junction, j = relation.junction, f"j{level.index}"
    links = [
        f"{column_ref(j, junction.column(col))} = {column_ref(p, up.column(ref))}"
        for col, ref in zip(fk.columns, fk.ref_columns, strict=True)
    ] + [
        f"{column_ref(j, junction.column(col))} = {column_ref(a, child.column(ref))}"
        for col, ref in zip(
            relation.target_fk.columns, relation.target_fk.ref_columns, strict=True
        )
    ]
    return [
        f"EXISTS (SELECT 1 FROM {junction.sql} AS {_q(j)} WHERE "
        + " AND ".join(links)
        + ")"
    ]


def _aggregate(level: Level, item: Field, params: Params) -> str:
    """``amount.sum()::int`` as ``sum("t0"."amount")::integer AS "sum"``."""
    if item.name == "*":
        value = "count(*)"
    else:
        ref = column_sql(level.table, level.alias, item.name, params)
        value = f"{item.aggregate}({ref})"
    if item.cast:
        value = f"({value})::{item.cast}"
    return f"{value} AS {_q(item.key)}"


def _groups(level: Level) -> list[str]:
    """GROUP BY every plain column of a level that aggregates, by its place in
    the select list (a JSON path's keys are bound once, there)."""
    if not level.aggregates:
        return []
    places = [
        str(number)
        for number, item in enumerate(level.outputs, 1)
        if isinstance(item, Field) and item.aggregate is None
    ]
    return ["GROUP BY " + ", ".join(places)] if places else []


def _select_list(
    level: Level, include: Callable[[Level], bool], params: Params
) -> list[str]:
    out: list[str] = []
    a = _q(level.alias)
    for item in level.outputs:
        if isinstance(item, Star):
            if level.columns is None:
                out.append(f"{a}.*")
            else:
                # Not every column is visible: '*' means the visible ones.
                out.extend(
                    column_ref(level.alias, level.table.column(c))
                    for c in level.columns
                )
        elif isinstance(item, Field):
            if item.aggregate is not None:
                out.append(_aggregate(level, item, params))
                continue
            ref = column_sql(level.table, level.alias, item.name, params)
            if item.cast:
                out.append(f"{ref}::{item.cast} AS {_q(item.key)}")
            elif item.key != item.name:
                out.append(f"{ref} AS {_q(item.key)}")
            else:
                out.append(ref)
        elif item.spread:
            if include(item):
                e = _q("e" + str(item.index))
                out.extend(f"{e}.{_q(k)}" for k in item.output_keys())
        elif item.visible and include(item) and item.key is not None:
            j = f"{_q('e' + str(item.index))}.{_q('j')}"
            if item.relation is not None and item.relation.many:
                out.append(f"coalesce({j}, '[]'::json) AS {_q(item.key)}")
            else:
                out.append(f"{j} AS {_q(item.key)}")
    return out


def _level_parts(
    level: Level,
    params: Params,
    source: str,
    parent: Level | None,
    include: Callable[[Level], bool],
    with_tail: bool = True,
) -> _Parts:
    parts = _Parts(select=_select_list(level, include, params), source=source)
    for child in level.children:
        if not include(child):
            continue
        join = _lateral(child, level, params, include)
        parts.joins.append(join)
        if child.inner or child.presence is not None:
            # !inner, or a filter on the embed's presence (is.null, not.is.null).
            parts.inner_joins.append(join)
            absent = child.presence is False and not child.inner
            marker = _q(_PRESENT if child.spread else "j")
            parts.inner_where.append(
                f"{_q('e' + str(child.index))}.{marker} IS "
                f"{'' if absent else 'NOT '}NULL"
            )
    if parent is not None:
        parts.where.extend(_pairs(level, parent))
    for filt in level.filters:
        parts.where.append(render_filter(filt, level.table, level.alias, params))
    parts.group = _groups(level)
    if with_tail:
        parts.tail = _tail(level, params)
    return parts


def _tail(level: Level, params: Params) -> list[str]:
    out: list[str] = []
    if level.orders:
        terms = []
        grouped = {
            item.name: str(number)
            for number, item in enumerate(level.outputs, 1)
            if level.aggregates and isinstance(item, Field) and not item.aggregate
        }
        for order in level.orders:
            through = embed_order(level, order.column)
            if order.column in grouped:
                term = grouped[order.column]  # the group's own expression
            elif through is None:
                term = column_sql(level.table, level.alias, order.column, params)
            else:
                term = _embedded_term(level, *through, params)
            term += " DESC" if order.desc else " ASC"
            if order.nulls_first is not None:
                term += " NULLS FIRST" if order.nulls_first else " NULLS LAST"
            terms.append(term)
        out.append("ORDER BY " + ", ".join(terms))
    if level.limit is not None:
        out.append(f"LIMIT {params.add(level.limit)}")
    if level.offset is not None:
        out.append(f"OFFSET {params.add(level.offset)}")
    return out


def _embedded_term(level: Level, child: Level, column: str, params: Params) -> str:
    """The value of a to-one embed's column for *level*'s row, to order by:
    a scalar subquery with the embed's join and filters (policies included)."""
    conditions = _pairs(child, level) + [
        render_filter(f, child.table, child.alias, params) for f in child.filters
    ]
    value = column_sql(child.table, child.alias, column, params)
    where = " AND ".join(conditions) or "true"
    return f"(SELECT {value} FROM {_source(child, level)} WHERE {where})"


def _lateral(
    level: Level, parent: Level, params: Params, include: Callable[[Level], bool]
) -> list[str]:
    parts = _level_parts(level, params, _source(level, parent), parent, include)
    if level.spread:
        # The columns themselves, not a JSON object: the parent lists them.
        parts.select.append(f"TRUE AS {_q(_PRESENT)}")
        return (
            ["LEFT JOIN LATERAL ("]
            + [_IN + line for line in parts.lines()]
            + [f") AS {_q('e' + str(level.index))} ON true"]
        )
    r = _q(f"r{level.index}")
    agg = (
        "json_agg"
        if level.relation is not None and level.relation.many
        else ("row_to_json")
    )
    body = [f"SELECT {agg}({r}) AS {_q('j')}", "FROM ("]
    body += [_IN + line for line in parts.lines()]
    body.append(f") AS {r}")
    return (
        ["LEFT JOIN LATERAL ("]
        + [_IN + line for line in body]
        + [f") AS {_q('e' + str(level.index))} ON true"]
    )


def _source(level: Level, parent: Level) -> str:
    """Where an embedded level's rows come from: its table, or for a computed
    relationship the function called on the parent's row."""
    relation = level.relation
    if relation is not None and relation.function is not None:
        return f"{relation.function.call(parent.alias)} AS {_q(level.alias)}"
    return _from(level.table, level.alias)


def _from(table: Table, alias: str) -> str:
    return f"{table.sql} AS {_q(alias)}"


def _wanted(level: Level) -> bool:
    return level.visible or level.inner or level.presence is not None


def _only_inner(level: Level) -> bool:
    return level.inner or level.presence is not None


#: CSV rows in PostgreSQL's own text form: each row's record output without
#: its parentheses (values quoted as PostgreSQL quotes them, NULL empty).
CSV_ROWS = (
    'coalesce(string_agg(substring("r0"::text, 2, length("r0"::text) - 2), '
    "chr(10)), '')"
)


def render_read(
    root: Level, params: Params, *, count: bool, head: bool, csv: bool = False
) -> list[str]:
    """A read: one row with ``data`` (a JSON array, or with *csv* the rows as
    CSV lines) and, if asked, ``count``."""
    source = _from(root.table, root.alias)
    empty = "''::text" if csv else "'[]'::json"
    if head:
        parts = _level_parts(root, params, source, None, _only_inner, with_tail=False)
        if not count:
            return [f'SELECT {empty} AS "data"']
        return ["SELECT", f'{_IN}{empty} AS "data",', *_count_lines(parts)]
    parts = _level_parts(root, params, source, None, _wanted)
    data = CSV_ROWS if csv else "coalesce(json_agg(\"r0\"), '[]'::json)"
    body = ["FROM ("] + [_IN + line for line in parts.lines()] + [') AS "r0"']
    if not count:
        return [f'SELECT {data} AS "data"', *body]
    # Both as scalar subqueries, so $n placeholders appear in reading order.
    out = ["SELECT", f"{_IN}(", f"{_IN * 2}SELECT {data}"]
    out += [_IN * 2 + line for line in body]
    out += [f'{_IN}) AS "data",', *_count_lines(parts)]
    return out


def _count_lines(parts: _Parts) -> list[str]:
    body = parts.lines(only_inner=True, select="count(*)")
    return [f"{_IN}("] + [_IN * 2 + line for line in body] + [f'{_IN}) AS "count"']


def render_returning(
    root: Level,
    params: Params,
    ctes: list[str],
    *,
    count: bool,
    minimal: bool = False,
    checks: Sequence[Filter] = (),
) -> list[str]:
    """Read back a write's rows (*ctes* define ``pgpulse_write``) like a read.

    ``minimal`` returns no rows, only the count.  With *checks* (a policy's
    filter), ``denied`` counts written rows outside them, and ``written``
    all written rows: the builder undoes the write when any is denied.
    """
    cte = _q(WRITE_CTE)
    out = ["WITH " + ctes[0], *ctes[1:]]
    columns: list[str] = []
    if minimal:
        columns.append("'[]'::json AS \"data\"")
    else:
        columns.append('coalesce(json_agg("r0"), \'[]\'::json) AS "data"')
    if count or minimal:
        columns.append(f'(SELECT count(*) FROM {cte}) AS "count"')
    if checks:
        allowed = " AND ".join(
            render_filter(f, root.table, "t0", params) for f in checks
        )
        columns.append(
            f'(SELECT count(*) FROM {cte} AS "t0" WHERE NOT coalesce({allowed}, '
            'false)) AS "denied"'
        )
        if not count and not minimal:
            columns.append(f'(SELECT count(*) FROM {cte}) AS "count"')
    if len(columns) == 1:
        out.append(f"SELECT {columns[0]}")
    else:
        out.append("SELECT")
        out += [f"{_IN}{c}," for c in columns[:-1]] + [f"{_IN}{columns[-1]}"]
    if minimal:
        return out
    # Rows come back in the order they were written: the lateral joins of
    # embeds may be planned as hash joins, which do not keep it.
    if root.columns is None:
        root.columns = tuple(root.table.columns)
    n = _q("pgpulse_n")
    source = f"(SELECT *, row_number() OVER () AS {n} FROM {cte}) AS {_q(root.alias)}"
    parts = _level_parts(root, params, source, None, _wanted, with_tail=False)
    parts.tail = [f"ORDER BY {_q(root.alias)}.{n}"]
    out.append("FROM (")
    out += [_IN + line for line in parts.lines()]
    out.append(') AS "r0"')
    return out
