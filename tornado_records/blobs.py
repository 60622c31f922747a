"""Where the content of record versions is kept: files in the data directory's blobs/ (the embedded default), or
objects in an S3-compatible bucket (`--blobs s3://bucket/prefix`). Knows nothing of HTTP nor of the index.

A version's content is the concatenation of runs (`Segment`s) of blobs. Blobs never change once a version names
them; the store (store.py) names a blob in the index only once it is whole and durable: a file fsynced and renamed
into blobs/, or an object whose upload is complete.

On S3, the data directory still holds what is in flight (tmp/, append pieces while they arrive, resumable
uploads), and an object is written in parts of PART bytes as its file fills (`ObjectSender`), so that the commit at
the end of an upload has at most one part left to send.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import logging
import os
import threading
import urllib.parse
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # without the [scale] extra there is no object store, and none of its errors
    BotoCoreError = ClientError = type("NoBotocoreError", (Exception,), {})

PART = 8 << 20  # bytes of each part of a multipart upload but the last (S3 refuses parts under 5 MiB but the last)
READ_BLOCK = 1 << 20
MERGED = ".merged"  # the end of the name of an object that holds the runs of an append piece, merged when it ended


class BlobsError(Exception):
    """A blob is not what the index says (the message says which and how), or the blob store cannot be used."""


class BlobsUnavailable(BlobsError):
    """The object store did not answer, or refused what was asked (the message says what and why, for the log):
    503, with only `public` (no endpoint, bucket or key) said to the client."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


