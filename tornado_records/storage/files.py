"""The embedded content engine: each blob a file in the data directory's blobs/, on the filesystem of its tmp/
so that a rename is atomic. Knows nothing of HTTP nor of the index (see content.py for the interface).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import os
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from tornado_records.storage.model import BlobsError, Segment


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
            unlink(self.directory / name)

    def receiver(self, path: Path, name: str) -> FileReceiver:
        """The upload being written to `path` (in tmp/), to become the blob file `name`."""
        return FileReceiver(self, path, name)

    def new_name(self, owner: int) -> str:  # noqa: ARG002 (one directory: a random name is enough)
        return uuid.uuid4().hex

    def whole_file(self, segment: Segment) -> str | None:
        """The file that holds exactly the run from its start (sendfile or nginx send it as it is)."""
        return segment.name if segment.offset == 0 else None

    def join_run(
        self, path: Path, piece: str, at: int, upto: int, segments: list[Segment], modified: int
    ) -> tuple[list[Segment], str | None]:
        """The runs of a version that adds the bytes at..upto of the append piece's file (its blob file: a run of it
        that ends at `at` grows), and no object made for it (blocks)."""
        os.utime(path, (modified, modified))  # Last-Modified, when nginx sends the file itself
        if segments and segments[-1].name == piece and segments[-1].end == at:
            return segments[:-1] + [Segment(piece, segments[-1].offset, upto - segments[-1].offset)], None
        return segments + [Segment(piece, at, upto - at)], None

    def merge_runs(self, path: Path, piece: str, runs: list[Segment]) -> Segment | None:  # noqa: ARG002
        """Runs of one file that follow on are one run already (join_run): nothing to merge."""
        return None

    def piece_done(self, path: Path, piece: str, named: bool) -> None:  # noqa: ARG002
        """An append piece ended and all it brought is in its record: its file goes unless the version names it."""
        if not named:
            self.remove(piece)

    def sweep(self, known: set[str], older_than: float | None, ended: Callable[[int], bool]) -> None:  # noqa: ARG002
        """Nothing beyond the data directory's blobs/, which the start-up sweeps itself."""

    def abort_unfinished(self, ended: Callable[[int], bool]) -> int:  # noqa: ARG002
        return 0

    def remove_all(self, names: list[str]) -> None:
        for name in names:
            self.remove(name)

    unit = "files"

    def describe(self, name: str) -> str:
        return f"blobs/{name}"

    def stat(self, name: str) -> tuple[int, float] | None:
        """The blob's size and last change (Unix time), or None if there is none."""
        try:
            found = os.stat(self.directory / name, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return found.st_size, found.st_mtime

    def names(self, older_than: float | None = None) -> list[str]:
        """The blob files (those last changed before the Unix time `older_than`, if given)."""
        found = []
        for name in os.listdir(self.directory) if self.directory.is_dir() else []:
            if older_than is None or ((stat := self.stat(name)) is not None and stat[1] < older_than):
                found.append(name)
        return found

    def place(self, path: Path, name: str, modified: int) -> None:
        """Make the durable file `path` (in tmp/) the blob `name`: renamed, its mtime the version's Last-Modified (so
        that nginx sending it itself agrees); its name is durable after the next `sync_placed`."""
        os.rename(path, self.directory / name)
        os.utime(self.directory / name, (modified, modified))

    def sync_placed(self) -> None:
        """Make the names of the files placed so far durable: one fsync of blobs/ for all of them."""
        fsync_dir(self.directory)

    def remove(self, name: str) -> None:
        """Remove the blob file, at once, or, while open contents hold it, when the last of them is closed."""
        with self._lock:
            if self._held[name] > 0:
                self._removed.add(name)
                return
        unlink(self.directory / name)

    def close(self) -> None:
        pass


class FileReceiver:
    """An upload's file in tmp/ on its way to be the blob file `name`: made durable (fsync) when whole, renamed into
    blobs/ by the commit."""

    def __init__(self, blobs: FileBlobs, path: Path, name: str) -> None:
        self.blobs, self.path, self.name = blobs, path, name
        self.pending = False
        self.keeps_file = True

    def written(self, size: int) -> None:
        """Nothing to do as the file grows."""

    async def finish(self, size: int) -> None:  # noqa: ARG002
        """Make the whole file's content durable (a thread's hand-off and back: an upload's own writer does it in its
        last turn instead, see NewContent.durable)."""
        await asyncio.get_running_loop().run_in_executor(None, fsync_content, self.path)

    def place(self, modified: int) -> None:
        """In the commit's transaction: the file becomes the blob (its name durable at the store's sync_placed;
        blocks)."""
        self.blobs.place(self.path, self.name, modified)

    def abort(self) -> None:
        """Nothing beyond the file in tmp/, which its upload removes."""


# Frees the blocks of removed blob files: one thread, so that removals never take more than one core's time.
_freeing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="blob-freeing")


def unlink(path: Path) -> None:
    """Remove the file's name at once, and free its blocks in a thread of its own: freeing a GiB's blocks took 0.2-0.3 s
    here (in the last close of the file), which delayed the answer to the commit that replaced it and the commits
    that shared its transaction (docs/benchmarks.md). The space is back shortly after."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        _freeing.submit(os.close, fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_content(path: Path) -> None:
    """Make a file's content durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path, directory: Path) -> None:
    """Make a file's content and its name in `directory` durable."""
    fsync_content(path)
    fsync_dir(directory)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_BLOCK = 4096  # the file system's block: holes are punched in whole blocks


def punch_hole(path: Path, start: int, stop: int) -> bool:
    """Give back the disk space of the file's bytes start..stop (whole blocks), which then read as zeros; its size and
    other bytes stay. False where the file system cannot (then nothing changes)."""
    start, stop = -(-start // _BLOCK) * _BLOCK, stop // _BLOCK * _BLOCK
    if stop <= start:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_WRONLY)
    try:
        return libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, stop - start) == 0
    finally:
        os.close(fd)
