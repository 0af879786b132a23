"""Parse PostgREST-style select strings into a small tree.

``"id, title, shipment:shipments(id, port), nodes!inner(id, checks(*))"`` becomes
fields, stars and embeds (``...shipments(port)`` spreads one into its parent).
Nothing here knows the catalog: names are checked when the tree is bound to
tables (``_plan``), so this module only decides the shape.
Whitespace outside double quotes is ignored, as supabase-js does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pgpulse.query._errors import SelectError

__all__ = ["AGGREGATES", "CASTS", "Embed", "Field", "Item", "Star", "parse_select"]

#: Casts allowed in select strings (``price::text``), spelled as written → SQL.
#: An allow-list, because a type name cannot be quoted like an identifier.
CASTS: dict[str, str] = {
    "text": "text",
    "varchar": "varchar",
    "int": "integer",
    "integer": "integer",
    "int2": "smallint",
    "smallint": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "bigint": "bigint",
    "numeric": "numeric",
    "decimal": "numeric",
    "real": "real",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "boolean": "boolean",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "interval": "interval",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "jsonb",
}

_JOIN_HINTS = ("inner", "left")
#: PostgREST's aggregate functions (``amount.sum()``, ``count()``).
AGGREGATES = ("count", "sum", "avg", "min", "max")
_DELIMITERS = set(',()!:"')


@dataclass(frozen=True)
class Star:
    """``*``: every column of the table."""


@dataclass(frozen=True)
class Field:
    """A column, optionally renamed (``alias:col``) and cast (``col::text``);
    ``name`` may be a JSON path into a json/jsonb column (``data->a->>b``)."""

    name: str
    alias: str | None = None
    cast: str | None = None
    aggregate: str | None = None
    """``amount.sum()``: an aggregate of the column (``count()`` counts rows,
    name ``*``); the level's other columns are its groups."""

    @property
    def key(self) -> str:
        """The key this column gets in each returned row: for a JSON path
        (``data->a->>b``) its last key that is not an array index, else the
        column, as PostgREST names them."""
        if self.alias:
            return self.alias
        if self.aggregate is not None:
            return self.aggregate
        if "->" not in self.name:
            return self.name
        parts = [p.lstrip(">") for p in self.name.split("->")]
        keys = [p for p in parts[1:] if not p.lstrip("-").isdigit()]
        return keys[-1] if keys else parts[0]


@dataclass(frozen=True)
class Embed:
    """A related table, ``alias:table!hint!inner(items)``."""

    name: str
    items: tuple[Item, ...]
    alias: str | None = None
    hint: str | None = None
    """Foreign key name, foreign key column or junction table that picks the path."""
    inner: bool = False
    """``!inner``: parents without a matching embedded row are dropped."""
    spread: bool = False
    """``...table(cols)``: its columns become the parent row's own."""

    @property
    def key(self) -> str:
        return self.alias or self.name


Item = Star | Field | Embed


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> SelectError:
        return SelectError(
            f"{what} at position {self.pos} of select {self.text!r}; expected e.g. "
            "'id, title, nodes(id, status)'."
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def name(self, what: str) -> str:
        self.skip_space()
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in _DELIMITERS or ch.isspace():
                break
            self.pos += 1
        found = self.text[start : self.pos]
        if not found:
            got = self.text[self.pos] if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {what}, got {got!r}")
        if found.startswith("..."):
            raise self.fail(
                "'...' spreads an embedded table without an alias, like "
                "'...shipments(port)'"
            )
        return found

    def quoted(self) -> str:
        """A double-quoted name; ``""`` inside stands for one quote."""
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == '"':
                if self.text.startswith('""', self.pos):
                    out.append('"')
                    self.pos += 2
                    continue
                self.pos += 1
                if not out:
                    raise self.fail("empty quoted name")
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.fail("unterminated '\"'")

    def items(self, nested: bool) -> tuple[Item, ...]:
        out: list[Item] = []
        if nested and self.peek(")"):
            return ()
        while True:
            out.append(self.item())
            if self.take(","):
                continue
            self.skip_space()
            if self.pos >= len(self.text) or (nested and self.peek(")")):
                return tuple(out)
            raise self.fail(f"unexpected {self.text[self.pos]!r}")

    def item(self) -> Item:
        if self.take("*"):
            return Star()
        if self.take("..."):
            spread = self.item()
            if not isinstance(spread, Embed) or spread.alias is not None:
                raise self.fail(
                    "'...' spreads an embedded table without an alias, like "
                    "'...shipments(port)'"
                )
            return replace(spread, spread=True)
        first = self.name("a column or table name")
        alias: str | None = None
        name = first
        if self.peek(":") and not self.peek("::"):
            self.take(":")
            alias, name = first, self.name(f"a column or table name after {first!r}:")
        hints: list[str] = []
        while self.take("!"):
            hints.append(self.name(f"a hint after '{name}!'"))
        aggregate = _aggregate(name)
        if aggregate is not None and self.peek("("):
            self.take("(")
            if not self.take(")"):
                raise self.fail(
                    f"aggregate '{name}()' takes no arguments inside its "
                    f"parentheses; write '{name}()'"
                )
            column, function = aggregate
            return Field(column, alias, self.cast(name), function)
        if self.take("("):
            children = self.items(nested=True)
            if not self.take(")"):
                raise self.fail(f"missing ')' after the columns of {name!r}")
            return self.embed(name, alias, hints, children)
        if hints:
            raise self.fail(
                f"hint '!{hints[0]}' only applies to embedded tables, like "
                f"'{name}!{hints[0]}(*)'"
            )
        return Field(name, alias, self.cast(name))

    def cast(self, name: str) -> str | None:
        if not self.take("::"):
            return None
        spelled = self.name(f"a type after '{name}::'")
        cast = CASTS.get(spelled.lower())
        if cast is None:
            raise self.fail(
                f"cast to {spelled!r} is not allowed; use one of "
                f"{', '.join(sorted(CASTS))}"
            )
        return cast

    def embed(
        self, name: str, alias: str | None, hints: list[str], items: tuple[Item, ...]
    ) -> Embed:
        inner = False
        fk_hint: str | None = None
        for hint in hints:
            if hint in _JOIN_HINTS:
                inner = hint == "inner"
            elif fk_hint is None:
                fk_hint = hint
            else:
                raise self.fail(
                    f"{name!r} has two relationship hints, {fk_hint!r} and {hint!r}; "
                    "give one foreign key name"
                )
        return Embed(name, items, alias, fk_hint, inner)


def _aggregate(name: str) -> tuple[str, str] | None:
    """``amount.sum`` as ``("amount", "sum")``, ``count`` as ``("*", "count")``."""
    if name == "count":
        return "*", "count"
    column, dot, function = name.rpartition(".")
    if dot and column and function in AGGREGATES:
        return column, function
    return None


def parse_select(text: str) -> tuple[Item, ...]:
    """Parse a select string; an empty string means ``*``.

    Raises :class:`SelectError` naming the position and the problem.
    """
    if not isinstance(text, str):
        raise SelectError(f"select takes a string like 'id, title', got {text!r}")
    if not text.strip():
        return (Star(),)
    parser = _Parser(text)
    items = parser.items(nested=False)
    parser.skip_space()
    if parser.pos != len(text):
        raise parser.fail(f"unexpected {text[parser.pos]!r}")
    return items
