"""A clip's range as a client writes it (seconds, or [HH:]MM:SS[.fff]) and the name of its file."""

from __future__ import annotations

import dataclasses
import re
import unicodedata

MAX_NAME = 120  # characters of the event's title kept in a clip's file name

_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")
_CLOCK = re.compile(r"(?:([0-9]{1,6}):([0-5]?[0-9])|([0-9]{1,7})):([0-5]?[0-9](?:\.[0-9]{1,6})?)")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')  # what Windows, macOS or Linux refuse in a name


class BadRange(ValueError):
    """The range asked for is unreadable, negative or empty; the message says why, for the client."""


@dataclasses.dataclass(frozen=True)
class Span:
    """From `start` to `end`, in seconds from the start of the audio."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def parse_time(text: str, name: str) -> float:
    """Seconds from `12.5` or `[HH:]MM:SS[.fff]`; BadRange if the text is neither (or negative)."""
    if text.startswith("-"):
        raise BadRange(f"{name} must not be negative: {text[:40]!r}")
    if _SECONDS.fullmatch(text):
        return float(text)
    if match := _CLOCK.fullmatch(text):
        hours, minutes, only_minutes, seconds = match.groups()
        return int(hours or 0) * 3600 + int(minutes or only_minutes) * 60 + float(seconds)
    raise BadRange(f"{name} must be seconds (such as 754.5) or [HH:]MM:SS[.fff] (such as 12:34.5), not {text[:40]!r}")


def parse_span(start: str | None, end: str | None) -> Span:
    """The range from the `from` and `to` texts; BadRange if one is missing or unreadable, or the range is empty."""
    if start is None or end is None:
        raise BadRange("a clip needs from and to (seconds, or [HH:]MM:SS[.fff]), such as ?from=1:00&to=1:30")
    span = Span(parse_time(start, "from"), parse_time(end, "to"))
    if span.end <= span.start:
        raise BadRange(f"the range is empty: to ({end[:40]}) must be after from ({start[:40]})")
    return span


def spoken(seconds: float) -> str:
    """A time for a file name: 1h02m03.5s, 12m00s."""
    hours, rest = divmod(round(seconds, 3), 3600)
    minutes, rest = divmod(rest, 60)
    text = f"{rest:06.3f}".rstrip("0").rstrip(".")
    return f"{int(hours)}h{int(minutes):02d}m{text}s" if hours else f"{int(minutes)}m{text}s"


def file_name(title: str | None, event: str, start: str, span: Span, extension: str) -> str:
    """The clip's file name, safe on the usual file systems: `<title or event> <start> <from>-<to>.<ext>`."""
    label = _UNSAFE.sub("_", " ".join((title or "").split()))[:MAX_NAME].strip(" .") or event
    return f"{label} {start.replace(':', '.')} {spoken(span.start)}-{spoken(span.end)}.{extension}"


def ascii_name(name: str) -> str:
    """The file name in ASCII, for the `filename` parameter (`filename*` gives the UTF-8 one)."""
    stem, _, extension = name.rpartition(".")
    plain = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    return f"{plain if plain.strip(' .') else 'clip'}.{extension}"
