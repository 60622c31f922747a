"""`tornado-records backup DEST`: a consistent copy of a service's records, live or stopped, that a service started
on DEST serves as the source was at the backup. DEST is always a data directory of the default kind (a SQLite index
and files), whatever the source's engines: a PostgreSQL index and files or S3 objects are copied into one as well
(backup_engines.py), and `tornado-records migrate --data-dir DEST` puts such a backup back into them.

The index is copied by SQLite's online backup (one snapshot, which never blocks the service's writer), then the
files that the COPY names: hard links where DEST is on the same filesystem, copies otherwise. A file that an append
request is still writing is copied up to the end of what the copy names, never linked (a link would keep growing).
A file removed from the source before it was linked (its record replaced or deleted meanwhile) makes a new snapshot
of the index, until the files of one snapshot are all there. The index is put in place last, so a DEST with a
records.sqlite3 is a complete backup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import sqlite3
import stat
import sys
import time
from pathlib import Path
from typing import TextIO

from tornado_records.commands.datadir import (
    INDEX,
    CommandError,
    RateLimit,
    Source,
    appending_of,
    human,
    read_index,
    record_path,
    records_of,
)
from tornado_records.storage.files import fsync_content
from tornado_records.storage.model import BlobsError, Record

ROUNDS = 10  # snapshots of the index at most, while files vanish under the backup
BLOCK = 1 << 20
NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP}  # os.link refused: copy instead


@dataclasses.dataclass(frozen=True)
class Wanted:
    """A file the copied index names: `length` bytes of it to copy, or None for all of it (a link where possible);
    `owner` is the path of a record that names it."""

    length: int | None
    owner: str


def backup(source: Source | Path, dest: Path, rate: int = 0, out: TextIO = sys.stdout) -> int:
    """Back up the records of `source` (a Source, or a data directory with the default index) into the new directory
    `dest`, copying at most `rate` bytes per second (0: no limit), and print a summary; returns the exit status: 0,
    or 1 if files that the source's index names are missing or short in the source too. CommandError for a bad
    source or DEST, or a failed copy (DEST is then removed)."""
    source = source if isinstance(source, Source) else Source(source)
    if not source.embedded:
        from tornado_records.commands.backup_engines import backup_engines  # (it builds on this module's helpers)

        return backup_engines(source, dest, rate, out)
    root = source.root
    started = time.monotonic()
    with read_index(root) as index:
        index.execute("SELECT count(*) FROM records, appends").fetchone()  # a data directory, its index readable
    new = _make_dest(root, dest)
    try:
        copier = Copier(root, dest, RateLimit(rate))
        records, rounds = copier.run()
    except BaseException as exc:
        _remove(dest, new)
        raise failure(exc) from None
    return report(copier.problems, list(copier.done.values()), records, rounds, str(root), dest, started, out)


def failure(exc: BaseException) -> BaseException:
    """What a failed backup raises: a CommandError saying why, where the cause is the disk, the index or the content
    engine; else the exception itself."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return CommandError(f"the backup failed: {exc.strerror or exc}{where}")
    if isinstance(exc, (sqlite3.Error, BlobsError)):
        return CommandError(f"the backup failed: {exc}")
    return exc


def report(
    problems: list[str], done: list[tuple], records: list[Record], rounds: int, origin: str, dest: Path,
    started: float, out: TextIO,
) -> int:  # fmt: skip
    """Print the problems and the summary of a backup (`done`: per file, the bytes copied last, None if linked);
    the exit status."""
    for problem in problems:
        print(problem, file=out)
    linked = sum(1 for *_, copied in done if copied is None)
    copied = [size for *_, size in done if size is not None]
    size = sum(record.size for record in records)
    snapshots = f" ({rounds} snapshots of the index: records changed meanwhile)" if rounds > 1 else ""
    print(
        f"backed up {len(records)} records ({human(size)}) from {origin} to {dest} in {time.monotonic() - started:.1f} s"
        f"{snapshots}: {linked} files linked, {len(copied)} copied ({sum(copied)} bytes, {human(sum(copied))})",
        file=out,
    )
    return 1 if problems else 0


