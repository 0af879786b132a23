"""A batch of decoded changes on its way into the log, and the statements
that write it (the wal capture source).

Why apart from :mod:`pgpulse.capture.wal_log`: that module decides what each
decoded message becomes and when a batch is written; this one is how a batch
travels: one list per log column, sent as one separated text per column, in
runs of one table written one way (the table's decode function, or JSON the
decoder built: :mod:`pgpulse.capture.typed_rows`).
"""

from __future__ import annotations

__all__ = [
    "AT_ONCE_SQL",
    "COMMIT_SQL",
    "INSERT_SQL",
    "NO_ROW",
    "SEPARATOR",
    "TYPED_AT_ONCE_SQL",
    "TYPED_SQL",
    "WAKE_SQL",
    "Pending",
]

#: Between the values of one column of a run of changes ($2-$5 of the insert).
#: It never occurs inside them: operations are fixed words, commit times digits,
#: and JSON text holds control characters only escaped (orjson writes them so;
#: PostgreSQL's json input rejects them raw).  One text per column instead of
#: an array: a bound array costs the client several type checks per element.
SEPARATOR = "\x1e"

#: Stands for "no row" (an INSERT's old, a DELETE's new): every row is a JSON
#: object, so it never stands for one.
NO_ROW = "n"

INSERT_SQL = """
insert into pgpulse.changes (xid, ts, tbl, op, pk, "row", old)
select pg_current_xact_id(), d.ts, $1, d.op, d.pk, d."row", d.old
from pgpulse.{fn}(
    string_to_array($2::text, E'\\x1e'),
    string_to_array($3::text, E'\\x1e', 'n')::json[],
    string_to_array($4::text, E'\\x1e', 'n')::json[],
    string_to_array($5::text, E'\\x1e')::bigint[]) d
"""

# Rows whose JSON the decoder built (pgpulse.capture.typed_rows): straight
# into jsonb, with the logged key ($6, 'keys' tables) as the decoder built it.
TYPED_SQL = """
insert into pgpulse.changes (xid, ts, tbl, op, pk, "row", old)
select pg_current_xact_id(),
       '2000-01-01 00:00:00+00'::timestamptz + u.us * interval '1 microsecond',
       $1, u.op, u.pk::jsonb, u.nj::jsonb, u.oj::jsonb
from unnest(string_to_array($2::text, E'\\x1e'),
            string_to_array($3::text, E'\\x1e', 'n'),
            string_to_array($4::text, E'\\x1e', 'n'),
            string_to_array($5::text, E'\\x1e')::bigint[],
            string_to_array($6::text, E'\\x1e', 'n'))
     with ordinality as u(op, nj, oj, us, pk, i)
order by u.i
"""


def _move_sql(param: int) -> str:
    """Record the end of the last logged transaction (bound as ``$param``)."""
    return f"update pgpulse.state set decoded_lsn = ${param}::text::pg_lsn"


COMMIT_SQL = _move_sql(1)

_WANTS_WAKE = "pg_sequence_last_value('pgpulse.wakeups') > 0"

WAKE_SQL = f"select pg_notify('pgpulse', '') where {_WANTS_WAKE}"


def _at_once_sql(insert: str, lsn_param: int) -> str:
    """*insert*, COMMIT_SQL and WAKE_SQL as one atomic statement (one round
    trip), the position bound as ``$lsn_param``."""
    return f"""
with logged as ({insert} returning 1),
moved as ({_move_sql(lsn_param)} returning 1)
select pg_notify('pgpulse', '') from moved
where {_WANTS_WAKE} and exists (select from logged)
"""


AT_ONCE_SQL = _at_once_sql(INSERT_SQL, 6)
TYPED_AT_ONCE_SQL = _at_once_sql(TYPED_SQL, 7)


class Pending:
    """Changes decoded but not yet logged, one list per log column (one
    object per change would cost more than the change's own JSON)."""

    __slots__ = ("news", "olds", "ops", "pks", "relids", "tss", "typed")

    def __init__(self) -> None:
        self.relids: list[int] = []
        self.typed: list[bool] = []
        """Whether the decoder built the JSON (else the decode function does)."""
        self.ops: list[str] = []
        self.news: list[str] = []
        """Row JSON, or :data:`NO_ROW`."""
        self.olds: list[str] = []
        self.tss: list[str] = []
        """Commit times: microseconds since 2000-01-01 UTC, as in the WAL."""
        self.pks: list[str] = []
        """The logged key of typed changes to 'keys' tables, else :data:`NO_ROW`."""

    def __len__(self) -> int:
        return len(self.relids)

    def add(
        self,
        relid: int,
        op: str,
        new: str,
        old: str,
        ts: str,
        pk: str = NO_ROW,
        typed: bool = False,
    ) -> None:
        self.relids.append(relid)
        self.typed.append(typed)
        self.ops.append(op)
        self.news.append(new)
        self.olds.append(old)
        self.tss.append(ts)
        self.pks.append(pk)

    def runs(self) -> list[tuple[int, bool, int, int]]:
        """(relid, typed, start, end) of each run of changes to one table
        written one way, in order."""
        relids, typed = self.relids, self.typed
        n = len(relids)
        if relids.count(relids[0]) == n and typed.count(typed[0]) == n:
            return [(relids[0], typed[0], 0, n)]
        runs = []
        start = 0
        for i in range(1, n + 1):
            if i == n or relids[i] != relids[start] or typed[i] != typed[start]:
                runs.append((relids[start], typed[start], start, i))
                start = i
        return runs

    def arguments(
        self, name: str, start: int, end: int, typed: bool = False
    ) -> tuple[str, ...]:
        """The insert's arguments for changes *start* to *end*: the table's
        name, then each column's values joined by :data:`SEPARATOR` (ops,
        rows, old rows, commit times, and for typed changes the keys)."""
        lists = [self.ops, self.news, self.olds, self.tss]
        if typed:
            lists.append(self.pks)
        columns = tuple(SEPARATOR.join(values[start:end]) for values in lists)
        for column in columns:
            if column.count(SEPARATOR) != end - start - 1:
                # Cannot happen (see SEPARATOR); never log misaligned rows.
                raise ValueError(
                    f"a decoded change to {name} contains the separator "
                    f"{SEPARATOR!r} outside JSON escapes; it cannot be logged"
                )
        return (name, *columns)