def _unavailable(method: Callable) -> Callable:
    """Turn botocore's errors in `method` into BlobsUnavailable, saying what the object store answered."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
            raise BlobsUnavailable(
                f"the object store refused: {reason}", "The object store refused the request: try again shortly"
            ) from None
        except BotoCoreError as exc:
            raise BlobsUnavailable(
                f"the object store is out of reach: {exc}", "The object store cannot be reached: try again shortly"
            ) from None

    return wrapper


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


class FileContent:
    """The bytes of a version in blob files, for reading (seek, read) or sending (runs): its runs, one after the other.

    One file is open at a time: the first run's from the start (FileBlobs.open), then each run's when its bytes are
    first read, the one before closed then, so that a version of many runs (an appended record) holds one
    descriptor, not one a run, and a version of one file opens it once. Until `close`, its files stay on the disk
    even if the version is replaced or deleted meanwhile (FileBlobs.remove waits for it): a download keeps reading
    the version it began with. Only another process sharing the data directory (a shared index) removes a file
    without waiting: reading a later run whose file it removed raises FileNotFoundError there.
    """

    local = True  # runs() gives file descriptors, for sendfile

    def __init__(self, blobs: FileBlobs, segments: list[Segment]) -> None:
        self._blobs = blobs
        self._segments = segments
        self._at = 0
        self._name: str | None = None  # the file open, if any
        self._file: BinaryIO | None = None
        self._names = blobs.hold({segment.name for segment in segments})  # until close

    def seek(self, position: int) -> None:
        self._at = position

    def read(self, size: int) -> bytes:
        """Up to `size` bytes from the position (fewer at the end of a run; empty at the end)."""
        for fd, offset, length in self.runs(self._at, size):
            data = os.pread(fd, length, offset)
            self._at += len(data)
            return data
        return b""

    async def aread(self, size: int) -> bytes:
        """read(), for the event loop (a file in the page cache reads at once)."""
        return self.read(size)

    def runs(self, start: int, length: int) -> Iterator[tuple[int, int, int]]:
        """The bytes start..start+length as runs of files: (file descriptor, offset, length). A run's descriptor is
        valid until the next run is asked for."""
        base = 0
        for segment in self._segments:
            if length <= 0:
                return
            if start < base + segment.length:
                skip = max(0, start - base)
                take = min(length, segment.length - skip)
                yield self._fd(segment.name), segment.offset + skip, take
                start += take
                length -= take
            base += segment.length

    def _fd(self, name: str) -> int:
        """The descriptor of the blob file `name`, opened now unless it is the one open (which is then closed)."""
        if name != self._name:
            file = open(self._blobs.directory / name, "rb")
            self._close_file()
            self._name, self._file = name, file
        assert self._file is not None
        return self._file.fileno()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._name = self._file = None

    def close(self) -> None:
        """Close the file open, and let the files go (those removed meanwhile are removed now). Safe to call more
        than once."""
        self._close_file()
        names, self._names = self._names, set()
        self._blobs.let_go(names)


class FileBlobs:
    """Blobs as files in one directory (the data directory's blobs/), on the filesystem of its tmp/.

    The files that open contents (FileContent) may still read are held: removing one of them (a version replaced or
    deleted, an append piece that ended) waits until the last content holding it is closed."""

    local = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # removals come from the writer thread, contents from the event loop
        self._held: collections.Counter[str] = collections.Counter()  # files held, by how many contents
        self._removed: set[str] = set()  # files held that were removed meanwhile: unlinked when let go

    def __str__(self) -> str:
        return str(self.directory)

    def open(self, segments: list[Segment], whole: bool) -> FileContent:
        """The runs, ready for reading: their files held, the first one open (so a version of one file, the common
        case, is read from a descriptor taken before its answer begins, whoever removes the file afterwards);
        FileNotFoundError if a file is missing, BlobsError (its message: which and how) if one is shorter than its
        runs, or, where `whole`, not the size of its one run."""
        content = FileContent(self, segments)
        try:
            for number, segment in enumerate(segments):
                where = content._fd(segment.name) if number == 0 else self.directory / segment.name
                found = os.stat(where).st_size
                if found < segment.end or (whole and found != segment.length):
                    expected = f"at least {segment.end} bytes (a run ends there)"
                    expected = f"{segment.length} bytes" if whole else expected
                    raise BlobsError(f"its file blobs/{segment.name} is {found} bytes, not {expected}")
        except BaseException:
            content.close()
            raise
        return content

    def hold(self, names: set[str]) -> set[str]:
        """Keep the files `names` from being removed until `let_go`; returns them."""
        with self._lock:
            self._held.update(names)
        return names

    def let_go(self, names: set[str]) -> None:
        """Stop holding the files `names`; those removed while held, and held no more, are removed now."""
        with self._lock:
            self._held.subtract(names)
            gone = [name for name in names if self._held[name] <= 0]
            for name in gone:
                del self._held[name]
            gone = [name for name in gone if name in self._removed]
            self._removed.difference_update(gone)
        for name in gone:
            (self.directory / name).unlink(missing_ok=True)

    def place(self, path: Path, name: str, modified: int) -> None:
        """Make the durable file `path` (in tmp/) the blob `name`: renamed, its mtime the version's Last-Modified (so
        that nginx sending it itself agrees), and the name made durable."""
        os.rename(path, self.directory / name)
        os.utime(self.directory / name, (modified, modified))
        fsync_dir(self.directory)

    def remove(self, name: str) -> None:
        """Remove the blob file, at once, or, while open contents hold it, when the last of them is closed."""
        with self._lock:
            if self._held[name] > 0:
                self._removed.add(name)
                return
        (self.directory / name).unlink(missing_ok=True)

    def close(self) -> None:
        pass


class ObjectContent:
    """The bytes of a version in objects, open for reading: one ranged GET a run, kept open while reads follow on."""

    local = False

    def __init__(self, blobs: ObjectBlobs, segments: list[Segment]) -> None:
        self._blobs = blobs
        self._segments = segments
        self._at = 0
        self._body: Any = None  # the open GET's body
        self._body_at = -1  # the position in the content its next byte has
        self._body_left = 0

    def seek(self, position: int) -> None:
        self._at = position

    @_unavailable
    def read(self, size: int) -> bytes:
        """Up to `size` bytes from the position (fewer at the end of a run; empty at the end). Blocks."""
        if self._body is None or self._body_at != self._at or self._body_left == 0:
            if not self._open():
                return b""
        data = self._body.read(min(size, self._body_left))
        if not data:
            raise BlobsError("the object store ended a read before the run's end")
        self._at += len(data)
        self._body_at = self._at
        self._body_left -= len(data)
        return data

    async def aread(self, size: int) -> bytes:
        """read(), in a thread."""
        return await asyncio.get_running_loop().run_in_executor(self._blobs.readers, self.read, size)

    def _open(self) -> bool:
        self.close()
        base = 0
        for segment in self._segments:
            if self._at < base + segment.length:
                skip = self._at - base
                try:
                    self._body = self._blobs.get(segment.name, segment.offset + skip, segment.length - skip)
                except FileNotFoundError:
                    moved = self._blobs.merged(segment)  # its piece ended and its runs were merged meanwhile
                    if moved is None:
                        raise
                    self._body = self._blobs.get(moved.name, moved.offset + skip, moved.length - skip)
                self._body_at, self._body_left = self._at, segment.length - skip
                return True
            base += segment.length
        return False

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


@functools.cache
def _models() -> Any:
    """botocore's reader of its descriptions of services, shared by the object stores of a process: it keeps what it
    read (a client takes 0.02 s rather than 0.15 s)."""
    import botocore.session

    return botocore.session.get_session().get_component("data_loader")


class ObjectBlobs:
    """Blobs as objects in an S3-compatible bucket, under a prefix: s3://bucket/prefix. The endpoint and the
    credentials come from `endpoint` or else the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION), as botocore reads them."""

    local = False

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        try:
            import botocore.config
            import botocore.session
        except ImportError:
            raise BlobsError("S3 needs botocore: pip install 'tornado-records[scale]'") from None

        logging.getLogger("botocore").setLevel(logging.WARNING)  # not a line for each credential found
        parsed = urllib.parse.urlsplit(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.url = f"s3://{self.bucket}/{self.prefix}"
        config = botocore.config.Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 4})
        session = botocore.session.get_session()
        session.register_component("data_loader", _models())
        self.client = session.create_client("s3", endpoint_url=endpoint or None, config=config)
        self.readers = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="records-s3-read")

    def __str__(self) -> str:
        return self.url

    @_unavailable
    def check(self) -> None:
        """BlobsError, saying why, unless the bucket answers (at start-up: a clear error rather than failed uploads)."""
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def key(self, name: str) -> str:
        return self.prefix + name

    def open(self, segments: list[Segment], whole: bool) -> ObjectContent:  # noqa: ARG002 (checked as it is read)
        return ObjectContent(self, segments)

    @_unavailable
    def get(self, name: str, offset: int, length: int) -> Any:
        """The body of a GET of `length` bytes of the object from `offset` (FileNotFoundError: no such object)."""
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.key(name), Range=f"bytes={offset}-{offset + length - 1}"
            )
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.key(name)} in {self.bucket}") from None
        return answer["Body"]

    @_unavailable
    def send(self, path: Path, name: str, at: int = 0, upto: int | None = None) -> None:
        """Write the bytes at..upto of the file `path` (to its end: None) as the object `name` (blocks). Nothing
        is left behind where it fails."""
        upto = os.path.getsize(path) if upto is None else upto
        sender = ObjectSender(self, path, name, at)
        try:
            sender.send_parts(upto, last=True)
            sender.complete()
        except BaseException:
            sender.abort()
            raise

    @_unavailable
    def remove(self, name: str) -> None:
        """Remove the object. A download that has begun reading it goes on (its GET does); one that has not yet
        begun a run of it (an appended record, replaced or deleted during its download) is cut off there."""
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    @_unavailable
    def remove_all(self, names: list[str]) -> None:
        """Remove the objects (a thousand to a request)."""
        for at in range(0, len(names), 1000):
            keys = [{"Key": self.key(name)} for name in names[at : at + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    @_unavailable
    def merged(self, segment: Segment) -> Segment | None:
        """Where the bytes of the run `segment` of an append piece are once the piece's runs were merged into one
        object (None: nowhere)."""
        run = run_of(segment.name)
        if run is None or segment.name.endswith(MERGED):
            return None
        piece, at = run
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(piece + "."))
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                found = run_of(name) if name.endswith(MERGED) else None
                if found is not None and found[1] <= at and found[1] + item["Size"] >= at + segment.end:
                    return Segment(name, at - found[1] + segment.offset, segment.length)
        return None

    @_unavailable
    def names(self, older_than: float | None = None) -> list[str]:
        """The objects under the prefix (those last changed before the Unix time `older_than`, if given)."""
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                if older_than is None or item["LastModified"].timestamp() < older_than:
                    found.append(item["Key"][len(self.prefix) :])
        return [name for name in found if "/" not in name]

    @_unavailable
    def unfinished(self) -> list[tuple[str, str]]:
        """The multipart uploads under the prefix that were begun and neither completed nor aborted: (name, id)."""
        found = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Uploads", []):
                found.append((item["Key"][len(self.prefix) :], item["UploadId"]))
        return found

    @_unavailable
    def abort(self, name: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(name), UploadId=upload_id)

    def close(self) -> None:
        self.readers.shutdown(wait=False)
        self.client.close()


class ObjectSender:
    """Writes a growing file to one object, a part of PART bytes at a time as the file fills (a multipart upload,
    begun with the first full part); `complete` sends the rest and makes the object, `abort` leaves nothing."""

    def __init__(self, blobs: ObjectBlobs, path: Path, name: str, at: int = 0) -> None:
        self.blobs = blobs
        self.path = path
        self.name = name
        self.sent = at  # the file's bytes up to here are in parts sent
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self._rest = b""  # what was left under a part (last=True), for complete()
        self._busy: asyncio.Future | None = None
        self._size = at  # the file's size, as last heard
        self.error: BaseException | None = None

    def written(self, size: int) -> None:
        """The file now has `size` bytes: send its full parts in a thread, unless a sending is under way (called on
        the event loop)."""
        self._size = size
        if size - self.sent >= PART and (self._busy is None or self._busy.done()) and self.error is None:
            self._busy = asyncio.get_running_loop().run_in_executor(None, self._send_logged)

    def _send_logged(self) -> None:
        try:
            while self._size - self.sent >= PART:  # what was written while a part was sent, too
                self.send_parts(self._size, last=False)
        except BaseException as exc:  # noqa: BLE001 (kept: complete() raises it)
            self.error = exc

    @_unavailable
    def send_parts(self, upto: int, last: bool) -> None:
        """Send the file's bytes up to `upto` in parts of PART bytes (with `last`, what is left under a part is
        read for complete(), else it waits for more). Blocks."""
        client = self.blobs.client
        with open(self.path, "rb") as file:
            while upto - self.sent >= PART or (last and upto > self.sent):
                data = os.pread(file.fileno(), min(PART, upto - self.sent), self.sent)
                if len(data) < min(PART, upto - self.sent):
                    raise BlobsError(f"the file {self.path.name} is shorter than its upload")
                if len(data) < PART and self.upload_id is None:
                    self._rest = data  # one small object: complete() puts it whole
                    self.sent += len(data)
                    return
                if self.upload_id is None:
                    self.upload_id = client.create_multipart_upload(
                        Bucket=self.blobs.bucket, Key=self.blobs.key(self.name)
                    )["UploadId"]
                number = len(self.parts) + 1
                answer = client.upload_part(
                    Bucket=self.blobs.bucket, Key=self.blobs.key(self.name), UploadId=self.upload_id,
                    PartNumber=number, Body=data,
                )  # fmt: skip
                self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                self.sent += len(data)

    async def finish(self, size: int) -> None:
        """Send the rest of the file (it has `size` bytes) and complete the object; raises what a part's sending
        met."""
        loop = asyncio.get_running_loop()
        if self._busy is not None:
            await self._busy
        if self.error is not None:
            raise self.error
        await loop.run_in_executor(None, self.send_parts, size, True)
        await loop.run_in_executor(None, self.complete)

    @_unavailable
    def complete(self) -> None:
        """Make the object of the parts sent (or of the small rest alone). Blocks."""
        client = self.blobs.client
        if self.upload_id is None:
            client.put_object(Bucket=self.blobs.bucket, Key=self.blobs.key(self.name), Body=self._rest)
            return
        client.complete_multipart_upload(
            Bucket=self.blobs.bucket, Key=self.blobs.key(self.name), UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )  # fmt: skip
        self.upload_id = None

    def abort(self) -> None:
        """Abort the multipart upload, if one was begun and not completed (blocks; a failure is left to the sweep of
        unfinished uploads at a next start)."""
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            try:
                self.blobs.abort(self.name, upload_id)
            except Exception:  # noqa: BLE001
                pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blobs(blobs: str, data_dir: Path, endpoint: str | None = None) -> FileBlobs | ObjectBlobs:
    """The blob store `blobs` names: empty for the data directory's blobs/, or s3://bucket/prefix."""
    if blobs.startswith("s3://"):
        store = ObjectBlobs(blobs, endpoint)
        store.check()
        return store
    return FileBlobs(data_dir / "blobs")
