"""Values from the change log as keys that compare exactly as PostgreSQL compares.

Why: the stream decides in Python which rows a filter selects, and it must select
exactly what the same filter selects in SQL.  A row in the log is PostgreSQL's own
JSON (``to_jsonb``), and a filter's literal is turned into that same JSON by
PostgreSQL when the subscription is made (``to_jsonb($1::text::type)``), so both
sides go through one key function per column type, with PostgreSQL's rules:

* ``numeric``: exact decimals (never floats), ``NaN`` equal to itself and above
  everything, ``Infinity``;
* ``float8``/``float4``: IEEE values (``float4`` rounded to single precision the
  way ``float4in`` does), ``NaN`` equal to itself and above everything, ``-0 = 0``;
* ``date``/``timestamp``/``timestamptz``: days or microseconds on the proleptic
  Gregorian calendar, any year (BC, past 9999), ``±infinity``, offsets with
  seconds (LMT), an instant for ``timestamptz`` whatever the writer's time zone;
* ``char(n)``: trailing spaces do not count;
* text: code point order, only where the column's collation sorts that way.

Types that cannot be compared exactly here have no key: their filters are
evaluated by PostgreSQL (:mod:`pgpulse.routing.db_filters`).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeAlias

import orjson

__all__ = [
    "KeyFunction",
    "RowKeys",
    "key_function",
    "loads_exact",
]

KeyFunction: TypeAlias = Callable[[Any], Any]

_NAN = (1, 0)
"""NaN sorts above every number and equals itself (numeric and float)."""

_INFINITIES = {"Infinity": math.inf, "-Infinity": -math.inf}


def loads_exact(text: str) -> Any:
    """Parse PostgreSQL's JSON keeping every number exact.

    orjson (fast) reads non-integer numbers as floats and integers beyond 64
    bits as floats (``numeric`` 9.99 is not the float 9.99) and fails on
    numbers past the double range; only then is the text parsed again with
    decimals (slower, exact).
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _loads_decimal(text)
    if isinstance(value, dict):
        for item in value.values():
            if type(item) is float:
                return _loads_decimal(text)
    return value


