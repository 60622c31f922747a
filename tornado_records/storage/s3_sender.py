"""A file of the data directory on its way to be one object of the S3 content engine (s3.py): a multipart upload
whose parts are sent as the file fills, several at once, and botocore's errors turned into the store's.

The parts are sent by the content store's `senders`, a few threads that every upload of the process shares, each
part read from the file as botocore hashes and sends it (`FilePart`): no part is ever whole in memory, and the memory
the object store's uploads take does not grow with the part's size nor with the number of uploads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tornado_records.storage.model import BlobsError, BlobsUnavailable

if TYPE_CHECKING:
    from tornado_records.storage.s3 import ObjectBlobs

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # without the [scale] extra there is no object store, and none of its errors
    BotoCoreError = ClientError = type("NoBotocoreError", (Exception,), {})

# Bytes of each part of a multipart upload but the last (S3 refuses parts under 5 MiB but the last). 16 MiB did no
# better against SeaweedFS (the parts' memory does not depend on it, see FilePart), and leaves more to send at the end.
PART = 8 << 20
# Parts sent at once by a process. Sent one at a time, a part's request waited on the store's answer a third of its
# time (py-spy, 1 GiB to SeaweedFS); four keep the store busy (eight did no better, and took 10 MB more: each thread
# keeps an allocator arena of its own).
SENDERS = 4
READ_BLOCK = 256 << 10  # urllib3 sends a body 16 KiB at a time: a system call for 16 of them


def unavailable(method: Callable) -> Callable:
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


class FilePart(io.RawIOBase):
    """`length` bytes of an open file from `offset`, as a file of their own. botocore reads a part's body to hash it
    for the signature, seeks back, and sends it a block at a time; given bytes, it would hold the whole part in memory
    meanwhile. See `part_body`."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._offset, self._length = fd, offset, length
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._length - self._at]
        got = os.preadv(self._fd, [view], self._offset + self._at)
        if not got and len(view):
            raise BlobsError("the file is shorter than its upload")
        self._at += got
        return got

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._length}[whence]
        self._at = min(max(0, base + position), self._length)
        return self._at

    def tell(self) -> int:
        return self._at


def part_body(fd: int, offset: int, length: int) -> io.BufferedReader:
    """A part's body for botocore: the file's bytes read a MiB at a time (its hashing reads a MiB at a time, and
    urllib3's sending 16 KiB at a time: from the buffer, not a system call each)."""
    return io.BufferedReader(FilePart(fd, offset, length), READ_BLOCK)


class ObjectSender:
    """Writes a growing file, from `at`, to one object: a part of PART bytes is queued for the senders as soon as the
    file holds it (the multipart upload is begun by the first part sent); `finish` queues the rest and makes the
    object, `abort` leaves nothing. A file under a part in all is put whole at the end."""

    def __init__(self, blobs: ObjectBlobs, path: Path, name: str, at: int = 0) -> None:
        self.blobs = blobs
        self.path = path
        self.name = name
        self.at = at
        self.queued = at  # the file's bytes up to here are in parts queued or sent
        self.upload_id: str | None = None
        self._parts: list[concurrent.futures.Future] = []  # each part's sending, in order
        self._etags: dict[int, str] = {}
        self._lock = threading.Lock()  # the upload's beginning and its abort
        self._aborted = False
        self.keeps_file = False  # finish makes the object

    @property
    def pending(self) -> bool:
        """Parts were queued, or a multipart upload begun, and the object neither made nor aborted."""
        return bool(self._parts) or self.upload_id is not None

    def written(self, size: int) -> None:
        """The file now has `size` bytes: queue its full parts (on the event loop; does not block)."""
        last = self._parts[-1] if self._parts else None
        if last is None or not last.done() or last.cancelled() or last.exception() is None:  # not past a failure
            self._queue(size, last=False)

    def _queue(self, upto: int, last: bool) -> None:
        """Queue the parts of the bytes up to `upto` (with `last`, what is under a part too, as the last part)."""
        while upto - self.queued >= PART or (last and upto > self.queued):
            length = min(PART, upto - self.queued)
            number = (self.queued - self.at) // PART + 1
            self._parts.append(self.blobs.senders.submit(self._send_part, number, self.queued, length))
            self.queued += length

    def _small(self, size: int) -> bool:
        """Whether the whole file, of `size` bytes, is one object put at once (nothing was queued)."""
        return not self._parts and size - self.at < PART

    async def finish(self, size: int) -> None:
        """Send the rest of the file (it has `size` bytes) and make the object; raises what a part's sending met."""
        loop = asyncio.get_running_loop()
        if self._small(size):
            await loop.run_in_executor(self.blobs.senders, self._put_whole, size)
            return
        self._queue(size, last=True)
        for part in self._parts:
            await asyncio.wrap_future(part)
        await loop.run_in_executor(None, self.complete)

    def send(self, size: int) -> None:
        """finish(), blocking (not on a sender's thread)."""
        if self._small(size):
            self._put_whole(size)
            return
        self._queue(size, last=True)
        for part in self._parts:
            part.result()
        self.complete()

    @unavailable
    def _put_whole(self, size: int) -> None:
        with open(self.path, "rb") as file:
            body = part_body(file.fileno(), self.at, size - self.at)
            self.blobs.client.put_object(Bucket=self.blobs.bucket, Key=self.blobs.key(self.name), Body=body)

    @unavailable
    def _send_part(self, number: int, offset: int, length: int) -> None:
        """Send one part (on a sender's thread); nothing once the upload was aborted."""
        with self._lock:
            if self._aborted:
                return
            if self.upload_id is None:
                self.upload_id = self.blobs.client.create_multipart_upload(
                    Bucket=self.blobs.bucket, Key=self.blobs.key(self.name)
                )["UploadId"]
        with open(self.path, "rb") as file:
            answer = self.blobs.client.upload_part(
                Bucket=self.blobs.bucket, Key=self.blobs.key(self.name), UploadId=self.upload_id, PartNumber=number,
                Body=part_body(file.fileno(), offset, length),
            )  # fmt: skip
        self._etags[number] = answer["ETag"]

    @unavailable
    def complete(self) -> None:
        """Make the object of the parts sent. Blocks."""
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in sorted(self._etags.items())]
        self.blobs.client.complete_multipart_upload(
            Bucket=self.blobs.bucket, Key=self.blobs.key(self.name), UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )  # fmt: skip
        self.upload_id = None
        self._parts.clear()

    def abort(self) -> None:
        """Drop the parts not yet sent, wait for those being sent, and abort the multipart upload if one was begun
        (blocks; a failure is left to the sweep of unfinished uploads at a next start)."""
        with self._lock:
            self._aborted = True
        for part in self._parts:
            part.cancel()
        concurrent.futures.wait(self._parts)
        self._parts.clear()
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            try:
                self.blobs.abort(self.name, upload_id)
            except Exception:  # noqa: BLE001
                pass

    def place(self, modified: int) -> None:
        """In the commit's transaction: nothing, the object is whole already."""
