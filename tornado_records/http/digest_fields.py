"""Integrity fields: the digests an upload announces (RFC 9530 Content-Digest and Repr-Digest, RFC 1864 Content-MD5)
and the Repr-Digest of a stored record. Pure functions over header values.
"""

from __future__ import annotations

import base64
import re
from typing import Mapping

# RFC 9530 §5 registers algorithm keys; this service checks sha-256 and ignores the others (§2: a recipient may
# ignore algorithms it does not support).
_SUPPORTED = {"sha-256": ("sha256", 32)}
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")  # RFC 8941 §3.2 dictionary key
_BYTES = re.compile(r":([A-Za-z0-9+/]*={0,2}):")  # RFC 8941 §3.3.5 byte sequence


class MalformedDigest(ValueError):
    """A digest field that cannot be read, or two that contradict each other."""


def expected_digests(headers: Mapping[str, str]) -> dict[str, bytes]:
    """The digests an upload's content must have, by hashlib name (sha256, md5), from its request headers.

    Content-Digest and Repr-Digest are the same thing here: the service stores the body as received, content coding
    and all, so both describe the stored bytes. Raises MalformedDigest.
    """
    expected: dict[str, bytes] = {}
    for field in ("Content-Digest", "Repr-Digest"):
        value = headers.get(field)
        if value is not None:
            for name, digest in _dictionary_digests(field, value).items():
                if expected.setdefault(name, digest) != digest:
                    raise MalformedDigest("Content-Digest and Repr-Digest give different digests")
    md5 = headers.get("Content-MD5")
    if md5 is not None:
        expected["md5"] = _base64("Content-MD5", md5.strip(), 16)
    return expected


def repr_digest(sha256_hex: str) -> str:
    """The Repr-Digest field value (RFC 9530 §3) of content with this SHA-256 (hex)."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode()}:"


def _dictionary_digests(field: str, value: str) -> dict[str, bytes]:
    """The supported digests of a Content-Digest or Repr-Digest value, an RFC 8941 dictionary."""
    found: dict[str, bytes] = {}
    for member in value.split(","):
        key, equals, item = member.strip().partition("=")
        if not _KEY.fullmatch(key):
            raise MalformedDigest(f"{field} must be a list such as sha-256=:<base64>:, not {value[:80]!r}")
        if key in _SUPPORTED:
            name, length = _SUPPORTED[key]
            bare_item = item.partition(";")[0].strip()  # parameters (RFC 8941 §3.1.2) carry nothing needed here
            match = _BYTES.fullmatch(bare_item) if equals else None
            if match is None:
                raise MalformedDigest(f"{field}: {key} must be a byte sequence such as :<base64>:")
            found[name] = _base64(f"{field} {key}", match.group(1), length)
    return found


def _base64(what: str, text: str, length: int) -> bytes:
    """The `length` bytes that `text` encodes in base64; MalformedDigest if it does not."""
    try:
        digest = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII at all
        digest = b""
    if len(digest) != length:
        raise MalformedDigest(f"{what} must be the base64 of a {length}-byte digest, not {text[:80]!r}")
    return digest
