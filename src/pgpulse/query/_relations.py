"""How an embedded table joins its parent: the foreign keys between them.

PostgREST's rules: many-to-one from a key of the parent, one-to-many (or
one-to-one when the key is unique) from a key of the child, many-to-many
through a junction table whose primary key holds both keys; a hint (a key's
column or constraint name, or the junction) picks one of several.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pgpulse.catalog import ForeignKey, Table
from pgpulse.catalog.functions import Computed
from pgpulse.exceptions import UnknownTableError
from pgpulse.query._errors import RelationshipError
from pgpulse.query._schema import Schema
from pgpulse.query._select import Embed

__all__ = ["Kind", "Relation", "embed_target", "keys_of", "resolve_relation"]

Kind = Literal["many_to_one", "one_to_many", "one_to_one", "many_to_many", "computed"]


@dataclass(frozen=True)
class Relation:
    """How an embedded table joins its parent."""

    kind: Kind
    fk: ForeignKey
    """The foreign key; for many-to-many the junction's key to the parent."""
    target_fk: ForeignKey | None = None
    """Many-to-many only: the junction's key to the embedded table."""
    junction: Table | None = None
    function: Computed | None = None
    """A computed relationship: the function returning the embedded rows."""

    @property
    def many(self) -> bool:
        if self.function is not None:
            return self.function.returns_set
        return self.kind in ("one_to_many", "many_to_many")

    def spelling(self, name: str) -> str:
        """How to write an embed that picks exactly this relation."""
        if self.junction is not None:
            return f"{name}!{self.junction.name}(*)"
        if self.fk.table == self.fk.ref_table and self.kind == "many_to_one":
            return f"{name}!{self.fk.columns[0]}(*)"
        return f"{name}!{self.fk.name}(*)"


def keys_of(schema: Schema, table: Table) -> list[ForeignKey]:
    """*table*'s foreign keys, with those followed through views (PostgREST's
    rule): a view showing a key's columns has the key, and a key to a table
    whose referenced columns a view shows also leads to the view."""
    return [fk for fk in _all_keys(schema) if fk.table == table.qualified]


def _all_keys(schema: Schema) -> list[ForeignKey]:
    catalog = schema.catalog
    cached = _KEYS.get(id(catalog))
    if cached is not None and cached[0] is catalog.tables:
        return cached[1]
    tables = list(catalog.tables.values())
    keys = [fk for t in tables for fk in t.foreign_keys]
    views = [t for t in tables if t.origins]
    # Out of a view: a key of the table it shows, on the view's columns.
    for view in views:
        shown = {origin: column for column, origin in view.origins.items()}
        for fk in list(keys):
            mapped = [shown.get((fk.table, c)) for c in fk.columns]
            if fk.table != view.qualified and all(mapped):
                keys.append(replace(fk, table=view.qualified, columns=_names(mapped)))
    # Into a view: a key to the table it shows, onto the view's columns.
    for view in views:
        shown = {origin: column for column, origin in view.origins.items()}
        for fk in list(keys):
            mapped = [shown.get((fk.ref_table, c)) for c in fk.ref_columns]
            if fk.ref_table != view.qualified and all(mapped):
                keys.append(
                    replace(fk, ref_table=view.qualified, ref_columns=_names(mapped))
                )
    _KEYS.clear()  # one catalog at a time is current
    _KEYS[id(catalog)] = (catalog.tables, keys)
    return keys


def _names(mapped: list[str | None]) -> tuple[str, ...]:
    return tuple(name for name in mapped if name is not None)


#: Keys by catalog, for the catalog's current tables (rebuilt on refresh).
_KEYS: dict[int, tuple[dict[str, Table], list[ForeignKey]]] = {}


def _relations(schema: Schema, parent: Table, target: Table) -> list[Relation]:
    out: list[Relation] = []
    for fk in keys_of(schema, parent):
        if fk.ref_table == target.qualified:
            out.append(Relation("many_to_one", fk))
    for fk in keys_of(schema, target):
        if fk.ref_table == parent.qualified:
            unique = target.is_unique(fk.columns)
            out.append(Relation("one_to_one" if unique else "one_to_many", fk))
    for junction in schema.tables():
        if junction.qualified in (parent.qualified, target.qualified):
            continue
        keys = set(junction.primary_key)
        junction_keys = keys_of(schema, junction)
        for to_parent in junction_keys:
            if to_parent.ref_table != parent.qualified:
                continue
            for to_target in junction_keys:
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
    *parent* (``shipment_id(port)``), a foreign key constraint's name in
    either direction (``documents_shipment_id_fkey(title)``), or a computed
    relationship (a function of *parent*'s row returning a table's rows)."""
    try:
        return schema.table(embed.name), embed
    except UnknownTableError:
        pass
    computed = schema.computed(parent, embed.name)
    if computed is not None and computed.ret_table is not None:
        return schema.table(computed.ret_table), embed
    for fk in keys_of(schema, parent):
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
        for fk in keys_of(schema, table):
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
    computed = schema.computed(parent, embed.name)
    if computed is not None and computed.ret_table == target.qualified:
        placeholder = ForeignKey(
            computed.name, parent.qualified, (), target.qualified, ()
        )
        return Relation("computed", placeholder, function=computed)
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
        for fk in keys_of(schema, parent)
        if fk.ref_table in visible
    }
    for table in schema.tables():
        for fk in keys_of(schema, table):
            if fk.ref_table == parent.qualified:
                names.add(table.name)
    return ", ".join(sorted(names)) or "nothing (it has no foreign keys)"
