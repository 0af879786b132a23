"""Bind a parsed select tree to the catalog: tables, relationships, filters, orders.

The result is a tree of :class:`Level` objects, one per table in the query, each
knowing how it joins its parent (:class:`Relation`, from ``_relations``) and
which filters, orders and limits apply to it.  Every name a user typed is checked
here, so rendering (``_render``) only ever sees catalog names.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pgpulse.catalog import Catalog, Table
from pgpulse.exceptions import UnknownColumnError
from pgpulse.query._errors import QueryError, RelationshipError, SelectError
from pgpulse.query._relations import Relation, embed_target, resolve_relation
from pgpulse.query._schema import Schema
from pgpulse.query._select import Embed, Field, Item, Star
from pgpulse.query._sql import json_path
from pgpulse.routing.filters import Condition, Filter, columns_of

__all__ = ["Level", "Order", "build_plan", "embed_order", "find_level", "place_filter"]

Path = tuple[str, ...]


@dataclass(frozen=True)
class Order:
    """``ORDER BY column`` on the table at *path* (``()`` is the queried table)."""

    column: str
    desc: bool = False
    nulls_first: bool | None = None
    path: Path = ()


@dataclass
class Level:
    """One table of the query, with what it outputs and how it is filtered."""

    table: Table
    index: int
    key: str | None = None
    relation: Relation | None = None
    inner: bool = False
    presence: bool | None = None
    """``embed=not.is.null`` (True: parents that have it) or ``embed=is.null``
    (False: parents that do not), PostgREST's filter on an embed's presence."""
    visible: bool = True
    spread: bool = False
    """``...table(cols)``: a to-one embed whose columns join the parent row."""
    outputs: list[Star | Field | Level] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    columns: tuple[str, ...] | None = None
    """What ``*`` means when not every column is visible (None: all)."""

    @property
    def alias(self) -> str:
        return f"t{self.index}"

    @property
    def children(self) -> list[Level]:
        return [o for o in self.outputs if isinstance(o, Level)]

    def child(self, key: str) -> Level | None:
        return next((c for c in self.children if c.key == key), None)

    @property
    def aggregates(self) -> bool:
        """Whether this level's rows are groups (``amount.sum()``...)."""
        return any(isinstance(o, Field) and o.aggregate for o in self.outputs)

    def output_keys(self) -> list[str]:
        """The keys of this level's rows (a spread child's keys are its
        parent's own)."""
        keys: list[str] = []
        for item in self.outputs:
            if isinstance(item, Star):
                keys.extend(self.columns or tuple(self.table.columns))
            elif isinstance(item, Field):
                keys.append(item.key)
            elif item.spread:
                keys.extend(item.output_keys())
            elif item.visible and item.key is not None:
                keys.append(item.key)
        return keys


def _check_aggregates(level: Level, select_text: str) -> None:
    for item in level.outputs:
        if isinstance(item, Star) or isinstance(item, Level):
            what = "'*'" if isinstance(item, Star) else f"the embed {item.key!r}"
            raise SelectError(
                f"select {select_text!r} aggregates {level.table.name!r} and also "
                f"asks for {what}; with aggregates, list the columns to group by "
                "(e.g. 'status, pages.sum()')."
            )


class _Builder:
    def __init__(self, schema: Schema, select_text: str) -> None:
        self.schema = schema
        self.select_text = select_text
        self.counter = itertools.count()

    def level(
        self, table: Table, items: tuple[Item, ...], embed: Embed | None = None
    ) -> Level:
        level = Level(table, next(self.counter))
        level.filters.extend(self.schema.filters(table))
        if self.schema.restricted(table):
            level.columns = tuple(self.schema.columns(table))
        if embed is not None:
            level.key = embed.key
            level.inner = embed.inner
            level.visible = bool(items)
        keys: dict[str, str] = {}
        for item in items:
            if isinstance(item, Star):
                for name in self.schema.columns(table):
                    self.claim(keys, name, "'*'", table)
                level.outputs.append(item)
            elif isinstance(item, Field):
                if item.name != "*":
                    self.schema.column(table, item.name)
                self.claim(keys, item.key, repr(item.name), table)
                level.outputs.append(item)
            else:
                target, hinted = embed_target(self.schema, table, item)
                relation = resolve_relation(self.schema, table, hinted, target)
                child = self.level(target, item.items, item)
                child.relation = relation
                if item.spread:
                    if relation.many:
                        raise RelationshipError(
                            f"'...{item.name}' spreads a list ({table.name!r} has "
                            f"many {target.name!r}); spread only a to-one "
                            f"embed, or embed it as a list: '{item.name}(...)'."
                        )
                    child.spread = True
                    for key in child.output_keys():
                        self.claim(keys, key, f"'...{item.name}'", table)
                else:
                    self.claim(keys, item.key, f"embed {item.name!r}", table)
                level.outputs.append(child)
        if level.aggregates:
            _check_aggregates(level, self.select_text)
        return level

    def claim(self, keys: dict[str, str], key: str, source: str, table: Table) -> None:
        if key in keys:
            raise SelectError(
                f"key {key!r} appears twice in the rows of {table.name!r} (from "
                f"{keys[key]} and {source}) in select {self.select_text!r}; rename "
                f"one with an alias, e.g. 'other_{key}:{key}'."
            )
        keys[key] = source