class Copier:
    """Copies the index and the files it names into DEST, snapshot after snapshot until one is whole."""

    def __init__(self, root: Path, dest: Path, limit: RateLimit) -> None:
        self.root = root
        self.dest = dest
        self.limit = limit
        self.partial = dest / f"{INDEX}.partial"
        self.linking = True  # until os.link says DEST is on another filesystem
        self.wanted: dict[str, Wanted] = {}
        # The files in DEST/blobs: (the length wanted, as in Wanted; the bytes copied, or None if linked).
        self.done: dict[str, tuple[int | None, int | None]] = {}
        self.problems: list[str] = []

    def run(self) -> tuple[list[Record], int]:
        """Make the backup; returns the records it holds and the number of snapshots it took."""
        missing_before: set[str] = set()
        for rounds in range(1, ROUNDS + 1):
            records = self.snapshot()
            missing = {name for name in self.wanted if not self.transfer(name)}
            # A file is removed only after the change that stopped naming it: one that the next snapshot still
            # names, and is still missing, is lost from the source, not replaced meanwhile.
            if missing <= missing_before:
                break
            missing_before = missing
        else:
            raise CommandError(f"the data directory changed faster than it could be copied ({ROUNDS} tries)")
        for name in missing:
            self.problems.append(f"missing: blobs/{name} (of {self.wanted[name].owner}) is not in {self.root}")
        for name in set(self.done) - set(self.wanted):  # files of versions replaced between snapshots
            (self.dest / "blobs" / name).unlink()
            del self.done[name]
        self.finish()
        return records, rounds

    def snapshot(self) -> list[Record]:
        """Copy the index by SQLite's online backup, and note the files it names; returns its records."""
        with read_index(self.root) as source, contextlib.closing(sqlite3.connect(self.partial)) as copy:
            try:
                source.backup(copy)
                records = records_of(copy)
                appending = appending_of(copy)
            except sqlite3.Error as exc:
                raise CommandError(f"cannot copy the index to {self.partial}: {exc}") from None
        ends: dict[str, int] = {}
        self.wanted = {}
        for record in records:
            if ":" not in record.blob:  # one file, the whole content, never changed
                self.wanted[record.blob] = Wanted(None, record_path(record))
                continue
            for segment in record.segments:
                ends[segment.name] = max(ends.get(segment.name, 0), segment.end)
                self.wanted[segment.name] = Wanted(None, record_path(record))
        for name, end in ends.items():
            try:
                growing = name in appending or os.stat(self.root / "blobs" / name).st_size != end
            except FileNotFoundError:
                growing = True
            if growing:  # still written by an append request: only what the copy names
                self.wanted[name] = Wanted(end, self.wanted[name].owner)
        return records

    def transfer(self, name: str) -> bool:
        """Link or copy a wanted file into DEST/blobs unless it is there already; False if it is gone from the source."""
        length = self.wanted[name].length
        target = self.dest / "blobs" / name
        if name in self.done:
            if self.done[name][0] == length:
                return True
            target.unlink()  # a file that was still growing at the last snapshot
            del self.done[name]
        source = self.root / "blobs" / name
        try:
            if length is None and self.linking:
                try:
                    os.link(source, target)
                    self.done[name] = (length, None)
                    return True
                except OSError as exc:
                    if exc.errno not in NO_LINK:
                        raise
                    self.linking = exc.errno != errno.EXDEV  # another filesystem: copy from now on
            copied = _copy(source, target, length, self.limit)
        except FileNotFoundError:
            return False
        self.done[name] = (length, copied)
        if length is not None and copied < length:
            owner = self.wanted[name].owner
            self.problems.append(f"truncated: blobs/{name} (of {owner}) is {copied} bytes, not {length}: copied so")
        return True

    def finish(self) -> None:
        """Empty the copy's `appends` (it holds committed versions only), make everything durable, and put the index
        in place."""
        with contextlib.closing(sqlite3.connect(self.partial, isolation_level=None)) as copy:
            copy.execute("DELETE FROM appends")
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, with no -wal beside it
        _like(self.partial, self.root / INDEX)
        fsync_content(self.partial)
        fsync_content(self.dest / "blobs")
        os.rename(self.partial, self.dest / INDEX)
        fsync_content(self.dest)


def _make_dest(root: Path, dest: Path) -> bool:
    """Create DEST with blobs/ and tmp/ (it must be new, or an empty directory, outside the data directory);
    returns whether it was created. CommandError otherwise."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CommandError(f"{dest} is not a new or empty directory: a backup goes into one of its own")
    if root.resolve() in (dest.resolve(), *dest.resolve().parents):
        raise CommandError(f"{dest} is inside the data directory {root}")
    new = not dest.exists()
    try:
        dest.mkdir(exist_ok=True)
        for part in ("blobs", "tmp"):
            (dest / part).mkdir()
            _like(dest / part, root / part)
        _like(dest, root)
    except OSError as exc:
        _remove(dest, new)
        raise CommandError(f"cannot make {dest}: {exc.strerror}") from None
    return new


def _copy(source: Path, target: Path, length: int | None, limit: RateLimit) -> int:
    """Copy the first `length` bytes of a file (None: all of it) with its mode, owner and times, durably; returns
    the bytes copied (fewer if the file is shorter)."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        info = os.fstat(src.fileno())
        end = info.st_size if length is None else length
        at = 0
        while at < end:
            data = os.pread(src.fileno(), min(BLOCK, end - at), at)
            if not data:
                break
            dst.write(data)
            at += len(data)
            limit.spend(len(data))
        dst.flush()
        os.fsync(dst.fileno())
    _like(target, source)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))  # mtime: the Last-Modified that nginx sends
    return at


def _like(path: Path, model: Path) -> None:
    """Give `path` the mode of `model` (and its owner, when run as root), so that the service can use the copy; as
    it is where there is no `model` (a data directory without blobs/, its records in an object store)."""
    try:
        info = os.stat(model)
    except FileNotFoundError:
        return
    os.chmod(path, stat.S_IMODE(info.st_mode))
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid)


def _remove(dest: Path, new: bool) -> None:
    """Remove what the backup made in DEST (DEST too, if it made it): DEST was new or empty."""
    if new:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for entry in dest.iterdir() if dest.is_dir() else ():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