def _loads_decimal(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an integer, got {value!r}")


def _numeric(value: Any) -> tuple[int, Decimal | int]:
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return (0, value) if value == value else _NAN
    if value == "NaN":
        return _NAN
    if value in _INFINITIES:
        return (0, Decimal(value))
    raise ValueError(f"expected a number, got {value!r}")


def _float8_value(value: Any) -> float:
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return float(value)
    if value == "NaN":
        return math.nan
    if value in _INFINITIES:
        return _INFINITIES[value]
    raise ValueError(f"expected a number, got {value!r}")


def _float8(value: Any) -> tuple[int, float]:
    number = _float8_value(value)
    return _NAN if number != number else (0, number)


def _float32_bits(number: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", number))[0])


def _float32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _nearest_float32(exact: Decimal) -> float:
    """The single-precision value nearest to *exact*, ties to even (``strtof``)."""
    guess = _float32_from_bits(_float32_bits(float(exact)))
    if math.isinf(guess):
        return guess
    bits = _float32_bits(guess)
    candidates = [guess]
    for step in (-1, 1):
        neighbour = bits + step
        if 0 <= neighbour & 0x7FFFFFFF < 0x7F800000:
            candidates.append(_float32_from_bits(neighbour))
    best = min(
        candidates,
        key=lambda c: (abs(Decimal(c) - exact), _float32_bits(c) & 1),
    )
    return best


def _float4(value: Any) -> tuple[int, float]:
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        exact = Decimal(value)
        return (0, 0.0) if exact == 0 else (0, _nearest_float32(exact))
    return _float8(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


def _padded(value: Any) -> str:
    """``char(n)`` compares without its trailing spaces."""
    return _string(value).rstrip(" ")


def _uuid(value: Any) -> str:
    # PostgreSQL writes uuids in lower case with dashes; byte order is the
    # order of that text.
    text = _string(value)
    if len(text) != 36:
        raise ValueError(f"expected a uuid, got {value!r}")
    return text


_DATE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)( BC)?$")
_TIMESTAMP = re.compile(
    r"^(\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?$"
)
_MICROS_PER_DAY = 86_400_000_000


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 on the proleptic Gregorian calendar (any year)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _astronomical(year: int, bc: bool) -> int:
    """1 BC is year 0, 2 BC is year -1."""
    return 1 - year if bc else year


def _infinity(value: Any) -> float | None:
    if value == "infinity":
        return math.inf
    if value == "-infinity":
        return -math.inf
    return None


def _date(value: Any) -> int | float:
    infinite = _infinity(value)
    if infinite is not None:
        return infinite
    match = _DATE.match(_string(value))
    if match is None:
        raise ValueError(f"expected a date, got {value!r}")
    year = _astronomical(int(match[1]), match[4] is not None)
    return _days_from_civil(year, int(match[2]), int(match[3]))


def _timestamp_micros(value: Any, zoned: bool) -> int | float:
    infinite = _infinity(value)
    if infinite is not None:
        return infinite
    match = _TIMESTAMP.match(_string(value))
    if match is None or (match[8] is None) == zoned:
        kind = "timestamp with time zone" if zoned else "timestamp"
        raise ValueError(f"expected a {kind}, got {value!r}")
    year = _astronomical(int(match[1]), match[12] is not None)
    days = _days_from_civil(year, int(match[2]), int(match[3]))
    seconds = int(match[4]) * 3600 + int(match[5]) * 60 + int(match[6])
    micros = int((match[7] or "").ljust(6, "0"))
    total = days * _MICROS_PER_DAY + seconds * 1_000_000 + micros
    if zoned:
        offset = int(match[9]) * 3600 + int(match[10] or 0) * 60 + int(match[11] or 0)
        total -= (offset if match[8] == "+" else -offset) * 1_000_000
    return total


def _timestamp(value: Any) -> int | float:
    return _timestamp_micros(value, zoned=False)


def _timestamptz(value: Any) -> int | float:
    return _timestamp_micros(value, zoned=True)


_KEYS: dict[str, KeyFunction] = {
    "int2": _integer,
    "int4": _integer,
    "int8": _integer,
    "oid": _integer,
    "numeric": _numeric,
    "float8": _float8,
    "float4": _float4,
    "bool": _boolean,
    "date": _date,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "uuid": _uuid,
    "text": _string,
    "varchar": _string,
    "name": _string,
    "bpchar": _padded,
}

#: Types compared as text (``like`` applies; order depends on the collation).
TEXT_TYPES = frozenset({"text", "varchar", "name", "bpchar"})


def key_function(base_type: str, category: str) -> KeyFunction | None:
    """The key of a JSON value of this type, or None when it has none here.

    Enums compare by label for equality only (their order is the order of
    declaration, which ``ALTER TYPE ... ADD VALUE`` can change at any time).
    """
    found = _KEYS.get(base_type)
    if found is not None:
        return found
    if category == "E":
        return _string
    return None


class RowKeys:
    """One side (new or old) of a change, with each column's key computed once.

    Many subscribers filter on the same columns: the key of a timestamp is
    parsed once per change, not once per subscriber.  The row is parsed with
    orjson; only a column read as a float (a non-integer, or an integer past
    64 bits) makes it parse the row again exactly, so filters on integers and
    text never pay for decimals.
    """

    __slots__ = ("_exact", "_keys", "_text", "values")

    def __init__(self, text: str) -> None:
        self._text = text
        self._exact: dict[str, Any] | None = None
        try:
            self.values: dict[str, Any] = orjson.loads(text)
        except orjson.JSONDecodeError:  # a number past the double range
            self.values = self._exact = _loads_decimal(text)
        self._keys: dict[str, Any] = {}

    def raw(self, column: str) -> Any:
        """The column's JSON value, numbers exact."""
        value = self.values.get(column)
        if type(value) is float:
            if self._exact is None:
                self._exact = _loads_decimal(self._text)
            value = self._exact.get(column)
        return value

    def key(self, column: str, function: KeyFunction) -> Any:
        """The key of *column* (``None`` for SQL NULL); raises ``ValueError``
        for a value the key function cannot read (a poison value)."""
        try:
            return self._keys[column]
        except KeyError:
            pass
        raw = self.raw(column)
        key = None if raw is None else function(raw)
        self._keys[column] = key
        return key