def find_level(root: Level, path: Path, select_text: str) -> Level:
    level = root
    for depth, key in enumerate(path):
        found = level.child(key)
        if found is None:
            dotted = ".".join(path[: depth + 1])
            raise QueryError(
                f"{dotted!r} is not an embedded table in select({select_text!r}); "
                f"embed it first, e.g. select('*, {key}(*)')."
            )
        level = found
    return level


def _resolve_column(
    schema: Schema, level: Level, name: str, select_text: str
) -> tuple[Level, str]:
    visible = schema.columns(level.table)
    if name in visible:
        return level, name
    path = json_path(name)
    if path is not None and path[0] in visible:
        schema.column(level.table, name)
        return level, name
    computed = schema.computed(level.table, name)
    if computed is not None and computed.ret_table is None:
        return level, name
    head, dot, rest = name.partition(".")
    if dot and head not in visible:
        child = level.child(head)
        if child is None:
            raise QueryError(
                f"{head!r} in {name!r} is neither a column of {level.table.name!r} "
                f"nor an embedded table in select({select_text!r}); embed it first, "
                f"e.g. select('*, {head}(*)')."
            )
        return _resolve_column(schema, child, rest, select_text)
    raise UnknownColumnError(
        level.table.name, name if path is None else path[0], visible
    )


def place_filter(
    root: Level,
    path: Path,
    filt: Filter,
    select_text: str,
    schema: Schema | None = None,
) -> Level:
    """Attach *filt* to the level it names; returns that level."""
    schema = schema or Schema(Catalog())
    level = find_level(root, path, select_text)
    if isinstance(filt, Condition) and filt.op == "is" and filt.value is None:
        child = level.child(filt.column)
        if child is not None and filt.column not in level.table.columns:
            child.presence = filt.negate
            return child
    if isinstance(filt, Condition):
        level, column = _resolve_column(schema, level, filt.column, select_text)
        filt = replace(filt, column=column)
    else:
        visible = schema.columns(level.table)
        for column in sorted(columns_of(filt)):
            if column not in visible:
                head = column.partition(".")[0]
                if "." in column and level.child(head) is not None:
                    raise QueryError(
                        f"or/and filters apply to one table, but {column!r} names "
                        f"the embedded {head!r}; pass reference_table={head!r} and "
                        "name its columns without the prefix."
                    )
                schema.column(level.table, column)
    level.filters.append(filt)
    return level


_EMBED_ORDER = re.compile(r"^([^()]+)\(([^()]+)\)$")


def embed_order(level: Level, text: str) -> tuple[Level, str] | None:
    """``shipments(port)`` in ``order=``: the to-one embed and its column that
    order *level*'s rows (PostgREST's ordering by an embedded column); None
    for a plain column."""
    match = _EMBED_ORDER.match(text)
    if match is None:
        return None
    key, column = match.group(1).strip(), match.group(2).strip()
    child = level.child(key)
    if child is None:
        raise QueryError(
            f"order={text!r} names {key!r}, which is not embedded in "
            f"{level.table.name!r}; embed it first, e.g. select('*, {key}(*)')."
        )
    if child.relation is not None and child.relation.many:
        raise QueryError(
            f"order={text!r}: {key!r} is a list ({level.table.name!r} has many); "
            "only a to-one embed can order its parent rows."
        )
    return child, column


def build_plan(
    schema: Schema,
    table: Table,
    items: tuple[Item, ...],
    select_text: str,
    filters: Iterable[tuple[Path, Filter]] = (),
    orders: Iterable[Order] = (),
    limits: Iterable[tuple[Path, int]] = (),
    offsets: Iterable[tuple[Path, int]] = (),
) -> Level:
    """The checked level tree of a query (raises on any unknown name)."""
    root = _Builder(schema, select_text).level(table, items)
    for path, filt in filters:
        place_filter(root, path, filt, select_text, schema)
    for order in orders:
        level = find_level(root, order.path, select_text)
        through = embed_order(level, order.column)
        if through is not None:
            child, column = through
            schema.column(child.table, column)
            level.orders.append(order)
            continue
        visible = schema.columns(level.table)
        if order.column not in visible and "." in order.column:
            raise QueryError(
                f"order({order.column!r}) names an embedded column; to order the "
                f"embedded list use order({order.column.split('.')[-1]!r}, "
                f"foreign_table={'.'.join(order.column.split('.')[:-1])!r})."
            )
        schema.column(level.table, order.column)
        level.orders.append(order)
    for path, count in limits:
        find_level(root, path, select_text).limit = count
    for path, count in offsets:
        find_level(root, path, select_text).offset = count
    return root
