"""The statement splitter: semicolons end statements only where psql would end them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgpulse.migrate import split_statements


def texts(sql: str) -> list[str]:
    return [s.text for s in split_statements(sql)]


def test_semicolons_inside_quotes_and_identifiers_do_not_split():
    sql = """select 'a;b''c'; select "we;ird""x" from t; select E'it\\'s;'"""
    assert texts(sql) == [
        "select 'a;b''c'",
        'select "we;ird""x" from t',
        "select E'it\\'s;'",
    ]


def test_plain_strings_do_not_treat_backslash_as_an_escape():
    assert texts("select 'c:\\'; select 2") == ["select 'c:\\'", "select 2"]


def test_dollar_quotes_with_and_without_tags_hide_semicolons():
    sql = (
        "do $$ begin perform 1; end $$;\n"
        "create function f() returns text as $body$ select 'x;' $$ ; $body$ "
        "language sql;\nselect $1"
    )
    assert texts(sql) == [
        "do $$ begin perform 1; end $$",
        "create function f() returns text as $body$ select 'x;' $$ ; $body$ "
        "language sql",
        "select $1",
    ]


def test_dollar_inside_an_identifier_does_not_start_a_dollar_quote():
    assert texts("select a$b$ from t; select 2") == ["select a$b$ from t", "select 2"]


def test_comments_hide_semicolons_and_block_comments_nest():
    sql = "select 1 -- not; here\n; /* a; /* b; */ c; */ select 2;"
    assert texts(sql) == ["select 1 -- not; here", "select 2"]


def test_leading_comments_are_dropped_and_comment_only_parts_vanish():
    sql = "-- header\n/* note */\ncreate table t (id int);\n-- trailing\n;;"
    assert texts(sql) == ["create table t (id int)"]
    assert split_statements("-- nothing\n/* at all */\n") == []


def test_semicolons_inside_parentheses_do_not_split():
    sql = "create rule r as on insert to a do also (insert into b values (1); "
    sql += "insert into c values (2)); select 3"
    assert len(texts(sql)) == 2


def test_begin_atomic_function_bodies_stay_one_statement():
    sql = (
        "create or replace function f(x int) returns int language sql\n"
        "begin atomic\n"
        "  select case when x > 0 then 1 else 0 end;\n"
        "  select 2;\n"
        "end;\n"
        "select f(1);"
    )
    statements = texts(sql)
    assert len(statements) == 2
    assert statements[0].endswith("end")
    assert statements[1] == "select f(1)"


def test_begin_and_end_outside_a_routine_still_split():
    assert texts("begin; select 1; end;") == ["begin", "select 1", "end"]


def test_last_statement_may_omit_its_semicolon():
    assert texts("select 1;\nselect 2  \n") == ["select 1", "select 2"]


def test_unterminated_quote_swallows_the_rest_for_the_server_to_report():
    assert texts("select 'oops; select 2;") == ["select 'oops; select 2;"]


def test_statements_know_their_start_line_and_the_line_of_a_position():
    sql = "-- one\n\ncreate table t (\n  id int,\n  bad\n);\nselect 1;"
    first, second = split_statements(sql)
    assert (first.line, second.line) == (3, 7)
    assert first.line_of(first.text.index("bad") + 1) == 5
    assert first.line_of(1) == 3
    assert sql[first.offset :].startswith("create table")


FRAGMENTS = [
    "x",
    "'a;b'",
    "'it''s'",
    "E'\\';'",
    '"c;d"',
    "$$ ; $$",
    "$t$ $$; $t$",
    "/* ; /* ; */ */",
    "(1; 2)",
    "-- c;\n",
    "\n",
    "1.5",
    "a$b",
]


@given(
    st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=6), min_size=1, max_size=6)
)
def test_splitting_joined_statements_gives_them_back(parts: list[list[str]]):
    statements = [("select " + " ".join(frags)).rstrip() for frags in parts]
    script = "".join(f"{s}\n;\n" for s in statements)
    assert texts(script) == statements
