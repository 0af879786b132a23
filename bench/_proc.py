"""Process and machine counters read from ``/proc`` (Linux only).

Why not psutil: it is not a pgpulse dependency, and the few numbers the
benchmark needs (CPU seconds of a process tree, RSS, machine-wide busy time) are
one ``/proc`` read each.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MachineCpu",
    "children",
    "cpu_seconds",
    "pipe_reader",
    "raise_nofile",
    "rss_bytes",
    "server_cpu_seconds",
    "tree",
]

_TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit; returns it.

    Children inherit the limit, so call this before spawning servers and clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Direct children of *pid*."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """*pid* and all its descendants that are alive now."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen += [c for c in children(seen[i]) if c not in seen]
        i += 1
    return seen


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by *pids* (live processes only)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # utime and stime are fields 14 and 15 of stat (index 11, 12 here).
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds of a forking server (PostgreSQL's postmaster *pid*) and every
    child it ever had: live children now, plus the exited ones the postmaster
    has reaped (its cutime/cstime), so backends that come and go count."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime: stat fields 14-17 (index 11-14 here).
    own = sum(int(x) for x in fields[11:15]) / _TICK
    return own + cpu_seconds(children(pid))


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of *pids*, summed."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


@dataclass
class MachineCpu:
    """Machine-wide busy and total CPU time (all cores), from ``/proc/stat``."""

    busy: float
    total: float

    @classmethod
    def now(cls) -> MachineCpu:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])
        return cls((total - idle) / _TICK, total / _TICK)

    def busy_percent_since(self, before: MachineCpu) -> float:
        """Busy share of all cores between *before* and this sample (0-100)."""
        total = self.total - before.total
        return 100.0 * (self.busy - before.busy) / total if total > 0 else 0.0


def pipe_reader(
    pipe: Any, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Any]
) -> None:
    """Feed messages from a multiprocessing pipe into *inbox* from a thread.

    Why a thread: ``loop.add_reader`` makes the pipe non-blocking, and a large
    reply then fails half-way with EAGAIN.
    """

    def read() -> None:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                message = ("exit", {})
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if (
                message[0] == "exit"
                if isinstance(message, tuple)
                else message == "exit"
            ):
                return

    threading.Thread(target=read, daemon=True).start()
