"""Building grammar conditions from Python values (used by the query builder)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from pgpulse.exceptions import FilterError
from pgpulse.routing.filter_values import condition, to_literal
from pgpulse.routing.filters import Condition, parse_filter


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("x", "x"),
        (42, "42"),
        (-1.5, "-1.5"),
        (Decimal("12.50"), "12.50"),
        (True, "true"),
        (False, "false"),
        (dt.date(2024, 1, 2), "2024-01-02"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2024-01-02T03:04:05+00:00"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05+00:00"),
        (dt.time(8, 30), "08:30:00"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"\x01\xff", "\\x01ff"),
        ({"a": [1, None]}, '{"a":[1,null]}'),
    ],
)
def test_python_values_are_spelled_as_grammar_literals(value, literal):
    assert to_literal(value) == literal


def test_naive_datetimes_are_utc_like_everywhere_else_in_pgpulse():
    assert to_literal(dt.datetime(2024, 1, 1)).endswith("+00:00")


def test_none_is_refused_with_a_pointer_to_is():
    with pytest.raises(FilterError, match=r"use is_\(column, None\)"):
        to_literal(None)


def test_unsupported_values_name_their_type():
    with pytest.raises(FilterError, match=r"cannot use \{1\} \(a set\)"):
        to_literal({1})


@pytest.mark.parametrize(
    ("built", "parsed"),
    [
        (condition("id", "eq", 42), ("id", "eq.42")),
        (condition("status", "in", ["a", "b,c"]), ("status", 'in.(a,"b,c")')),
        (condition("deleted_at", "is", None), ("deleted_at", "is.null")),
        (condition("flag", "is", True), ("flag", "is.true")),
        (condition("tags", "cs", ["a", "b"]), ("tags", "cs.(a,b)")),
        (condition("id", "in", [1, 2], negate=True), ("id", "not.in.(1,2)")),
        (condition("title", "like", "a*"), ("title", "like.a*")),
    ],
)
def test_built_conditions_equal_parsed_ones(built, parsed):
    assert built == parse_filter(*parsed)


def test_contains_takes_a_dict_as_json_text_and_a_string_as_raw_literal():
    assert condition("meta", "cs", {"k": 1}) == Condition("meta", "cs", '{"k":1}')
    assert condition("span", "cs", "[1,5)") == Condition("span", "cs", "[1,5)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "eq", 1), "expected a column name, got ''"),
        (("id", "equals", 1), "unknown operator 'equals'; use one of eq, neq,"),
        (("id", "in", "1,2"), "in_ takes a list of values for column 'id', got '1,2'"),
        (("id", "in", 5), "in_ takes a list of values for column 'id', got 5"),
        (("id", "is", 0), "is_ takes None, True, False or 'unknown' for column 'id'"),
        (("id", "cs", 5), "contains/contained_by take a list, a dict or a literal"),
    ],
)
def test_bad_conditions_say_what_was_expected(args, message):
    with pytest.raises(FilterError) as info:
        condition(*args)
    assert str(info.value).startswith(message)
