"""Where a live stream can be cut cleanly: the first whole MP3 frame, or the first Ogg page that begins a packet, at or
after a byte offset of the stream's file (appends.py, when a standby recorder takes over mid-stream).

- MP3 (`audio/mpeg`): a frame header (MPEG 1, 2 or 2.5, Layer III) followed, one frame later, by another; the cut
  joins after the live recorder's last frame, and decoders play across it as across any MP3 join.
- Ogg (`audio/ogg`, `application/ogg`, `audio/opus`): a page that does not continue a packet, followed by another
  page; the stream's header pages (those with granule position 0 at its start) are joined first, so that the record
  goes on as a new link of a chained Ogg stream, as after any reconnect.
- Any other type is cut at the byte: what follows may begin mid-frame (docs/recording.md).

Pure functions of the file's bytes; nothing here knows of HTTP or of the store.
"""

from __future__ import annotations

import os
from pathlib import Path

WINDOW = 1 << 20  # bytes looked through for a clean cut; past it without one, the cut is at the byte
MP3_TYPES = {"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg"}
OGG_TYPES = {"audio/ogg", "application/ogg", "audio/opus", "audio/vorbis", "audio/x-ogg"}
_V1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_V2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by MPEG version bits


def kind_of(content_type: str) -> str | None:
    """"mp3", "ogg", or None for a type cut at the byte."""
    base = content_type.split(";")[0].strip().lower()
    return "mp3" if base in MP3_TYPES else "ogg" if base in OGG_TYPES else None


def clean_cut(path: Path, at: int, size: int, content_type: str, final: bool) -> tuple[int, int] | None:
    """The cut at or after `at` in the first `size` bytes of the stream's file, and how many of its first bytes (its
    header) must be joined before it (0: none); None while the bytes that would show the cut have not come yet (never
    when `final`: no more will come)."""
    kind = kind_of(content_type)
    if kind is None or at == 0 or at >= size:
        return min(at, size), 0
    with open(path, "rb") as file:
        data = os.pread(file.fileno(), min(WINDOW, size - at), at)
        head = os.pread(file.fileno(), min(WINDOW, size), 0) if kind == "ogg" else b""
    found = _mp3_frame(data, final) if kind == "mp3" else _ogg_page(data, final)
    if found is None or (found < 0 and not final and len(data) < WINDOW):
        return None  # wait for more bytes
    if found < 0:  # none: at the end, nothing whole is left; in a whole window, the stream is not what it says
        return (size, 0) if final else (at, 0)
    cut = at + found
    header = _ogg_header_end(head) if kind == "ogg" else 0
    return (0, 0) if cut <= header else (cut, header)


def _mp3_length(header: bytes) -> int | None:
    """The length of the MPEG audio Layer III frame that begins with these 4 bytes, or None if they begin none."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate, rate, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3:
        return None
    if version == 3:
        return 144000 * _V1_L3_KBPS[bitrate] // _RATES[3][rate] + padding
    return 72000 * _V2_L3_KBPS[bitrate] // _RATES[version][rate] + padding


def _mp3_frame(data: bytes, final: bool) -> int | None:
    """Where the first frame followed by another begins; -1: none; None: one may, once more bytes come."""
    pos = data.find(b"\xff")
    while pos >= 0:
        length = _mp3_length(data[pos : pos + 4])
        if length:
            following = pos + length
            if following + 4 > len(data):
                return -1 if final else None
            if _mp3_length(data[following : following + 4]):
                return pos
        pos = data.find(b"\xff", pos + 1)
    return -1


def _ogg_length(data: bytes, pos: int) -> int | None:
    """The length of the Ogg page at `pos`, or None if none begins there (or its header is cut short)."""
    if data[pos : pos + 5] != b"OggS\x00" or pos + 27 > len(data):
        return None
    segments = data[pos + 26]
    if pos + 27 + segments > len(data):
        return None
    return 27 + segments + sum(data[pos + 27 : pos + 27 + segments])


def _ogg_page(data: bytes, final: bool) -> int | None:
    """Where the first page that begins a packet, followed by another page, begins; -1: none; None: not yet."""
    pos = data.find(b"OggS")
    while pos >= 0:
        length = _ogg_length(data, pos)
        if length and not data[pos + 5] & 1:  # not the continuation of a packet begun on the page before
            following = pos + length
            if following + 27 > len(data):
                return -1 if final else None
            if _ogg_length(data, following):
                return pos
        pos = data.find(b"OggS", pos + 1)
    return -1


def _ogg_header_end(data: bytes) -> int:
    """Where the header pages at the start of an Ogg stream end (the pages of granule position 0: the codec's
    identification, comment and setup packets)."""
    pos = 0
    while (length := _ogg_length(data, pos)) and int.from_bytes(data[pos + 6 : pos + 14], "little") == 0:
        pos += length
    return pos
