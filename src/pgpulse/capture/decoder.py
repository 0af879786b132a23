"""The wal capture source: committed changes decoded from the WAL into the log.

Why: a trigger writes every changed row a second time inside the writer's
transaction, which is what captured writes cost (``docs/benchmarks.md``).  Tables
watched with ``source="wal"`` have no trigger: PostgreSQL already wrote their
changes to the WAL, and this decoder streams them from a logical replication
slot (plugin ``pgoutput``) and appends them to ``pgpulse.changes`` in batches,
off the writers' commit path.  From the log on, everything is as with triggers:
listeners wake up, read by snapshot cursor, resume by event id.

Exactly once: the decoder records the end of the last decoded transaction in
``pgpulse.state.decoded_lsn`` in the same transaction as the log rows, and
confirms that position to the slot only after commit.  After a crash the slot
replays from its confirmed position and transactions already logged are
skipped.  One process decodes at a time (a slot serves one connection); the
decoders of other gateway processes wait and take over when it goes away.

What decoded messages become in the log: :mod:`pgpulse.capture.wal_log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from pgpulse.backoff import Backoff
from pgpulse.capture.pgoutput import parse
from pgpulse.capture.wal import PUBLICATION
from pgpulse.capture.wal_log import WalLog, lsn_text

__all__ = ["Decoder"]

log = logging.getLogger("pgpulse.capture.decoder")

_SLOT_SQL = """
select slot_name::text from pg_replication_slots
where to_regproc('pgpulse.slot_name') is not null and slot_name = pgpulse.slot_name()
"""


class SlotBusy(Exception):
    """Another process is decoding this database's slot."""


