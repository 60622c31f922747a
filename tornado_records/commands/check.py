"""`tornado-records check`: verify every record against its content (missing, truncated, damaged), and the content
against the index (orphaned), wherever the service keeps them: a data directory (the default), or a PostgreSQL
index with files in a shared data directory or objects in an S3 store. Read-only and paced, so that it can run
beside a live service.

What a live service does meanwhile is not damage: a record replaced or deleted after the check read the index (its
old file removed) is not reported, and a file modified less than ORPHAN_GRACE seconds ago is not called orphaned
(an upload being committed, an append request whose row is not written yet).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import sys
import time
from pathlib import Path
from typing import TextIO

from tornado_records.commands.datadir import (
    RECORD_COLUMNS,
    RateLimit,
    Source,
    appending_of,
    human,
    record_path,
    records_of,
)
from tornado_records.storage.content import ContentStore
from tornado_records.storage.model import BlobsError, Record

DEFAULT_RATE = "100M"  # bytes read per second, on average
ORPHAN_GRACE = 60.0  # seconds: a file modified (mtime) more recently than this is not called orphaned
ORPHAN_RECHECK = 1.0  # seconds between finding a file named by nothing and looking again (a removal may be due)
BLOCK = 1 << 20
KINDS = ("missing", "truncated", "damaged", "orphaned", "unreadable")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind (one of KINDS), what it is about (a record's path, a file) and what is wrong."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


def check(source: Source | Path, rate: int, out: TextIO = sys.stdout) -> int:
    """Check the records of `source` (a Source, or a data directory with the default index), print one line per
    problem and a summary; returns the exit status (0: healthy, 1: problems). CommandError if there is no index to
    read there."""
    source = source if isinstance(source, Source) else Source(source)
    started = time.monotonic()
    if (note := source.left_index()) is not None:
        print(note, file=sys.stderr)
    with source.read_index() as index:
        records = records_of(index)
    content = source.open_content()
    try:
        limit = RateLimit(rate)
        counts: collections.Counter[str] = collections.Counter()
        for record in records:
            problem = verify(content, record, limit)
            if problem is None:
                continue
            if still_there(source, record):
                counts[problem.kind] += 1
                print(problem, file=out, flush=True)
            else:
                counts["changed"] += 1
        for problem in orphans(source, content):
            counts[problem.kind] += 1
            print(problem, file=out, flush=True)
        stored = len(content.names())
    finally:
        content.close()
    seconds = time.monotonic() - started
    speed = human(limit.spent / seconds) if seconds > 0 else "-"
    changed = f"; {counts['changed']} changed while checked (not judged)" if counts["changed"] else ""
    verdict = "problems" if any(counts[kind] for kind in KINDS) else "healthy"
    print(
        f"checked {len(records)} records and {stored} {content.unit} in {seconds:.1f} s: read {limit.spent} bytes "
        f"({human(limit.spent)}, {speed}/s){changed}; " + ", ".join(f"{counts[k]} {k}" for k in KINDS) + f": {verdict}",
        file=out,
    )
    return 0 if verdict == "healthy" else 1


def verify(content: ContentStore, record: Record, limit: RateLimit) -> Problem | None:
    """What is wrong with a version's content (None: nothing): a blob missing, shorter than a run (for a one-blob
    record: not of the record's size), or content whose SHA-256 is not the record's."""
    subject = record_path(record)
    whole = ":" not in record.blob
    digest = hashlib.sha256()
    for segment in record.segments:
        name = content.describe(segment.name)
        try:
            stat = content.stat(segment.name)
            if stat is None:
                return Problem("missing", subject, f"{name} does not exist")
            if stat[0] < segment.end or (whole and stat[0] != record.size):
                expected = f"{record.size} bytes" if whole else f"at least {segment.end} bytes (a run ends there)"
                return Problem("truncated", subject, f"{name} is {stat[0]} bytes, not {expected}")
            reader = content.open([segment], whole=False)
            try:
                read = 0
                while data := reader.read(BLOCK):
                    digest.update(data)
                    limit.spend(len(data))
                    read += len(data)
            finally:
                reader.close()
            if read < segment.length:
                return Problem("truncated", subject, f"{name} ends at byte {segment.offset + read}, before {segment.end}")
        except FileNotFoundError:
            return Problem("missing", subject, f"{name} does not exist")
        except BlobsError as exc:
            return Problem("unreadable", subject, f"{name}: {exc}")
        except OSError as exc:
            return Problem("unreadable", subject, f"{name}: {exc.strerror or exc}")
    runs = sum(segment.length for segment in record.segments)
    if runs != record.size:
        return Problem("damaged", subject, f"its runs add up to {runs} bytes, the index says {record.size}")
    if digest.hexdigest() != record.sha256:
        return Problem("damaged", subject, f"its content's SHA-256 is {digest.hexdigest()}, not {record.sha256}")
    return None


def still_there(source: Source, record: Record) -> bool:
    """Whether the record's current version is `record`, or `record` with more appended: whether a problem found
    in `record` is one of the record's now (rather than of a version replaced or deleted meanwhile)."""
    with source.read_index() as index:
        row = index.execute(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE event = ? AND start = ?", (record.event, record.start)
        ).fetchone()
    if row is None:
        return False
    old, new = record.segments, Record(*row).segments
    last = len(old) - 1
    return (
        len(new) >= len(old)
        and new[:last] == old[:last]
        and (new[last].name, new[last].offset) == (old[last].name, old[last].offset)
        and new[last].length >= old[last].length
    )


def orphans(source: Source, content: ContentStore) -> list[Problem]:
    """The blobs (files of blobs/, or objects under the prefix) that no record and no append request names, and that
    were last modified ORPHAN_GRACE seconds ago or earlier (a blob being committed was written or touched just
    before)."""
    names = content.names()  # before the index is read: a blob listed and new is named by it
    named = named_files(source)
    candidates = [name for name in names if name not in named]
    if candidates:
        time.sleep(ORPHAN_RECHECK)  # a replaced version's blob is removed just after the change that unnamed it
        named = named_files(source)
    problems = []
    for name in candidates:
        stat = content.stat(name)
        if name in named or stat is None or time.time() - stat[1] < ORPHAN_GRACE:
            continue
        modified = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat[1]))
        detail = f"{stat[0]} bytes, modified {modified}, named by no record and no append in progress"
        problems.append(Problem("orphaned", content.describe(name), detail))
    return problems


def named_files(source: Source) -> set[str]:
    """The files of blobs/ (or objects) that the index names now: in records, or written by append requests."""
    with source.read_index() as index:
        return {s.name for record in records_of(index) for s in record.segments} | appending_of(index)
