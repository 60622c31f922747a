"""What a start finds and mends: the bytes that append requests had received join their records; uploads in flight
and blobs that no record names are removed (see sharing.py for what differs when processes share the index)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from typing import TYPE_CHECKING

from tornado_records.storage.model import StorageFull, runs

if TYPE_CHECKING:
    from tornado_records.storage.store import RecordStore

log = logging.getLogger("tornado_records.store")


def recover(store: RecordStore) -> None:
    """Tidy what a stopped or crashed process left behind, in the data directory and in the content store."""
    store.sharing.recover()
    store.content.sweep(known_blobs(store), store.sharing.orphans_before(), store.sharing.ended)


def recover_alone(store: RecordStore) -> None:
    """Alone on the index: every append request's rest joins, everything in tmp/ goes, and every orphan blob."""
    recover_appends(store)
    leftovers = list(store.tmp.iterdir())
    for path in leftovers:  # a directory: that of a process that shared the index (--processes N) before
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    orphans = remove_orphan_files(store, None)
    if leftovers or orphans:
        log.warning("removed %d unfinished upload(s) and %d orphan blob(s) from %s", len(leftovers), orphans, store.root)


def known_blobs(store: RecordStore) -> set[str]:
    """The blobs that records or append requests name (in the writer's view)."""
    known = {s.name for (blob,) in store.wconn.execute("SELECT blob FROM records") for s in runs(blob)}
    known |= {name for (name,) in store.wconn.execute("SELECT blob FROM appends")}
    return known | store.joins.writing


def remove_orphan_files(store: RecordStore, before: float | None) -> int:
    """Remove the files in blobs/ that nothing names (those last changed before the Unix time `before`, if given:
    a younger one may be a version that another process is committing)."""
    known = known_blobs(store)
    orphans = [
        path for path in store.blobs.iterdir()
        if path.name not in known and (before is None or path.stat().st_mtime < before)
    ]  # fmt: skip
    for path in orphans:
        path.unlink(missing_ok=True)
    return len(orphans)


def recover_appends(store: RecordStore, owner: int | None = None) -> None:
    """Join to their records the bytes that append requests had received and that were not in them yet, in the
    order the requests began (a crash, or a disk too full for the last transaction): all of them, or those of the
    process `owner`."""
    rows = store.wconn.execute(
        "SELECT blob, event, start, type, committed FROM appends"
        + (" ORDER BY seq" if owner is None else " WHERE owner = ? ORDER BY seq"),
        () if owner is None else (owner,),
    ).fetchall()
    for name, event, start, content_type, committed in rows:
        path = store.blobs / name
        size = path.stat().st_size if path.exists() else 0
        try:
            if size > committed:
                current = store.current(event, start)
                digest = hashlib.sha256() if current is None else store.content_hash(current)
                record, _ = store.joins.join_now(
                    name, event, start, content_type, committed, size, current, digest, ended="restart"
                )
                log.warning(
                    "joined %d byte(s) that an append request had received before the stop to event %s at %s "
                    "(now %d bytes)", size - committed, event, start, record.size,
                )  # fmt: skip
            store.execute("DELETE FROM appends WHERE blob = ?", (name,))
        except StorageFull:
            store.joins.writing.add(name)  # kept for the next start: the sweep of orphans leaves it
            log.warning("the disk is full: %d byte(s) of event %s at %s wait for the next start", size - committed,
                        event, start)  # fmt: skip
