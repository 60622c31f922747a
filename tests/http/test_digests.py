"""Digests over real HTTP: Repr-Digest on downloads; Content-Digest, Repr-Digest and Content-MD5 checked on uploads."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from support.rawhttp import chunk, exchange, sha256_field, upload
from support.records import files_in, record_url

BODY = b"broadcast audio " * 4096
OLD = b"earlier version"


def md5_field(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


async def content(fetch) -> bytes | None:  # noqa: ANN001
    response = await fetch(record_url())
    return response.body if response.code == 200 else None


@pytest.mark.gen_test
async def test_downloads_carry_repr_digest(fetch) -> None:
    assert (await upload(fetch, record_url(), BODY)).code == 204
    expected = "sha-256=:" + base64.b64encode(hashlib.sha256(BODY).digest()).decode() + ":"
    for method, headers in [("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=10-19"})]:
        response = await fetch(record_url(), method=method, headers=headers)
        assert response.code in (200, 206)
        assert response.headers["Repr-Digest"] == expected


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Digest": sha256_field(BODY)},
        {"Repr-Digest": sha256_field(BODY)},
        {"Content-Digest": sha256_field(BODY), "Repr-Digest": sha256_field(BODY)},
        {"Repr-Digest": f"sha-512=:{base64.b64encode(hashlib.sha512(b'x').digest()).decode()}:, {sha256_field(BODY)}"},
        {"Content-MD5": md5_field(BODY)},
        {"Content-MD5": md5_field(BODY), "Content-Digest": sha256_field(BODY)},
        {"Content-Digest": "sha-512=:AAAA:"},  # only an algorithm this service does not check: ignored
    ],
)
async def test_upload_with_a_matching_digest_is_stored(fetch, headers: dict) -> None:
    response = await fetch(record_url(), method="PUT", body=BODY, headers=headers)
    assert response.code == 204
    assert await content(fetch) == BODY


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Digest": sha256_field(b"something else")},
        {"Repr-Digest": sha256_field(b"something else")},
        {"Content-MD5": md5_field(b"something else")},
        {"Content-MD5": md5_field(b"something else"), "Content-Digest": sha256_field(BODY)},
    ],
)
@pytest.mark.parametrize("chunked", [False, True])
async def test_upload_with_a_wrong_digest_is_400_and_stores_nothing(
    fetch, data_dir: Path, headers: dict, chunked: bool
) -> None:
    assert (await upload(fetch, record_url(), OLD)).code == 204
    blobs = files_in(data_dir / "blobs")
    kwargs = {"body_producer": lambda write: write(BODY)} if chunked else {"body": BODY}
    response = await fetch(record_url(), method="PUT", headers=headers, **kwargs)
    assert response.code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert "digest" in json.loads(response.body)["detail"]
    assert await content(fetch) == OLD
    assert files_in(data_dir / "blobs") == blobs
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Digest": "sha-256=abc"},
        {"Repr-Digest": "sha-256=:AAAA:"},
        {"Content-Digest": "Not A Dictionary!"},
        {"Content-MD5": "???"},
    ],
)
async def test_malformed_digest_is_400_before_the_body_is_read(
    http_server, base_url: str, data_dir: Path, headers: dict
) -> None:
    answer = await exchange(
        base_url, "PUT", record_url(), {**headers, "Content-Length": "1000000", "Expect": "100-continue"}
    )
    assert answer.status == 400
    assert not answer.continued
    assert json.loads(answer.body)["status_code"] == 400
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_wrong_digest_on_a_hand_made_chunked_upload(fetch, base_url: str, data_dir: Path) -> None:
    headers = {"Transfer-Encoding": "chunked", "Content-Digest": sha256_field(b"other")}
    answer = await exchange(base_url, "PUT", record_url(), headers, chunk(b"abc") + chunk(b"def") + b"0\r\n\r\n")
    assert answer.status == 400
    assert await content(fetch) is None
    assert files_in(data_dir / "blobs") == []
