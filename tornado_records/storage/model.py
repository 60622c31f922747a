"""What the storage holds and says: a record's version (`Record`), the runs of blobs its content is made of
(`Segment`), a page of a listing, and the errors the storage raises (handlers map each to one HTTP status). No I/O.

A version's content is the concatenation of runs (`Segment`s) of blobs. Blobs never change once a version names
them; the store names a blob in the index only once it is whole and durable: a file fsynced and renamed into blobs/,
or an object whose upload is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import uuid
from typing import Callable, Iterator, Protocol

from tornado_records.storage import sqldb

MERGED = ".merged"  # the end of the name of an object that holds the runs of an append piece, merged when it ended


@dataclasses.dataclass(frozen=True)
class Segment:
    """`length` bytes of the blob `name`, from `offset`."""

    name: str
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def run_of(name: str) -> tuple[str, int] | None:
    """The append piece file and the place in it that the object `name` holds bytes from, if it is a run of one: in
    an object store a join of a piece is the object `PIECE.AT` (its bytes from AT), and the runs of a piece that
    ended are merged into one object `PIECE.AT.merged`."""
    stem, _, at = name.removesuffix(MERGED).rpartition(".")
    return (stem, int(at)) if stem and at.isdigit() else None


def piece_end(segment: Segment, name: str) -> int | None:
    """Where in the append piece file `name` a run of it ends (None: the run is not of that file)."""
    if segment.name == name:
        return segment.end
    run = run_of(segment.name)
    return run[1] + segment.end if run is not None and run[0] == name else None


class BlobsError(Exception):
    """A blob is not what the index says (the message says which and how), or the blob store cannot be used."""


class BlobsUnavailable(BlobsError):
    """The object store did not answer, or refused what was asked (the message says what and why, for the log):
    503, with only `public` (no endpoint, bucket or key) said to the client."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


class StoreError(Exception):
    """Base of the errors the store raises; handlers map each to one HTTP status."""


class RecordNotFound(StoreError):
    """There is no record of that event at that start."""

    def __init__(self, event: uuid.UUID, start: datetime.datetime) -> None:
        super().__init__(f"No record of event {event} starting at {start.isoformat()}")


class PreconditionFailed(StoreError):
    """The record is not in the state the change was made conditional on; nothing was changed."""

    def __init__(self, event: uuid.UUID, start: datetime.datetime) -> None:
        super().__init__(
            f"The record of event {event} starting at {start.isoformat()} does not meet the request's preconditions"
        )


class StorageFull(StoreError):
    """The disk holding the data directory has no room for the upload (ENOSPC); nothing was stored."""

    def __init__(self, detail: str = "There is not enough space left on the server's disk for this upload") -> None:
        super().__init__(detail)


class Busy(StoreError):
    """Another process sharing the index is writing it (such as a resumable upload): try again once it is done."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is being written by a request to another process of the service: try again later")


class ContentDamaged(StoreError):
    """A file of the record's content is missing from the disk, or its size is not what the index says: the record
    is damaged, and is not served."""

    def __init__(self, record: "Record", problem: str) -> None:
        super().__init__(f"the record of event {record.event} starting at {record.start} is damaged: {problem}")


class DigestMismatch(StoreError):
    """The content received does not have the digest the client said it has; nothing was stored."""

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"The content received does not match the {algorithm} digest given with it")


Condition = Callable[["Record | None"], bool]
"""A precondition on a record's current version (None: there is none), checked as part of a change."""


def blob_spec(segments: list[Segment]) -> str:
    """The index's text for a content made of these runs."""
    return " ".join(f"{s.name}:{s.offset}:{s.length}" for s in segments)


@dataclasses.dataclass(frozen=True)
class Record:
    """One stored version of a record, as the index describes it."""

    event: str
    start: str
    type: str
    size: int
    sha256: str
    modified: int
    blob: str

    @property
    def etag(self) -> str:
        """The strong entity tag: the quoted SHA-256 of the content."""
        return f'"{self.sha256}"'

    @property
    def segments(self) -> list[Segment]:
        """The runs of blob files whose concatenation is the content: one whole file, unless it was appended to."""
        if ":" not in self.blob:
            return [Segment(self.blob, 0, self.size)]
        return [Segment(name, int(at), int(length)) for name, at, length in (p.split(":") for p in self.blob.split())]

    @property
    def modified_at(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.modified, datetime.timezone.utc)

    def to_json(self) -> dict:
        return {
            "event": self.event,
            "start": self.start,
            "type": self.type,
            "size": self.size,
            "etag": self.etag,
            "modified": self.modified_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclasses.dataclass
class Blob:
    """A record and its content, open for reading until `close`; it stays readable even if the record is replaced
    or deleted meanwhile (see FileContent and ObjectContent for the limits: an object, or a file that another process
    sharing the data directory removed, before the reading reached it)."""

    record: Record
    file: Reader

    def close(self) -> None:
        self.file.close()


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing: `count` records match the bounds, `records` are those after offset and limit."""

    count: int
    records: list[Record]



class Reader(Protocol):
    """A version's content open for reading (files.FileContent, s3.ObjectContent). `local`: `runs` gives file
    descriptors that sendfile can send from."""

    local: bool

    def seek(self, position: int) -> None: ...
    def read(self, size: int) -> bytes: ...
    async def aread(self, size: int) -> bytes: ...
    def close(self) -> None: ...


def runs(blob: str) -> list[Segment]:
    """The runs a blob column names (their lengths do not matter to the caller)."""
    return Record("", "", "", 0, "", 0, blob).segments


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn "no space left on the disk" (from the file system or from the index's database) into StorageFull."""
    try:
        yield
    except (OSError, *sqldb.Database.errors) as exc:
        if sqldb.Database.is_full(exc):
            raise StorageFull() from exc
        raise
