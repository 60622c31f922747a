"""Writes to the end of a file that bypass the page cache where whole pages allow (O_DIRECT), for the spool's writer.

An upload's bytes written through the page cache cost the kernel a copy into newly allocated cache pages, the
writeback's work on each page (partly in the writer's own `sync_file_range`, then the commit's fsync), and later
the reclaim of those pages: on the development machine that was 1 to 2.5 s of system CPU per GiB, and it was the
most variable part of an upload's cost (docs/benchmarks.md). A direct write hands the pages of a user buffer to the
disk instead; the commit's fsync then only flushes the disk's cache and the file's size.

O_DIRECT wants the buffer, the file offset and the length aligned (PAGE covers the disks met so far), so each turn of
the writer copies its bytes into an aligned staging buffer of its thread (hot in the CPU's cache: far cheaper than the
copy into new cache pages) and writes its whole pages directly; the last, partial page of the file goes through the
page cache, and so does the next turn's start, up to the next page boundary. Direct writes thus never overlap a page
that the page cache holds (which would have the kernel write that page and wait for it first), and every byte handed
in is in the file at the end of each turn, as the spool promises (a reader of the file sees it all).

Where the file system refuses O_DIRECT, `open_direct` returns None and the spool writes through the page cache.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

PAGE = 4096  # alignment of direct writes: buffer address, file offset and length
STAGE = 512 << 10  # the staging buffer of each writer thread (a direct write takes at most this much)

_stages = threading.local()


def _stage() -> memoryview:
    """The calling thread's staging buffer (page-aligned: an anonymous mapping)."""
    view = getattr(_stages, "view", None)
    if view is None:
        view = _stages.view = memoryview(mmap.mmap(-1, STAGE))
    return view


class DirectWriter:
    """Sequential writes to the end of the file open as `fd` (its size is where they begin): whole pages through a
    second descriptor opened with O_DIRECT, the rest through `fd`. `at` is the file's size: what was written."""

    def __init__(self, fd: int, direct: int) -> None:
        self._fd = fd
        self._direct: int | None = direct
        self.at = os.fstat(fd).st_size

    def write(self, views: list[bytes | memoryview]) -> None:
        """Write the views, one after the other, at the end of the file; on an error, `at` counts what is in it."""
        stage = _stage()
        staged = 0
        for view in views:
            data = memoryview(view)
            while data:
                if not staged and self.at % PAGE:  # the file ends within a page: complete it through the cache
                    size = min(len(data), PAGE - self.at % PAGE)
                    self._buffered(data[:size])
                    data = data[size:]
                    continue
                take = min(len(data), STAGE - staged)
                stage[staged : staged + take] = data[:take]
                staged += take
                data = data[take:]
                if staged == STAGE:
                    self._flush(stage, staged)
                    staged = 0
        self._flush(stage, staged)

    def _flush(self, stage: memoryview, staged: int) -> None:
        """Write the staged bytes (they begin at a page boundary of the file): their whole pages directly, the rest
        through the page cache."""
        whole = staged // PAGE * PAGE if self._direct is not None else 0
        done = 0
        while done < whole:
            try:
                written = os.pwrite(self._direct, stage[done:whole], self.at)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._stop_direct()  # an alignment this disk refuses: the page cache from here on
                break
            if not written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.at += written
            done += written
            if written % PAGE:  # a short write that ended within a page: the rest through the page cache
                break
        self._buffered(stage[done:staged])

    def _buffered(self, data: memoryview) -> None:
        while data:
            written = os.pwrite(self._fd, data, self.at)
            if not written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.at += written
            data = data[written:]

    def _stop_direct(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None

    def close(self) -> None:
        """Close the direct descriptor (`fd` is its owner's)."""
        self._stop_direct()


def open_direct(fd: int) -> DirectWriter | None:
    """A DirectWriter for the file open as `fd`, or None where its file system does not take O_DIRECT."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        direct = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | flag | os.O_CLOEXEC)
    except OSError:
        return None
    return DirectWriter(fd, direct)
