"""The select-string parser (no database needed: names are checked later)."""

from __future__ import annotations

import pytest

from pgpulse.query import SelectError
from pgpulse.query._select import Embed, Field, Star, parse_select


def test_whitespace_outside_quotes_is_ignored():
    assert parse_select("  id ,\n title  ") == (Field("id"), Field("title"))


def test_empty_select_means_star():
    assert parse_select("") == (Star(),)
    assert parse_select("   ") == (Star(),)


def test_alias_and_cast():
    assert parse_select("name:title::text") == (Field("title", "name", "text"),)
    assert parse_select("n:id::int8") == (Field("id", "n", "bigint"),)


def test_quoted_names_keep_spaces_commas_and_doubled_quotes():
    assert parse_select('"Entry Id", "a,b", "say ""hi"""') == (
        Field("Entry Id"),
        Field("a,b"),
        Field('say "hi"'),
    )


def test_embeds_with_alias_hint_and_join_type_nest():
    parsed = parse_select(
        "id, author:users!author_id!inner(name, teams(*)), tags!left()"
    )
    assert parsed == (
        Field("id"),
        Embed(
            "users",
            (Field("name"), Embed("teams", (Star(),))),
            alias="author",
            hint="author_id",
            inner=True,
        ),
        Embed("tags", (), hint=None, inner=False),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a!b!c(*)", "'a' has two relationship hints, 'b' and 'c'"),
        ('"unterminated', "unterminated '\"'"),
        ('""', "empty quoted name"),
        ("...id", "'...' spreads an embedded table without an alias"),
        ("x:...shipments(*)", "'...' spreads an embedded table without an alias"),
        ("nodes(id))", "unexpected ')' at position 9"),
        ("id:", "expected a column or table name after 'id':, got 'the end'"),
    ],
)
def test_malformed_select_strings_say_where_and_what(text, message):
    with pytest.raises(SelectError) as info:
        parse_select(text)
    assert str(info.value).startswith(message)


def test_select_takes_only_strings():
    with pytest.raises(SelectError, match="select takes a string like 'id, title'"):
        parse_select(["id"])  # type: ignore[arg-type]
