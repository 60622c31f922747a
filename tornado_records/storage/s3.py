"""The content engine of scale-out: each blob an object in an S3-compatible bucket (`--blobs s3://bucket/prefix`).
Knows nothing of HTTP nor of the index (see content.py for the interface).

The data directory still holds what is in flight (tmp/, append pieces while they arrive, resumable uploads), and an
object is written in parts of PART bytes as its file fills (`ObjectSender`), so that the commit at the end of an
upload has at most one part left to send. A join of an append piece is an object of its own, `PIECE.AT`; when the
piece ends its runs are merged into one object, `PIECE.AT.merged`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable

from tornado_records.storage.model import MERGED, BlobsError, BlobsUnavailable, Segment, run_of

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # without the [scale] extra there is no object store, and none of its errors
    BotoCoreError = ClientError = type("NoBotocoreError", (Exception,), {})

log = logging.getLogger("tornado_records.storage")

PART = 8 << 20  # bytes of each part of a multipart upload but the last (S3 refuses parts under 5 MiB but the last)


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

    def sync_placed(self) -> None:
        """Nothing: an object is durable under its name once complete."""

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

    unit = "objects"

    def describe(self, name: str) -> str:
        return f"{self.url}{name}"

    @_unavailable
    def stat(self, name: str) -> tuple[int, float] | None:
        """The object's size and last change (Unix time), or None if there is none."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return answer["ContentLength"], answer["LastModified"].timestamp()

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

    def receiver(self, path: Path, name: str) -> ObjectSender:
        """The upload being written to `path` (in tmp/), sent as it fills to become the object `name`."""
        return ObjectSender(self, path, name)

    def new_name(self, owner: int) -> str:
        """Random, after the name of the process that writes it, so that the sweep at a start knows whose
        unfinished uploads it finds."""
        return f"{owner:x}-{uuid.uuid4().hex}"

    def whole_file(self, segment: Segment) -> str | None:  # noqa: ARG002
        """No file of the data directory holds an object."""
        return None

    def join_run(
        self, path: Path, piece: str, at: int, upto: int, segments: list[Segment], modified: int  # noqa: ARG002
    ) -> tuple[list[Segment], str | None]:
        """The runs of a version that adds the bytes at..upto of the append piece's file: they become the object
        `PIECE.AT` (sent now; blocks), which is returned too, for removal if the version is not made."""
        sent = f"{piece}.{at}"
        self.send(path, sent, at, upto)
        return segments + [Segment(sent, 0, upto - at)], sent

    def merge_runs(self, path: Path, piece: str, runs: list[Segment]) -> Segment | None:
        """One object `PIECE.AT.merged` holding the runs of the piece that follow on in its file (sent from the file;
        blocks)."""
        first = run_of(runs[0].name)[1] + runs[0].offset
        merged = Segment(f"{piece}.{first}{MERGED}", 0, sum(run.length for run in runs))
        self.send(path, merged.name, first, first + merged.length)
        return merged

    def piece_done(self, path: Path, piece: str, named: bool) -> None:  # noqa: ARG002
        """An append piece ended: its file in the data directory goes (its bytes are in objects)."""
        path.unlink(missing_ok=True)

    def sweep(self, known: set[str], older_than: float | None, ended: Callable[[int], bool]) -> None:
        """At a start: abort the multipart uploads that processes that ended began, and remove the objects not in
        `known` (those last changed before `older_than`, if given)."""
        self.abort_unfinished(ended)
        orphans = set(self.names(older_than)) - known
        self.remove_all(sorted(orphans))
        if orphans:
            log.warning("removed %d orphan object(s) from %s", len(orphans), self)

    def abort_unfinished(self, ended: Callable[[int], bool]) -> int:
        """Abort the multipart uploads that processes that ended began (`ended`, given the owner a name begins
        with); how many."""
        aborted = 0
        for name, upload_id in self.unfinished():
            try:
                owner = int(name.split("-", 1)[0], 16)  # see new_name
            except ValueError:
                owner = 0
            if ended(owner):
                self.abort(name, upload_id)
                aborted += 1
        if aborted:
            log.warning("aborted %d unfinished upload(s) in %s", aborted, self)
        return aborted

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

    @property
    def pending(self) -> bool:
        """A multipart upload was begun and neither completed nor aborted."""
        return self.upload_id is not None

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

    def place(self, modified: int) -> None:
        """In the commit's transaction: nothing, the object is whole already."""
