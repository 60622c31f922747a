"""HTTP preconditions and byte ranges (RFC 9110), as pure functions of a resource's validators and request headers.

The handlers gather what they know about a record into one `Validators` value, then ask:

- `precondition_status(method, headers, current)`: proceed (None), or answer 304 or 412;
- `requested_range(headers, current, now)`: the bytes to send for a GET (None: the whole body), or
  `RangeNotSatisfiable` (416).

Nothing here does I/O or knows about Tornado; `headers` is any mapping of header names to values.
"""

from __future__ import annotations

import calendar
import dataclasses
import email.utils
import re
from typing import Mapping

_ETAG = re.compile(r'\s*((?:W/)?"[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_RANGE_SPEC = re.compile(r"(\d*)-(\d*)")
_MAX_DATE_LENGTH = 64  # the longest HTTP-date is 29 characters; anything far longer is not one


@dataclasses.dataclass(frozen=True)
class Validators:
    """What the conditions of a request are checked against: the current representation's validators and size."""

    etag: str  # strong entity tag, quoted
    last_modified: int  # Unix seconds
    size: int


@dataclasses.dataclass(frozen=True)
class ByteRange:
    """The bytes start <= i < stop of a representation of `size` bytes."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        """The Content-Range of a 206 answer carrying these bytes (RFC 9110 §14.4)."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


class RangeNotSatisfiable(Exception):
    """A valid Range whose ranges all lie past the end of the representation (RFC 9110 §15.5.17: 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"The range lies outside the record's {size} bytes")
        self.size = size

    @property
    def content_range(self) -> str:
        """The Content-Range of the 416 answer (RFC 9110 §14.4): the current length."""
        return f"bytes */{self.size}"


# -- preconditions -----------------------------------------------------------------------------------------------


def precondition_status(method: str, headers: Mapping[str, str], current: Validators | None) -> int | None:
    """The status that the request's preconditions call for (304 or 412), or None to perform the method.

    `current` is the resource's current representation, or None if there is none. The steps are those of
    RFC 9110 §13.2.2, in its order.
    """
    safe = method in ("GET", "HEAD")
    if_match = headers.get("If-Match")
    # §13.2.2 step 1: If-Match present and false -> 412.
    if if_match is not None and not _if_match(if_match, current):
        return 412
    # §13.2.2 step 2: only without If-Match, If-Unmodified-Since present and false -> 412.
    if if_match is None and not _if_unmodified_since(headers.get("If-Unmodified-Since"), current):
        return 412
    if_none_match = headers.get("If-None-Match")
    # §13.2.2 step 3: If-None-Match present and false -> 304 for GET/HEAD, else 412.
    if if_none_match is not None and not _if_none_match(if_none_match, current):
        return 304 if safe else 412
    # §13.2.2 step 4: only for GET/HEAD without If-None-Match, If-Modified-Since present and false -> 304.
    if safe and if_none_match is None and not _if_modified_since(headers.get("If-Modified-Since"), current):
        return 304
    return None


def has_preconditions(headers: Mapping[str, str]) -> bool:
    """Whether the request carries any precondition that a change of the resource must respect."""
    return any(name in headers for name in ("If-Match", "If-None-Match", "If-Unmodified-Since"))


def _if_match(value: str, current: Validators | None) -> bool:
    # §13.1.1: "*" is true if there is a current representation; a list is true if one member matches the current
    # ETag by strong comparison; with no current representation it is false.
    if current is None:
        return False
    if value.strip() == "*":
        return True
    return any(strong_match(tag, current.etag) for tag in entity_tags(value))


def _if_none_match(value: str, current: Validators | None) -> bool:
    # §13.1.2: "*" is false if there is a current representation; a list is false if one member matches the
    # current ETag by weak comparison; with no current representation it is true.
    if current is None:
        return True
    if value.strip() == "*":
        return False
    return not any(weak_match(tag, current.etag) for tag in entity_tags(value))


def _if_modified_since(value: str | None, current: Validators | None) -> bool:
    # §13.1.3: ignored if absent, not a valid HTTP-date, or the resource has no modification date; false if the
    # representation has not been modified since the date.
    date = http_date(value)
    if date is None or current is None:
        return True
    return current.last_modified > date


def _if_unmodified_since(value: str | None, current: Validators | None) -> bool:
    # §13.1.4: ignored if absent, not a valid HTTP-date, or the resource has no modification date; false if the
    # representation was modified after the date.
    date = http_date(value)
    if date is None or current is None:
        return True
    return current.last_modified <= date


def entity_tags(value: str) -> list[str]:
    """The entity-tags of a comma-separated list (RFC 9110 §8.8.3), in order; malformed members are skipped."""
    return [match.group(1) for match in _ETAG.finditer(value)]


def strong_match(a: str, b: str) -> bool:
    """Strong comparison (RFC 9110 §8.8.3.2): both tags strong and identical."""
    return not a.startswith("W/") and not b.startswith("W/") and a == b


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2): identical once any weakness indicator is removed."""
    return a.removeprefix("W/") == b.removeprefix("W/")


def http_date(value: str | None) -> int | None:
    """Unix seconds of an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate or an obsolete form); None if it is not one."""
    if value is None or len(value) > _MAX_DATE_LENGTH:
        return None
    parts = email.utils.parsedate_tz(value)
    if parts is None:
        return None
    try:
        return calendar.timegm(parts[:6]) - (parts[9] or 0)
    except (ValueError, OverflowError):
        return None


# -- ranges ------------------------------------------------------------------------------------------------------


def requested_range(headers: Mapping[str, str], current: Validators, now: float) -> ByteRange | None:
    """The part of the representation that a GET asks for, or None for the whole of it (a 200).

    Raises RangeNotSatisfiable when the one range asked for starts past the end (a 416). A range that covers the
    whole representation (such as `bytes=0-`) is answered whole with 200, as Tornado's StaticFileHandler does,
    because Chrome will not play audio answered 206 to `bytes=0-`. Call it only for GET (§14.2: a server ignores
    Range for other methods) and after `precondition_status`.
    """
    value = headers.get("Range")
    if value is None or current.size == 0:
        return None  # an empty representation has no byte to select; send it (empty) whole
    # §13.1.5 and §13.2.2 step 5: a Range with a false If-Range is ignored.
    if_range = headers.get("If-Range")
    if if_range is not None and not _if_range(if_range, current, now):
        return None
    part = parse_range(value, current.size)
    if part is None or part.length == current.size:
        return None
    return part


def parse_range(value: str, size: int) -> ByteRange | None:
    """The one byte range of a `Range` header over `size` bytes (RFC 9110 §14.1.2, §14.2).

    None when the header is to be ignored: not in bytes, malformed (§14.2: a server ignores an invalid Range), or
    asking for several ranges (§14.2 lets a server ignore Range; this one answers those whole).
    """
    unit, equals, ranges = value.partition("=")
    # §14.1: range units are compared case-insensitively; only "bytes" is known here.
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = ranges.split(",")
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0].strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        # §14.1.2 suffix-range: the last N bytes; all of them if N exceeds the length; unsatisfiable if N is 0.
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(size - suffix, 0), size, size)
    start = int(first)
    # §14.1.2: a last-pos before first-pos makes the ranges-specifier invalid.
    if last != "" and int(last) < start:
        return None
    # §14.1.1: an int-range is satisfiable only if first-pos is less than the length.
    if start >= size:
        raise RangeNotSatisfiable(size)
    # §14.1.2: a missing last-pos, or one past the end, means the end of the representation.
    stop = size if last == "" else min(int(last) + 1, size)
    return ByteRange(start, stop, size)


