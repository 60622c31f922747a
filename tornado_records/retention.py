"""Retention: the records whose start is older than `--retention` are deleted on a schedule, each announced.

A sweep finds the records with `start` before now minus the retention in the index (its own read-only connection,
in a thread), deletes each through the store, publishes its `record-deleted` event, and logs one line. `start` is
a naive time in the event's own timezone; it is compared with the server's local time, naive too.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from typing import Callable

from tornado_records.storage.sqldb import Database
from tornado_records.events import EventHub
from tornado_records.upload_events import publish_deleted
from tornado_records.storage.model import RecordNotFound
from tornado_records.storage.store import RecordStore

log = logging.getLogger("tornado_records.retention")

MIN_INTERVAL = 1.0  # seconds between sweeps, at least
MAX_INTERVAL = 3600.0  # and at most
BATCH = 500  # records found per query


def sweep_interval(retention: datetime.timedelta) -> float:
    """Seconds between sweeps: a hundredth of the retention (a record outlives it by 1 % at most), 1 s to 1 hour."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, retention.total_seconds() / 100))


class Retention:
    """The sweeps of one data directory: `start()` sweeps at once and then every `interval` seconds until `stop()`.

    `clock` gives the current time as a naive date-time (the server's local time unless a test gives another).
    """

    def __init__(
        self,
        store: RecordStore,
        hub: EventHub,
        index: Database,
        retention: datetime.timedelta,
        *,
        clock: Callable[[], datetime.datetime] = datetime.datetime.now,
        interval: float | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.retention = retention
        self.clock = clock
        self.interval = sweep_interval(retention) if interval is None else interval
        self._index = index  # a read-only connection of its own
        self._stopped = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Sweep now, then on schedule (call on the event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """End the schedule; a sweep under way stops after the delete in progress (which is announced)."""
        self._stopped.set()
        if self._task is not None:
            await self._task

    def close(self) -> None:
        self._index.close()

    async def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # the next sweep tries again; one line, no traceback
                log.error("retention: the sweep failed: %s: %s", type(exc).__name__, exc)
            try:
                await asyncio.wait_for(self._stopped.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def sweep(self) -> int:
        """Delete the records older than the retention, announcing each; returns how many were deleted."""
        began = time.monotonic()
        cutoff = (self.clock() - self.retention).isoformat()
        loop = asyncio.get_running_loop()
        deleted = 0
        while not self._stopped.is_set():
            found = await loop.run_in_executor(None, self._older_than, cutoff)
            before = deleted
            for event, start in found:
                if self._stopped.is_set():
                    break
                try:
                    record = await self.store.delete(uuid.UUID(event), datetime.datetime.fromisoformat(start))
                except RecordNotFound:
                    continue  # deleted meanwhile
                publish_deleted(self.hub, record.event, record.start)
                deleted += 1
            if len(found) < BATCH or deleted == before:
                break
        log.info(
            "retention: deleted %d record(s) that started before %s (older than %s) in %.1f ms",
            deleted,
            cutoff,
            _duration(self.retention),
            1000 * (time.monotonic() - began),
        )
        return deleted

    def _older_than(self, cutoff: str) -> list[tuple[str, str]]:
        """(event, start) of records whose start is before `cutoff` (canonical ISO 8601 sorts as time does)."""
        return self._index.execute(
            "SELECT event, start FROM records WHERE start < ? ORDER BY start LIMIT ?", (cutoff, BATCH)
        ).fetchall()


def _duration(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
