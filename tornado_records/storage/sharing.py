"""One process alone on its index, or several sharing one (PostgreSQL, or SQLite with --processes N): the only place
that knows which.

Processes sharing an index each hold a name of their own while they live (an advisory lock in PostgreSQL, a byte of
records.locks with SQLite, see sqldb.SharedSqlite): their
uploads in flight are in tmp/<owner>/, their append requests' rows carry it, and what a process that ended left is
tidied by one that finds its name free. One process alone is owner 0, and its tmp/ is the data directory's.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from typing import TYPE_CHECKING

import tornado.ioloop

from tornado_records.storage import recovery
from tornado_records.storage.model import Busy
from tornado_records.storage.starts import SqlStarts, StartIndex

if TYPE_CHECKING:
    from tornado_records.storage.store import RecordStore

ENDED_WAIT = 1.0  # seconds a start waits for a process that has just ended to let go of its name (shared index)
ENDED_TIDY = 10.0  # seconds between looks for what ended processes left (shared index)
ORPHAN_AGE = 3600.0  # seconds: a blob no row names is removed at start-up once this old (when processes share the index)


class Alone:
    """The only process on its index: it may remove any blob no record names, and everything in tmp/ at a start."""

    shared = False
    owner = 0

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.tmp = store.root / "tmp"
        self.starts = StartIndex(store.wconn)  # in memory: a deep offset costs no scan

    async def page(self, *bounds: object) -> tuple[int, list[str]]:
        return self.starts.page(*bounds)

    def written_elsewhere(self, event: str, start: str) -> set[str]:  # noqa: ARG002
        """The files that other processes' append requests write for the record: none."""
        return set()

    def appended_elsewhere(self, name: str) -> bool:  # noqa: ARG002
        return False

    def ended(self, owner: int) -> bool:  # noqa: ARG002
        """Whether the process `owner` that wrote to the content store has ended: all have, but this one."""
        return True

    def orphans_before(self) -> float | None:
        """Blobs no record names are removed at a start whatever their age."""
        return None

    def recover(self) -> None:
        recovery.recover_alone(self.store)

    async def wait_for_others(self, event: str, start: str, seq: int) -> None:
        """No other process's append request is before `seq` in the record's line."""

    async def hold(self, name: str) -> None:
        """No other process to hold `name` against."""

    def let_go(self, name: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Shared(Alone):
    """One of several processes on a shared index (and data directory): each holds a name while it lives."""

    shared = True

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.owner = secrets.randbits(31) | 1
        store.wconn.claim(self.owner)
        store.wconn.on_reconnect.append(lambda: store.wconn.claim(self.owner))  # a new connection holds it again
        self.tmp = store.root / "tmp" / str(self.owner)
        self.starts = SqlStarts(store.rconn)  # others change the starts too: asked of the index, in a thread
        self._tidying: tornado.ioloop.PeriodicCallback | None = None

    async def page(self, *bounds: object) -> tuple[int, list[str]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.starts.page, *bounds)

    def written_elsewhere(self, event: str, start: str) -> set[str]:
        """The files that append requests of other processes write for the record (in the writer thread)."""
        rows = self.store.wconn.execute("SELECT blob FROM appends WHERE event = ? AND start = ?", (event, start))
        return {name for (name,) in rows}

    def appended_elsewhere(self, name: str) -> bool:
        """Whether an append request (of any process) still writes the file `name`."""
        return self.store.rconn.execute("SELECT 1 FROM appends WHERE blob = ?", (name,)).fetchone() is not None

    def ended(self, owner: int) -> bool:
        """Whether the process `owner` that shared the index has ended (its name is free)."""
        if owner == self.owner or not self.store.wconn.claim(owner, wait=False):
            return False
        self.store.wconn.release(owner)
        return True

    def orphans_before(self) -> float | None:
        """A younger blob may be a version that another process is committing."""
        return time.time() - ORPHAN_AGE

    def recover(self) -> None:
        """Tidy what each process that ended left (recover_owner), then the orphans old enough."""
        appending = self._appending_owners()
        for path in (self.store.root / "tmp").iterdir():  # uploads in flight of a process alone on it, before
            if path.is_file():
                path.unlink()
        waited_until = time.monotonic() + ENDED_WAIT
        for owner in self._ended_candidates(appending):
            # a process killed a moment ago may still hold its name while PostgreSQL notices: its appends must join
            # at this start, so wait a little for those; the rest, the periodic tidy_ended finds later
            while not self.recover_owner(owner) and owner in appending and time.monotonic() < waited_until:
                time.sleep(0.05)
        if orphans := recovery.remove_orphan_files(self.store, self.orphans_before()):
            recovery.log.warning("removed %d orphan blob(s) from %s", orphans, self.store.root)

    async def wait_for_others(self, event: str, start: str, seq: int, poll: float = 0.25) -> None:
        """Wait until no append request of another process is before `seq` in the record's line; those of a
        process that ended are joined to the record here, in their order."""
        loop = asyncio.get_running_loop()
        while True:
            owners = [
                owner
                for (owner,) in self.store.rconn.execute(
                    "SELECT DISTINCT owner FROM appends WHERE event = ? AND start = ? AND seq < ? AND owner <> ?",
                    (event, start, seq, self.owner),
                )
            ]
            if not owners:
                return
            for owner in owners:
                await loop.run_in_executor(self.store.writer, self.recover_owner, owner)
            await asyncio.sleep(poll)

    async def hold(self, name: str) -> None:
        """Hold `name` (a resumable upload's id) against the other processes until `let_go`; Busy if one of them
        holds it."""
        if not await asyncio.get_running_loop().run_in_executor(self.store.writer, self.store.wconn.hold, name):
            raise Busy(f"The upload {name}")

    def let_go(self, name: str) -> None:
        """Stop holding `name` (in the writer thread, after what it has to do before)."""
        self.store.writer.submit(self.store.wconn.let_go, name)

    def start(self) -> None:
        """Look for what ended processes left every ENDED_TIDY seconds (on the event loop)."""
        self._tidying = tornado.ioloop.PeriodicCallback(self._tidy_logged, ENDED_TIDY * 1000)
        self._tidying.start()

    def stop(self) -> None:
        if self._tidying is not None:
            self._tidying.stop()

    async def _tidy_logged(self) -> None:
        try:
            await self.tidy_ended()
        except Exception as exc:  # noqa: BLE001 (the next look tries again)
            recovery.log.warning("could not tidy what ended processes left: %s", exc)

    async def tidy_ended(self) -> None:
        """Tidy what processes that ended left (run every ENDED_TIDY seconds)."""
        loop = asyncio.get_running_loop()
        for owner in self._ended_candidates(self._appending_owners()):
            await loop.run_in_executor(self.store.writer, self.recover_owner, owner)
        await loop.run_in_executor(self.store.writer, self.store.content.abort_unfinished, self.ended)

    def _appending_owners(self) -> set[int]:
        return {owner for (owner,) in self.store.rconn.execute("SELECT DISTINCT owner FROM appends")}

    def _ended_candidates(self, appending: set[int]) -> set[int]:
        """The processes other than this one that have append rows or uploads in flight (alive or not)."""
        tmp = self.store.root / "tmp"
        owners = appending | {int(path.name) for path in tmp.iterdir() if path.name.isdigit()}
        return owners - {self.owner}

    def recover_owner(self, owner: int) -> bool:
        """If the process `owner` has ended: join what its append requests received to their records, and remove
        its uploads in flight; whether it had ended (in the writer thread, or at start-up)."""
        if not self.store.wconn.claim(owner, wait=False):
            return False
        try:
            recovery.recover_appends(self.store, owner)
            shutil.rmtree(self.store.root / "tmp" / str(owner), ignore_errors=True)
        finally:
            self.store.wconn.release(owner)
        return True


def sharing_for(store: RecordStore) -> Alone:
    """How the store's process stands on its index."""
    return Shared(store) if store.wconn.shared else Alone(store)
