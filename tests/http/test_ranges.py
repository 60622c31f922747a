"""Range requests on a record over real HTTP: 206 and Content-Range, 416, If-Range, and what browsers trust."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.rawhttp import sha256_field, upload
from support.records import record_url

BODY = bytes(range(256)) * 40  # 10240 bytes, each position recognisable
SIZE = len(BODY)


async def stored(fetch) -> dict[str, str]:  # noqa: ANN001
    """Upload BODY and return the answer's headers."""
    response = await upload(fetch, record_url(), BODY, Content_Type="audio/ogg")
    assert response.code == 204
    return dict(response.headers)


async def get_range(fetch, value: str, **headers: str):  # noqa: ANN001, ANN201
    return await fetch(record_url(), headers={"Range": value, **{k.replace("_", "-"): v for k, v in headers.items()}})


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "value, start, stop",
    [("bytes=100-199", 100, 200), ("bytes=-100", SIZE - 100, SIZE), ("bytes=10000-", 10000, SIZE),
     ("bytes=10000-99999", 10000, SIZE), ("bytes=0-0", 0, 1), ("bytes=1-", 1, SIZE)],
)
async def test_single_range_is_206_with_content_range(fetch, value: str, start: int, stop: int) -> None:
    await stored(fetch)
    response = await get_range(fetch, value)
    assert response.code == 206
    assert response.body == BODY[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert response.headers["Content-Length"] == str(stop - start)
    assert response.headers["Content-Type"] == "audio/ogg"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Repr-Digest"] == sha256_field(BODY)  # of the whole representation, not the part
    assert response.headers["ETag"] and response.headers["Last-Modified"]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "value",
    [
        # Ranges over the whole file: 200, as Tornado's StaticFileHandler answers (Chrome will not play audio
        # answered 206 to `bytes=0-`).
        "bytes=0-", f"bytes=0-{SIZE - 1}", f"bytes=-{SIZE}",
        # Several ranges, or a malformed Range, which RFC 9110 §14.2 lets a server ignore.
        "bytes=0-1,5-6", "bytes=50-10", "bytes=abc", "pages=1-2", "bytes 1-2", "bytes=--1", "bytes=1-2-3",
    ],
)
async def test_range_answered_with_the_whole_body(fetch, value: str) -> None:
    await stored(fetch)
    response = await get_range(fetch, value)
    assert response.code == 200
    assert response.body == BODY
    assert "Content-Range" not in response.headers
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.gen_test
@pytest.mark.parametrize("value", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}", "bytes=-0"])
async def test_unsatisfiable_range_is_416(fetch, value: str) -> None:
    await stored(fetch)
    response = await get_range(fetch, value)
    assert response.code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert json.loads(response.body)["status_code"] == 416


@pytest.mark.gen_test
async def test_if_range_with_the_current_etag_gets_the_range(fetch) -> None:
    etag = (await stored(fetch))["Etag"]
    response = await get_range(fetch, "bytes=100-199", If_Range=etag)
    assert response.code == 206
    assert response.body == BODY[100:200]


@pytest.mark.gen_test
@pytest.mark.parametrize("validator", ['"0000"', "W/{etag}", "not a validator"])
async def test_if_range_that_does_not_match_gets_the_whole_body(fetch, validator: str) -> None:
    etag = (await stored(fetch))["Etag"]
    response = await get_range(fetch, "bytes=100-199", If_Range=validator.format(etag=etag))
    assert response.code == 200
    assert response.body == BODY


@pytest.mark.gen_test
async def test_if_range_with_the_last_modified_date(fetch) -> None:
    last_modified = (await stored(fetch))["Last-Modified"]
    await asyncio.sleep(1.1)  # RFC 9110 §8.8.2.2: a Last-Modified is a strong validator only once it is a second old
    response = await get_range(fetch, "bytes=100-199", If_Range=last_modified)
    assert response.code == 206
    assert response.body == BODY[100:200]
    response = await get_range(fetch, "bytes=100-199", If_Range="Mon, 01 Jan 2024 00:00:00 GMT")
    assert response.code == 200
    assert response.body == BODY


@pytest.mark.gen_test
async def test_if_range_on_a_replaced_record_gets_the_new_whole_body(fetch) -> None:
    # The resume case: a client holding part of an old version must not get a piece of the new one.
    old_etag = (await stored(fetch))["Etag"]
    new = b"n" * 500
    assert (await upload(fetch, record_url(), new)).code == 204
    response = await get_range(fetch, "bytes=100-", If_Range=old_etag)
    assert response.code == 200
    assert response.body == new


@pytest.mark.gen_test
async def test_head_and_get_announce_byte_ranges(fetch) -> None:
    await stored(fetch)
    for method in ("GET", "HEAD"):
        response = await fetch(record_url(), method=method)
        assert response.code == 200
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Content-Length"] == str(SIZE)
    # Range applies to GET only (RFC 9110 §14.2).
    response = await fetch(record_url(), method="HEAD", headers={"Range": "bytes=0-9"})
    assert response.code == 200
    assert response.headers["Content-Length"] == str(SIZE)


@pytest.mark.gen_test
async def test_range_of_an_empty_record_gets_it_whole(fetch) -> None:
    assert (await upload(fetch, record_url(), b"")).code == 204
    response = await get_range(fetch, "bytes=0-")
    assert response.code == 200
    assert response.body == b""


@pytest.mark.gen_test
async def test_range_of_a_missing_record_is_404(fetch) -> None:
    response = await get_range(fetch, "bytes=0-9")
    assert response.code == 404
