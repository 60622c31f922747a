"""Ogg pages (RFC 3533) read through a reader that can read any range (an object store's content): a stream's header
pages, and the page where a time's audio is, found by bisection on the pages' granule positions as ffmpeg seeks in a
file. So that a clip of a record with no file is fed to ffmpeg from near its start, not from the record's start.

Only a stream of one logical bitstream whose granule positions count samples at `rate` (Opus: 48 kHz; Vorbis, FLAC:
the sample rate); a chained stream (a live recording whose encoder started again) gives None, and is read from its
start.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

CAPTURE = b"OggS"
WINDOW = 1 << 16  # bytes read at each step of the bisection: more than a page (at most 65,307 bytes)
HEADER_BYTES = 1 << 20  # the most bytes of header pages looked through (cover art in the comments can be large)
UNKNOWN = (1 << 64) - 1  # a page on which no packet ends


@dataclasses.dataclass(frozen=True)
class Page:
    """A page at `offset` in the stream, `length` bytes long, of bitstream `serial`, with its granule position."""

    offset: int
    length: int
    serial: int
    granule: int


def page_in(data: bytes, at: int, base: int) -> Page | None:
    """The page that starts at `at` in `data` (read from `base` in the stream), if a whole one does."""
    if data[at : at + 4] != CAPTURE or len(data) < at + 27:
        return None
    count = data[at + 26]
    if len(data) < at + 27 + count:
        return None
    length = 27 + count + sum(data[at + 27 : at + 27 + count])
    granule = int.from_bytes(data[at + 6 : at + 14], "little")
    return Page(base + at, length, int.from_bytes(data[at + 14 : at + 18], "little"), granule)


def headers(read: Callable[[int, int], bytes]) -> tuple[bytes, int] | None:
    """The stream's header pages (those before its first page of audio: granule position 0), as bytes, and its
    bitstream's serial number; None if it does not begin as one Ogg bitstream."""
    data = read(0, HEADER_BYTES)
    at, serial = 0, None
    while (page := page_in(data, at, 0)) is not None and page.granule == 0:
        if serial is not None and page.serial != serial:
            return None  # several bitstreams multiplexed
        serial = page.serial
        at += page.length
    if serial is None or page is None or page.serial != serial:
        return None
    return data[:at], serial


def first_page(read: Callable[[int, int], bytes], at: int) -> Page | None:
    """The first page found from `at` on whose granule position is known."""
    data = read(at, 2 * WINDOW)
    found = data.find(CAPTURE)
    while found >= 0:
        page = page_in(data, found, at)
        if page is not None and page.granule != UNKNOWN:
            return page
        found = data.find(CAPTURE, found + 1)
    return None


def page_before(read: Callable[[int, int], bytes], size: int, serial: int, start: int, seconds: float,
                rate: int) -> int | None:  # fmt: skip
    """The offset of a page from which the stream's audio holds `seconds` (a page whose audio ends before it: the
    next one's starts there or before), looking from `start` (after the header pages) to `size`; None where a page
    of another bitstream is met (a chained stream)."""
    target = seconds * rate
    low, high = start, size
    while high - low > WINDOW:
        middle = (low + high) // 2
        page = first_page(read, middle)
        if page is None or page.offset >= high:
            high = middle
        elif page.serial != serial:
            return None
        elif page.granule < target:
            low = page.offset
        else:
            high = middle
    return low
