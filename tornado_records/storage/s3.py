"""The content engine of scale-out: each blob an object in an S3-compatible bucket (`--blobs s3://bucket/prefix`).
Knows nothing of HTTP nor of the index (see content.py for the interface).

The data directory still holds what is in flight (tmp/, append pieces while they arrive, resumable uploads), and an
object is written in parts as its file fills, several at once (`ObjectSender`, s3_sender.py), so that the commit at
the end of an upload has little left to send. A join of an append piece is an object of its own, `PIECE.AT`; when the
piece ends its runs are merged into one object, `PIECE.AT.merged`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable

from tornado_records.storage.model import MERGED, BlobsError, Segment, run_of
from tornado_records.storage.s3_sender import SENDERS, ClientError, ObjectSender, unavailable

log = logging.getLogger("tornado_records.storage")


class ObjectContent:
    """The bytes of a version in objects, open for reading: one ranged GET a run, kept open while reads follow on.
    `aread` reads ahead: while the caller sends what it got, the next as many bytes are read in a thread."""

    local = False

    def __init__(self, blobs: ObjectBlobs, segments: list[Segment]) -> None:
        self._blobs = blobs
        self._segments = segments
        self._at = 0
        self._body: Any = None  # the open GET's body
        self._body_at = -1  # the position in the content its next byte has
        self._body_left = 0
        self._ahead: tuple[int, concurrent.futures.Future] | None = None  # a read from a position, begun ahead

    def seek(self, position: int) -> None:
        self._at = position

    def read(self, size: int) -> bytes:
        """Up to `size` bytes from the position (fewer at the end of a run; empty at the end). Blocks."""
        self._drop_ahead()
        data = self._read_at(self._at, size)
        self._at += len(data)
        return data

    async def aread(self, size: int) -> bytes:
        """read(), in a thread, and the next read begun."""
        position, ahead = self._at, self._ahead
        self._ahead = None
        if ahead is not None and ahead[0] != position:
            with contextlib.suppress(Exception):  # it has the GET's body until it ends; its outcome is not wanted
                await asyncio.wrap_future(ahead[1])
            ahead = None
        if ahead is None:
            ahead = (position, self._blobs.readers.submit(self._read_at, position, size))
        data = await asyncio.wrap_future(ahead[1])
        if len(data) > size:  # read ahead for a bigger read than this one
            rest: concurrent.futures.Future = concurrent.futures.Future()
            rest.set_result(data[size:])
            data = data[:size]
            self._ahead = (position + size, rest)
        elif data:
            self._ahead = (position + len(data), self._blobs.readers.submit(self._read_at, position + len(data), size))
        self._at = position + len(data)
        return data

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            concurrent.futures.wait([self._ahead[1]])
            self._ahead = None

    @unavailable
    def _read_at(self, position: int, size: int) -> bytes:
        if self._body is None or self._body_at != position or self._body_left == 0:
            if not self._open(position):
                return b""
        data = self._body.read(min(size, self._body_left))
        if not data:
            raise BlobsError("the object store ended a read before the run's end")
        self._body_at = position + len(data)
        self._body_left -= len(data)
        return data

    def _open(self, position: int) -> bool:
        self._close_body()
        base = 0
        for segment in self._segments:
            if position < base + segment.length:
                skip = position - base
                try:
                    self._body = self._blobs.get(segment.name, segment.offset + skip, segment.length - skip)
                except FileNotFoundError:
                    moved = self._blobs.merged(segment)  # its piece ended and its runs were merged meanwhile
                    if moved is None:
                        raise
                    self._body = self._blobs.get(moved.name, moved.offset + skip, moved.length - skip)
                self._body_at, self._body_left = position, segment.length - skip
                return True
            base += segment.length
        return False

    def _close_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        """Close the GET; a read ahead under way closes it when it ends (however often this is called meanwhile)."""
        if self._ahead is not None and not self._ahead[1].done():
            self._ahead[1].add_done_callback(lambda _: self._close_body())
        else:
            self._ahead = None
            self._close_body()


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
        # No CRC32 of each part (botocore's default since 1.36, 8 % of an upload's CPU): over HTTP the signature
        # carries each part's SHA-256 (x-amz-content-sha256, checked against the body); over HTTPS, TLS guards it.
        config = botocore.config.Config(
            max_pool_connections=64, retries={"mode": "standard", "max_attempts": 4},
            request_checksum_calculation="when_required",
        )  # fmt: skip
        session = botocore.session.get_session()
        session.register_component("data_loader", _models())
        self.client = session.create_client("s3", endpoint_url=endpoint or None, config=config)
        self.readers = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="records-s3-read")
        self.senders = concurrent.futures.ThreadPoolExecutor(SENDERS, thread_name_prefix="records-s3-send")

    def __str__(self) -> str:
        return self.url

    @unavailable
    def check(self) -> None:
        """BlobsError, saying why, unless the bucket answers (at start-up: a clear error rather than failed uploads)."""
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def key(self, name: str) -> str:
        return self.prefix + name

    def open(self, segments: list[Segment], whole: bool) -> ObjectContent:  # noqa: ARG002 (checked as it is read)
        return ObjectContent(self, segments)

    @unavailable
    def get(self, name: str, offset: int, length: int) -> Any:
        """The body of a GET of `length` bytes of the object from `offset` (FileNotFoundError: no such object)."""
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.key(name), Range=f"bytes={offset}-{offset + length - 1}"
            )
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.key(name)} in {self.bucket}") from None
        return answer["Body"]

    @unavailable
    def send(self, path: Path, name: str, at: int = 0, upto: int | None = None) -> None:
        """Write the bytes at..upto of the file `path` (to its end: None) as the object `name` (blocks). Nothing
        is left behind where it fails."""
        upto = os.path.getsize(path) if upto is None else upto
        sender = ObjectSender(self, path, name, at)
        try:
            sender.send(upto)
        except BaseException:
            sender.abort()
            raise

    def sync_placed(self) -> None:
        """Nothing: an object is durable under its name once complete."""

    @unavailable
    def remove(self, name: str) -> None:
        """Remove the object. A download that has begun reading it goes on (its GET does); one that has not yet
        begun a run of it (an appended record, replaced or deleted during its download) is cut off there."""
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    @unavailable
    def remove_all(self, names: list[str]) -> None:
        """Remove the objects (a thousand to a request)."""
        for at in range(0, len(names), 1000):
            keys = [{"Key": self.key(name)} for name in names[at : at + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    @unavailable
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

    @unavailable
    def stat(self, name: str) -> tuple[int, float] | None:
        """The object's size and last change (Unix time), or None if there is none."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return answer["ContentLength"], answer["LastModified"].timestamp()

    @unavailable
    def names(self, older_than: float | None = None) -> list[str]:
        """The objects under the prefix (those last changed before the Unix time `older_than`, if given)."""
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                if older_than is None or item["LastModified"].timestamp() < older_than:
                    found.append(item["Key"][len(self.prefix) :])
        return [name for name in found if "/" not in name]

    @unavailable
    def unfinished(self) -> list[tuple[str, str]]:
        """The multipart uploads under the prefix that were begun and neither completed nor aborted: (name, id)."""
        found = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Uploads", []):
                found.append((item["Key"][len(self.prefix) :], item["UploadId"]))
        return found

    @unavailable
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
        self.senders.shutdown(wait=False)
        self.client.close()
