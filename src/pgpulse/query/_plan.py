"""Bind a parsed select tree to the catalog: tables, relationships, filters, orders.

The result is a tree of :class:`Level` objects, one per table in the query, each
knowing how it joins its parent (:class:`Relation`, found from foreign keys) and
which filters, orders and limits apply to it.  Every name a user typed is checked
here, so rendering (``_render``) only ever sees catalog names.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from pgpulse.catalog import Catalog, Column, ForeignKey, Table
from pgpulse.exceptions import UnknownColumnError, UnknownTableError
from pgpulse.query._errors import QueryError, RelationshipError, SelectError
from pgpulse.query._select import Embed, Field, Item, Star
from pgpulse.query._sql import json_path, path_column
from pgpulse.routing.filters import Condition, Filter, columns_of

__all__ = ["Exposure", "Level", "Order", "Relation", "Schema", "build_plan"]

Path = tuple[str, ...]
Kind = Literal["many_to_one", "one_to_many", "one_to_one", "many_to_many"]


@dataclass(frozen=True)
class Order:
    """``ORDER BY column`` on the table at *path* (``()`` is the queried table)."""

    column: str
    desc: bool = False
    nulls_first: bool | None = None
    path: Path = ()


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
        path = json_path(name)
        head = name if path is None else path[0]
        if head not in visible:
            raise UnknownColumnError(table.name, head, visible)
        return path_column(table, name)

    def restricted(self, table: Table) -> bool:
        return self.exposure is not None and self.exposure.columns(table) is not None

    def filters(self, table: Table) -> tuple[Filter, ...]:
        return () if self.exposure is None else self.exposure.filters(table)


@dataclass(frozen=True)
class Relation:
    """How an embedded table joins its parent."""

    kind: Kind
    fk: ForeignKey
    """The foreign key; for many-to-many the junction's key to the parent."""
    target_fk: ForeignKey | None = None
    """Many-to-many only: the junction's key to the embedded table."""
    junction: Table | None = None

    @property
    def many(self) -> bool:
        return self.kind in ("one_to_many", "many_to_many")

    def spelling(self, name: str) -> str:
        """How to write an embed that picks exactly this relation."""
        if self.junction is not None:
            return f"{name}!{self.junction.name}(*)"
        if self.fk.table == self.fk.ref_table and self.kind == "many_to_one":
            return f"{name}!{self.fk.columns[0]}(*)"
        return f"{name}!{self.fk.name}(*)"


def _relations(schema: Schema, parent: Table, target: Table) -> list[Relation]:
    out: list[Relation] = []
    for fk in parent.foreign_keys:
        if fk.ref_table == target.qualified:
            out.append(Relation("many_to_one", fk))
    for fk in target.foreign_keys:
        if fk.ref_table == parent.qualified:
            unique = bool(target.primary_key) and set(fk.columns) == set(
                target.primary_key
            )
            out.append(Relation("one_to_one" if unique else "one_to_many", fk))
    for junction in schema.tables():
        if junction.qualified in (parent.qualified, target.qualified):
            continue
        keys = set(junction.primary_key)
        for to_parent in junction.foreign_keys:
            if to_parent.ref_table != parent.qualified:
                continue
            for to_target in junction.foreign_keys:
                if (
                    to_target is not to_parent
                    and to_target.ref_table == target.qualified
                    and set(to_parent.columns) | set(to_target.columns) <= keys
                ):
                    out.append(Relation("many_to_many", to_parent, to_target, junction))
    return out


def _matches(relation: Relation, hint: str | None, self_ref: bool) -> bool:
    fk = relation.fk
    if self_ref and fk.table == fk.ref_table:
        # Both directions use the same key: the column picks the row this one
        # points at, the constraint name picks the rows pointing at this one.
        if relation.kind == "many_to_one":
            return hint is None or hint in fk.columns
        return hint is None or hint == fk.name
    if hint is None:
        return True
    if relation.junction is not None:
        target_fk = relation.target_fk.name if relation.target_fk else None
        return hint in (
            relation.junction.name,
            relation.junction.qualified,
            fk.name,
            target_fk,
        )
    return hint == fk.name or hint in fk.columns


def embed_target(schema: Schema, parent: Table, embed: Embed) -> tuple[Table, Embed]:
    """The table *embed* names, and the embed with the hint that picks the
    relation: a table's name, or (as in PostgREST) a foreign key column of
    *parent* (``shipment_id(port)``) or a foreign key constraint's name in
    either direction (``documents_shipment_id_fkey(title)``)."""
    try:
        return schema.table(embed.name), embed
    except UnknownTableError:
        pass
    for fk in parent.foreign_keys:
        if embed.name == fk.name or fk.columns == (embed.name,):
            if embed.hint is None:
                embed = replace(embed, hint=fk.name)
            try:
                return schema.table(fk.ref_table), embed
            except UnknownTableError:
                # A table the caller may not read: unknown under the name
                # they wrote, never its own.
                raise UnknownTableError(embed.name, schema.names()) from None
    for table in schema.tables():
        for fk in table.foreign_keys:
            if fk.ref_table == parent.qualified and fk.name == embed.name:
                if embed.hint is None:
                    embed = replace(embed, hint=fk.name)
                return table, embed
    return schema.table(embed.name), embed  # the unknown-table error, with hints


def resolve_relation(
    schema: Schema, parent: Table, embed: Embed, target: Table | None = None
) -> Relation:
    """The one relation *embed* means from *parent*, or a clear error."""
    if target is None:
        target = schema.table(embed.name)
    candidates = _relations(schema, parent, target)
    self_ref = parent.qualified == target.qualified
    matching = [r for r in candidates if _matches(r, embed.hint, self_ref)]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        hint = f" matching hint {embed.hint!r}" if embed.hint else ""
        options = sorted({r.spelling(embed.name) for r in candidates})
        known = ", ".join(options) or _embeddable(schema, parent)
        raise RelationshipError(
            f"no foreign key links {parent.name!r} and {target.name!r}{hint}; "
            f"{parent.name!r} can embed: {known}."
        )
    options = [r.spelling(embed.name) for r in matching]
    raise RelationshipError(
        f"{embed.name!r} can be embedded from {parent.name!r} in {len(matching)} "
        f"ways; add a hint to pick one: {', '.join(options)}."
    )


def _embeddable(schema: Schema, parent: Table) -> str:
    # Only tables the caller may read: a hidden one is never named.
    visible = {t.qualified for t in schema.tables()}
    names = {
        fk.ref_table.split(".")[1]
        for fk in parent.foreign_keys
        if fk.ref_table in visible
    }
    for table in schema.tables():
        for fk in table.foreign_keys:
            if fk.ref_table == parent.qualified:
                names.add(table.name)
    return ", ".join(sorted(names)) or "nothing (it has no foreign keys)"


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
                self.schema.column(table, item.name)
                self.claim(keys, item.key, repr(item.name), table)
                level.outputs.append(item)
            else:
                target, hinted = embed_target(self.schema, table, item)
                relation = resolve_relation(self.schema, table, hinted, target)
                child = self.level(target, item.items, item)
                child.relation = relation
                self.claim(keys, item.key, f"embed {item.name!r}", table)
                level.outputs.append(child)
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
