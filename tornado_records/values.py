"""The values of settings, parsed from text: each parser takes what a flag or an environment variable says and gives
the value (or raises ValueError, or ConfigError with a message for the user). config.py declares the settings."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hmac
import ipaddress
import re
import urllib.parse
from pathlib import Path

from tornado_records.events import EVENT_TYPES
from tornado_records.publishing.details import zone_names
from tornado_records.storage import sqldb

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def parse_size(text: str) -> int:
    """Bytes from a size such as `1048576`, `512k`, `100M` or `20G` (binary units, as nginx reads them)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size (use a number of bytes, or one with K, M, G or T)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_port(text: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a port number (0 to 65535)")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a port number (0 to 65535)")
    return port


def parse_log_level(text: str) -> str:
    """A logging level name: debug, info, warning or error."""
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{text!r} is not a log level (debug, info, warning or error)")
    return level


def parse_accel_prefix(text: str) -> str:
    """An nginx internal location such as /_blobs/, or empty for none."""
    text = text.strip()
    if text and not (text.startswith("/") and text.endswith("/")):
        raise ValueError(f"{text!r} is not a location prefix (it starts and ends with /, such as /_blobs/)")
    return text


def parse_seconds(text: str) -> float:
    """A positive number of seconds, fractions allowed: `15`, `0.2`."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{text!r} is not a positive number of seconds")
    return seconds


def parse_seconds_or_off(text: str) -> float:
    """A number of seconds, fractions allowed, or 0 for off: `15`, `2.5`, `0`."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds (0: off)") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds from 0 (off) up")
    return seconds


def parse_bool(text: str) -> bool:
    """True or false from 1/0, true/false, yes/no, on/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use 1/0, true/false, yes/no)")


def parse_count(text: str) -> int:
    """A whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def parse_workers(text: str) -> int:
    """A whole number from 0 (none) to 64."""
    if not text.strip().isdigit() or int(text) > 64:
        raise ValueError(f"{text!r} is not a whole number from 0 to 64")
    return int(text)


def parse_level(text: str) -> float:
    """A level in dBFS, from -120 to 0 (`-50`, `-60.5`)."""
    try:
        level = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a level in dBFS such as -50") from None
    if not -120 <= level <= 0:
        raise ValueError(f"{text!r} is not a level in dBFS from -120 to 0")
    return level


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_DAYS = 100 * 366


def parse_duration(text: str) -> datetime.timedelta | None:
    """A duration such as `90d`, `12h`, `30m`, `45s` or `2w`; None for an empty text (off)."""
    text = text.strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text, re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h or 30m (units s, m, h, d, w)")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"{text!r} is longer than 100 years")
    return datetime.timedelta(seconds=seconds)


def parse_expiry(text: str) -> datetime.timedelta:
    """A duration such as `24h` (as parse_duration reads it), which cannot be empty."""
    duration = parse_duration(text)
    if duration is None:
        raise ValueError("an empty value is not a duration such as 24h")
    return duration


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Addresses and CIDR networks, comma-separated (`127.0.0.1, 10.0.0.0/8, ::1`); empty for none."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or a network such as 10.0.0.0/8") from None
    return tuple(networks)


_BEARER_TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1 b64token


@dataclasses.dataclass(frozen=True)
class Secret:
    """A secret read from a file: never shown (not even by repr), compared in constant time."""

    value: bytes = dataclasses.field(repr=False)
    source: Path

    def matches(self, given: bytes) -> bool:
        """Whether `given` is the secret (in a time that does not depend on where they differ)."""
        return hmac.compare_digest(self.value, given)


@dataclasses.dataclass(frozen=True)
class Index:
    """Where the index is: `sqlite` (records.sqlite3 in the data directory) or a PostgreSQL URL, which is shown
    (repr, str) without its password."""

    url: str = dataclasses.field(repr=False)

    def __str__(self) -> str:
        return sqldb.safe_url(self.url)

    def __repr__(self) -> str:
        return f"Index({str(self)!r})"


