"""Reading the digest fields of an upload, on their own (no server): tornado_records.http.digest_fields."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tornado_records.http.digest_fields import MalformedDigest, expected_digests, repr_digest

BODY = b"hello"
SHA256 = hashlib.sha256(BODY).digest()
MD5 = hashlib.md5(BODY).digest()
SHA256_FIELD = f"sha-256=:{base64.b64encode(SHA256).decode()}:"
MD5_FIELD = base64.b64encode(MD5).decode()


def test_no_digest_fields() -> None:
    assert expected_digests({}) == {}


@pytest.mark.parametrize("field", ["Content-Digest", "Repr-Digest"])
def test_sha256_member(field: str) -> None:
    assert expected_digests({field: SHA256_FIELD}) == {"sha256": SHA256}
    assert expected_digests({field: f"sha-512=:AAAA:, {SHA256_FIELD};p=1"}) == {"sha256": SHA256}


def test_unsupported_algorithms_alone_are_ignored() -> None:
    assert expected_digests({"Content-Digest": "sha-512=:AAAA:, unixsum=:AAAA:"}) == {}


def test_content_md5() -> None:
    assert expected_digests({"Content-MD5": MD5_FIELD}) == {"md5": MD5}
    assert expected_digests({"Content-MD5": MD5_FIELD, "Repr-Digest": SHA256_FIELD}) == {"sha256": SHA256, "md5": MD5}


def test_both_fields_agreeing() -> None:
    assert expected_digests({"Content-Digest": SHA256_FIELD, "Repr-Digest": SHA256_FIELD}) == {"sha256": SHA256}


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Digest": "sha-256=abc"},
        {"Content-Digest": "sha-256"},
        {"Content-Digest": "sha-256=:not base64!:"},
        {"Content-Digest": "sha-256=:AAAA:"},  # too short for SHA-256
        {"Repr-Digest": "SHA-256=:" + SHA256_FIELD[9:]},  # keys are lowercase
        {"Repr-Digest": "=:AAAA:"},
        {"Content-MD5": "nope"},
        {"Content-MD5": base64.b64encode(SHA256).decode()},
        {"Content-Digest": SHA256_FIELD, "Repr-Digest": f"sha-256=:{base64.b64encode(bytes(32)).decode()}:"},
    ],
)
def test_malformed(headers: dict) -> None:
    with pytest.raises(MalformedDigest):
        expected_digests(headers)


def test_repr_digest() -> None:
    assert repr_digest(hashlib.sha256(BODY).hexdigest()) == SHA256_FIELD
