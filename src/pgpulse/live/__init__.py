"""Live queries: the exact rows of a query, as a snapshot and then patches,
shared by every client who asks the same (see :mod:`pgpulse.live.shared`)."""

from pgpulse.live.query import LiveQuery
from pgpulse.live.registry import LiveQueries
from pgpulse.live.shared import SharedQuery

__all__ = ["LiveQueries", "LiveQuery", "SharedQuery"]