def parse_index(text: str) -> Index:
    """`sqlite`, or a postgresql:// URL (libpq's form: postgresql://user:password@host:port/database?options)."""
    text = text.strip()
    if text == "sqlite" or sqldb.is_postgresql(text):
        return Index(text)
    raise ValueError(f"{sqldb.safe_url(text)!r} is neither sqlite nor a postgresql:// URL")


def parse_blobs(text: str) -> str:
    """Empty (the data directory's blobs/), or s3://bucket/prefix."""
    text = text.strip()
    if not text:
        return ""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(f"{text!r} is not s3://bucket/prefix (leave it empty to keep recordings in the data directory)")
    return text


def parse_endpoint(text: str) -> str:
    """Empty, or an http(s):// URL."""
    text = text.strip()
    if text and urllib.parse.urlsplit(text).scheme not in ("http", "https"):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text


def read_secret_file(text: str, what: str) -> tuple[Path, bytes] | None:
    """The path given and what the file there holds, stripped; None for an empty path."""
    if not text.strip():
        return None
    path = Path(text.strip())
    try:
        return path, path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {str(path)!r}: {exc.strerror}") from None


def parse_token_file(text: str) -> Secret | None:
    """The secret held by the file at this path (its one line); None for an empty path (no token needed)."""
    if (read := read_secret_file(text, "token file")) is None:
        return None
    path, secret = read
    if not secret:
        raise ValueError(f"the token file {str(path)!r} is empty")
    if not _BEARER_TOKEN.fullmatch(secret):
        raise ValueError(
            f"the token file {str(path)!r} must hold one line of a Bearer token's characters (letters, digits, "
            "-._~+/ and trailing =)"
        )
    return Secret(secret, path)


def parse_webhooks(text: str) -> tuple[str, ...]:
    """http(s):// URLs, comma-separated (a comma inside a URL is written %2C); empty for none."""
    urls: dict[str, None] = {}
    for url in filter(None, (part.strip() for part in text.split(","))):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{sqldb.safe_url(url)!r} is not an http:// or https:// URL")
        urls[url] = None
    return tuple(urls)


WEBHOOK_SECRET_PREFIX = b"whsec_"
WEBHOOK_KEY_BYTES = 24  # the shortest key Standard Webhooks asks for (24 to 64 random bytes)


def parse_webhook_secret(text: str) -> Secret | None:
    """The Standard Webhooks secret held by the file at this path (one line: whsec_ and the key in base64); None for
    an empty path."""
    if (read := read_secret_file(text, "webhook secret file")) is None:
        return None
    path, secret = read
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX) or len(key) < WEBHOOK_KEY_BYTES:
        raise ValueError(
            f"the webhook secret file {str(path)!r} must hold one line: whsec_ followed by at least "
            f"{WEBHOOK_KEY_BYTES} random bytes in base64 (a Standard Webhooks secret), such as the output of "
            "python3 -c \"import base64, os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
        )
    return Secret(secret, path)


def parse_event_types(text: str) -> frozenset[str] | None:
    """Event types, comma-separated (`record-created,record-deleted`); `all` (or empty): None, every type."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or names == ["all"]:
        return None
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))}: no such event type (all, or of: {', '.join(EVENT_TYPES)})")
    return frozenset(names)


def parse_timezone(text: str) -> str:
    """An IANA time zone name such as Europe/Berlin or UTC (one of those records.yaml lists)."""
    if text.strip() not in zone_names():
        raise ValueError(f"{text!r} is not an IANA time zone name such as UTC or Europe/Berlin")
    return text.strip()


def parse_public_url(text: str) -> str:
    """Empty, or an http(s):// URL with a host and no query or fragment (its trailing slashes dropped)."""
    text = text.strip()
    parsed = urllib.parse.urlsplit(text)
    if text and (parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment
                 or "@" in parsed.netloc or re.search(r"[\x00-\x20\x7f-\xa0\\]", text)):  # fmt: skip
        raise ValueError(f"{text!r} is not a base URL such as https://radio.example or https://radio.example/archive")
    return text.rstrip("/")
