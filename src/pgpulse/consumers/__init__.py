"""Consumer groups: server-side workers fed from the change log, nothing lost.

A group reads some watched tables (optionally filtered) from a durable
position stored in the database; its workers share the work by row key
(:mod:`.membership`) and acknowledge batches (:mod:`.batch`), at least once,
or exactly once together with their own writes.  Sinks (:mod:`.sinks`) run a
command or call a webhook per batch; :mod:`.cache` invalidates Redis keys.
"""

from __future__ import annotations

from pgpulse.consumers.batch import Batch, LeaseLost
from pgpulse.consumers.consumer import Consumer, consumer
from pgpulse.consumers.groups import GroupSpec

__all__ = ["Batch", "Consumer", "GroupSpec", "LeaseLost", "consumer"]