def _if_range(value: str, current: Validators, now: float) -> bool:
    # §13.1.5: an entity-tag is compared strongly with the current ETag; an HTTP-date must equal Last-Modified
    # exactly, and only counts if Last-Modified is a strong validator, i.e. (§8.8.2.2) at least one second before
    # the answer is generated; a weak tag or anything else is false.
    value = value.strip()
    if value.startswith(('"', "W/")):
        return strong_match(value, current.etag)
    date = http_date(value)
    return date is not None and date == current.last_modified and now - current.last_modified >= 1


# A media type as RFC 9110 §8.3.1 writes it, of visible ASCII only: type "/" subtype, then parameters whose values
# are tokens or quoted strings.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(
    rf"({_TOKEN})/({_TOKEN})(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|\"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*\"))?)*"
)
MAX_MEDIA_TYPE = 1024
# Types served as they are stored: media a browser only plays, never runs (docs/api.md lists them). Any other stored
# type is served as application/octet-stream, as an attachment.
PASSIVE_TYPES = ("audio/*", "video/ogg", "video/webm", "video/mp4", "application/ogg")


def is_media_type(text: str) -> bool:
    """Whether `text` is a media type (RFC 9110 syntax, visible ASCII, at most MAX_MEDIA_TYPE characters)."""
    return len(text) <= MAX_MEDIA_TYPE and _MEDIA_TYPE.fullmatch(text.strip(" \t")) is not None


def served_type(stored: str) -> tuple[str, bool]:
    """The Content-Type a record stored with type `stored` is served with, and whether it is served as an attachment
    (anything but a passive media type: a browser must not render it on this service's origin)."""
    match = _MEDIA_TYPE.fullmatch(stored.strip(" \t")) if len(stored) <= MAX_MEDIA_TYPE else None
    if match is not None:
        kind, subtype = match.group(1).lower(), match.group(2).lower()
        if f"{kind}/*" in PASSIVE_TYPES or f"{kind}/{subtype}" in PASSIVE_TYPES:
            return stored.strip(" \t"), False
    return "application/octet-stream", True