class Decoder:
    """Streams this database's slot into the log while any table uses ``wal``.

    One session: :meth:`_stream` reads messages as they come (never blocking the
    event loop) and hands them to a :class:`WalLog`; between decoded
    transactions it logs what is pending and confirms it to the slot."""

    def __init__(
        self,
        dsn: str,
        *,
        pool: Any = None,
        application_name: str = "pgpulse-decoder",
        check_interval: float = 5.0,
        recheck_interval: float = 60.0,
        chunk: int = 5000,
        status_interval: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.pool = pool
        """Where to look for the slot while not decoding (else a short connection)."""
        self.application_name = application_name
        self.check_interval = check_interval
        """Seconds between attempts while another process holds the slot."""
        self.recheck_interval = recheck_interval
        """Seconds between looks for a slot while there is none (besides
        :meth:`wake`, which ``capture.watch(..., source="wal")`` triggers)."""
        self._look = asyncio.Event()
        self.chunk = chunk
        self.status_interval = status_interval
        self.decoding = asyncio.Event()
        """Set while this process holds the slot (tests and status)."""
        self._wal_log: WalLog | None = None
        self._confirmed = 0
        self._idle_confirmed_at = 0.0
        self._retire_checked_at = 0.0
        self._retire_lsn: int | None = None
        self._writer: Any = None
        self._warned_missing_driver = False

    @property
    def decoded_lsn(self) -> int:
        """End of the last transaction logged (by the latest session)."""
        return self._wal_log.decoded_lsn if self._wal_log is not None else 0

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        """Decode whenever this database has a slot; retry on any failure."""
        backoff = Backoff(initial=0.2, maximum=10.0)
        while True:
            try:
                self._look.clear()
                slot = await self._slot()
                if slot is None:
                    # An idle gateway stays quiet: look again when told to.
                    # (asyncio.timeout: wait_for on 3.11 can swallow a cancel)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.recheck_interval):
                            await self._look.wait()
                    continue
                await self._session(slot)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except SlotBusy:
                await asyncio.sleep(self.check_interval)
            except Exception as exc:
                delay = backoff.next()
                log.warning(
                    "wal decoder: %s; reconnecting in %.1f s", _describe(exc), delay
                )
                await asyncio.sleep(delay)
            finally:
                self.decoding.clear()
                await self._close_writer()

    def wake(self, message: str = "wal") -> None:
        """Look for the slot now (a table was just watched through the WAL)."""
        if message == "wal":
            self._look.set()

    async def _slot(self) -> str | None:
        """The slot to decode, once pgpulse has created it; ``None`` until then."""
        if self.pool is not None:
            slot = await self.pool.fetchval(_SLOT_SQL)
        else:
            conn = await asyncpg.connect(self.dsn)
            try:
                slot = await conn.fetchval(_SLOT_SQL)
            finally:
                await conn.close()
        return str(slot) if slot is not None else None

    async def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                await asyncio.wait_for(writer.close(), 2.0)
            except Exception:  # a dead connection: nothing left to release
                writer.terminate()

    # -- one replication session -----------------------------------------------

    async def _session(self, slot: str) -> None:
        try:
            import psycopg2
            import psycopg2.errors
            import psycopg2.extras
        except ImportError:
            if not self._warned_missing_driver:
                log.error(
                    "tables are watched with source 'wal' but the wal decoder needs "
                    "psycopg2: pip install 'pgpulse[wal]'; their changes wait in the "
                    "replication slot %s until then",
                    slot,
                )
                self._warned_missing_driver = True
            raise SlotBusy() from None

        def connect() -> Any:
            conn = psycopg2.connect(
                self.dsn,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                application_name=self.application_name,
            )
            cur = conn.cursor()
            try:
                cur.start_replication(
                    slot_name=slot,
                    decode=False,
                    options={"proto_version": "1", "publication_names": PUBLICATION},
                )
            except psycopg2.errors.ObjectInUse as exc:
                conn.close()
                raise SlotBusy() from exc
            except Exception:
                conn.close()
                raise
            return conn, cur

        # The slot first: a standby (slot busy) opens nothing else.
        conn, cur = await asyncio.to_thread(connect)
        try:
            self._writer = await asyncpg.connect(
                self.dsn,
                server_settings={
                    "application_name": self.application_name,
                    # The same few log writes, thousands of times: plan them
                    # once, not per batch (custom plans re-plan every time).
                    "plan_cache_mode": "force_generic_plan",
                    # Small writes; compiling them would cost more than running.
                    "jit": "off",
                },
            )
            wal_log = self._wal_log = WalLog(self._writer, self.chunk)
            await wal_log.start()
            log.info(
                "wal decoder: streaming slot %s from %s",
                slot,
                lsn_text(self.decoded_lsn),
            )
            self.decoding.set()
            self._confirmed = 0
            self._retire_lsn = None
            try:
                retired = await self._stream(cur, conn.fileno(), wal_log)
            finally:
                await wal_log.rollback()
        finally:
            conn.close()
        if retired:
            await self._drop_slot(slot)

    async def _stream(self, cur: Any, fd: int, wal_log: WalLog) -> bool:
        """Decode until cancelled; ``True`` when the slot is to be retired."""
        loop = asyncio.get_running_loop()
        while True:
            drained = False
            for _ in range(self.chunk):
                message = cur.read_message()
                if message is None:
                    drained = True
                    break
                decoded = parse(message.payload)
                if not wal_log.take(decoded):  # needs the database
                    await wal_log.handle(decoded)
                elif wal_log.full:
                    await wal_log.write_chunk()
            if not wal_log.in_txn:
                if await wal_log.commit():
                    self._confirm(cur, wal_log.decoded_lsn)
                if drained and not wal_log.writing:
                    # Everything sent so far is logged: the slot may move on
                    # past the WAL of tables nobody watches (at most once a
                    # second: the server reports its position often).
                    now = loop.time()
                    if now - self._idle_confirmed_at >= 1.0:
                        self._idle_confirmed_at = now
                        self._confirm(cur, max(cur.wal_end, wal_log.decoded_lsn))
                    if await self._retiring(cur, now, wal_log):
                        return True
            if drained:
                # read_message() sends the confirmed position every
                # status_interval and answers the server's keepalives.
                # Retiring: look again soon (the server's answer may come
                # before the next look is due).
                wait = self.status_interval if self._retire_lsn is None else 0.5
                await _readable(loop, fd, wait)

    async def _retiring(self, cur: Any, now: float, wal_log: WalLog) -> bool:
        """Whether no table uses the WAL any more and everything written until
        the last one left has been decoded (then the slot may go: see
        :func:`pgpulse.capture.wal.disable_wal_if_unused`)."""
        if now - self._retire_checked_at < min(self.check_interval, 1.0):
            return False
        self._retire_checked_at = now
        if await wal_log.wal_tables():
            self._retire_lsn = None
            return False
        if self._retire_lsn is None:
            self._retire_lsn = await wal_log.current_lsn()
        if cur.wal_end >= self._retire_lsn:
            return True
        cur.send_feedback(reply=True)  # the server answers with its position
        return False

    async def _drop_slot(self, slot: str) -> None:
        for _ in range(50):
            try:
                await self._writer.execute("select pg_drop_replication_slot($1)", slot)
                log.info(
                    "wal decoder: no table uses the WAL any more: dropped %s", slot
                )
                return
            except asyncpg.ObjectInUseError:
                await asyncio.sleep(0.1)  # our walsender is still exiting
            except asyncpg.UndefinedObjectError:
                return

    def _confirm(self, cur: Any, lsn: int) -> None:
        """Let the slot forget the WAL before *lsn* (everything there is logged).

        Sent at once (one small message per logged batch), so the server can
        recycle WAL promptly and a takeover replays little."""
        if lsn > self._confirmed:
            cur.send_feedback(flush_lsn=lsn, force=True)
            self._confirmed = lsn


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
    """Until *fd* has data to read, or *timeout* seconds.

    The reader is registered only while waiting: readiness is level-triggered,
    so a reader left registered fires on every event-loop iteration while data
    waits unread (the decoder awaiting its log write), and under load the loop
    never slept (~60,000 epoll calls a second; the gateway's CPU nearly halved
    without them)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await ready
    finally:
        loop.remove_reader(fd)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
