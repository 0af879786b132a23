"""What ``execute()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """Rows as JSON-shaped Python values, like supabase-py's ``APIResponse``."""

    data: Any
    """A list of row dicts; one dict (or ``None``) after ``single()`` /
    ``maybe_single()``; ``[]`` for ``returning="minimal"`` and ``head=True``.
    Values are what PostgreSQL's JSON gives: timestamps are ISO strings, numerics
    are numbers, embedded tables are nested dicts and lists."""
    count: int | None = None
    """Total matching rows (reads) or affected rows (writes) when ``count="exact"``
    was asked for, else ``None``."""
    text: str | None = field(default=None, compare=False, repr=False)
    """``data`` as the JSON text PostgreSQL wrote, when it came as JSON: numbers
    keep every digit (Python reads a JSON number with more than ~15 significant
    digits as a float that drops some), so a server passing rows on sends this."""
