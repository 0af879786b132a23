"""Split a SQL script into statements the way psql does.

Why: the runner sends one statement at a time so that a failure names the exact
statement and line, and so that ``-- pgpulse: no-transaction`` files can run
``CREATE INDEX CONCURRENTLY`` (which refuses to share a query string with other
statements).  A semicolon only ends a statement outside quotes ('...', E'...',
"..."), dollar quotes ($$...$$, $tag$...$tag$), comments (-- and nested /* */),
parentheses, and the ``BEGIN ... END`` body of a ``CREATE FUNCTION|PROCEDURE``
written in the SQL-standard ``BEGIN ATOMIC`` form (psql's own heuristic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Statement", "split_statements"]

_DOLLAR_TAG = re.compile(
    r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$"
)
_ROUTINE_WORDS = frozenset({"create", "or", "replace", "function", "procedure"})


@dataclass(frozen=True)
class Statement:
    """One statement of a script, without its terminating semicolon."""

    text: str
    """The statement as sent to the server (leading comments dropped)."""
    offset: int
    """Character offset of the statement's first character in the script."""
    line: int
    """1-based line of the script on which the statement starts."""

    def line_of(self, position: int) -> int:
        """The script line of a 1-based character *position* within `text`.

        PostgreSQL reports error positions that way (``position`` on asyncpg
        errors), counted in characters, not bytes.
        """
        position = min(max(position, 1), len(self.text) + 1)
        return self.line + self.text.count("\n", 0, position - 1)


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ch >= "\x80"


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ch >= "\x80"


def _skip_quoted(sql: str, i: int, quote: str, *, backslash: bool = False) -> int:
    """Index just past the closing *quote*; a doubled quote is a literal one."""
    n = len(sql)
    while i < n:
        ch = sql[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _skip_block_comment(sql: str, i: int) -> int:
    """Index just past a ``/* ... */`` comment starting at *i*; they nest."""
    depth = 0
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


class _Splitter:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.out: list[Statement] = []
        self.line = 1
        self.counted = 0  # newlines are counted in sql[:counted]
        self._reset()

    def _reset(self) -> None:
        self.start: int | None = None
        self.parens = 0
        self.begin_depth = 0
        self.head: list[str] = []

    def _emit(self, end: int) -> None:
        if self.start is not None:
            text = self.sql[self.start : end].rstrip()
            self.line += self.sql.count("\n", self.counted, self.start)
            self.counted = self.start
            self.out.append(Statement(text, self.start, self.line))
        self._reset()

    def _is_routine(self) -> bool:
        head = self.head
        if len(head) < 2 or head[0] != "create":
            return False
        if head[1] in ("function", "procedure"):
            return True
        return (
            len(head) >= 4
            and head[1:3] == ["or", "replace"]
            and head[3] in ("function", "procedure")
        )

    def _word(self, word: str) -> None:
        word = word.lower()
        if len(self.head) < 4:
            self.head.append(word if word in _ROUTINE_WORDS else "")
        if self.parens or not self._is_routine():
            return
        if word == "begin":
            self.begin_depth += 1
        elif word == "case" and self.begin_depth:
            self.begin_depth += 1
        elif word == "end" and self.begin_depth:
            self.begin_depth -= 1

    def run(self) -> list[Statement]:
        sql = self.sql
        n = len(sql)
        i = 0
        while i < n:
            ch = sql[i]
            if ch.isspace():
                i += 1
                continue
            if sql.startswith("--", i):
                newline = sql.find("\n", i)
                i = n if newline < 0 else newline + 1
                continue
            if sql.startswith("/*", i):
                i = _skip_block_comment(sql, i)
                continue
            if ch == ";" and not self.parens and not self.begin_depth:
                self._emit(i)
                i += 1
                continue
            if self.start is None:
                self.start = i
            if ch == "'":
                i = _skip_quoted(sql, i + 1, "'")
            elif ch == '"':
                i = _skip_quoted(sql, i + 1, '"')
            elif ch == "$":
                match = _DOLLAR_TAG.match(sql, i)
                if match is None:  # a parameter such as $1
                    i += 1
                else:
                    close = sql.find(match[0], match.end())
                    i = n if close < 0 else close + len(match[0])
            elif _is_ident_start(ch):
                j = i + 1
                while j < n and _is_ident_char(sql[j]):
                    j += 1
                word = sql[i:j]
                if word in ("e", "E") and j < n and sql[j] == "'":
                    i = _skip_quoted(sql, j + 1, "'", backslash=True)
                else:
                    self._word(word)
                    i = j
            else:
                if ch == "(":
                    self.parens += 1
                elif ch == ")" and self.parens:
                    self.parens -= 1
                i += 1
        self._emit(n)
        return self.out


def split_statements(sql: str) -> list[Statement]:
    """Statements of *sql* in order; comment-only and empty parts are dropped.

    An unterminated quote or comment swallows the rest of the script into the
    last statement, so the server reports it (with a position) rather than us
    guessing.
    """
    return _Splitter(sql).run()
