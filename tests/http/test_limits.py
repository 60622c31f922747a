"""The body limit (413) and `Expect: 100-continue` over real HTTP, against an app run with --max-body-size 100k."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import tornado.iostream

from support.rawhttp import chunk, exchange, open_stream, read_answer, request_head, upload
from support.records import files_in, record_url

LIMIT = 100 * 1024
OLD = b"earlier version"


@pytest.fixture
def settings() -> dict[str, str]:
    return {"max_body_size": "100k"}


async def content(fetch) -> bytes | None:  # noqa: ANN001
    response = await fetch(record_url())
    return response.body if response.code == 200 else None


@pytest.mark.gen_test
@pytest.mark.parametrize("expect", [True, False])
async def test_content_length_over_the_limit_is_413_before_the_body(
    http_server, base_url: str, data_dir: Path, expect: bool
) -> None:
    headers = {"Content-Length": str(LIMIT + 1)}
    if expect:
        headers["Expect"] = "100-continue"
    answer = await exchange(base_url, "PUT", record_url(), headers)  # the head only: no body byte is ever sent
    assert answer.status == 413
    assert not answer.continued
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body)["status_code"] == 413
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_bodies_up_to_the_limit_are_stored(fetch) -> None:
    body = bytes(LIMIT)
    assert (await upload(fetch, record_url(), body)).code == 204
    assert await content(fetch) == body
    assert (await fetch(record_url(), method="PUT", body_producer=lambda write: write(body[::-1]))).code == 204
    assert await content(fetch) == body[::-1]


@pytest.mark.gen_test
async def test_chunked_body_over_the_limit_is_413_and_stores_nothing(fetch, base_url: str, data_dir: Path) -> None:
    assert (await upload(fetch, record_url(), OLD)).code == 204
    blobs = files_in(data_dir / "blobs")
    # One chunk a byte over the limit, and no end: the server must answer without waiting for more.
    answer = await exchange(base_url, "PUT", record_url(), {"Transfer-Encoding": "chunked"}, chunk(bytes(LIMIT + 1)))
    assert answer.status == 413
    assert json.loads(answer.body)["status_code"] == 413
    assert await content(fetch) == OLD
    assert files_in(data_dir / "blobs") == blobs
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_chunked_body_in_many_small_chunks_over_the_limit(fetch, base_url: str, data_dir: Path) -> None:
    stream = await open_stream(base_url)
    await stream.write(request_head("PUT", record_url(), {"Transfer-Encoding": "chunked"}))
    for _ in range(LIMIT // 1000 + 1):  # a little over the limit, 1000 bytes at a time
        await stream.write(chunk(bytes(1000)))
    answer = await read_answer(stream)
    assert answer.status == 413
    assert await content(fetch) is None
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_client_streaming_far_past_the_limit_stores_nothing(fetch, data_dir: Path) -> None:
    async def produce(write) -> None:  # noqa: ANN001
        for _ in range(20):
            await write(bytes(64 * 1024))

    response = await fetch(record_url(), method="PUT", body_producer=produce)
    # 413, unless the connection was closed under the client while it was still sending (it may see a reset).
    assert response.code in (413, 599)
    assert await content(fetch) is None
    assert files_in(data_dir / "tmp") == []
    assert files_in(data_dir / "blobs") == []


@pytest.mark.gen_test
async def test_expect_100_continue(fetch, base_url: str) -> None:
    stream = await open_stream(base_url)
    head = request_head("PUT", record_url(), {"Content-Length": "5", "Expect": "100-continue", "Connection": "close"})
    await stream.write(head)
    interim = await stream.read_until(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    await stream.write(b"hello")
    assert (await read_answer(stream)).status == 204
    assert await content(fetch) == b"hello"


@pytest.mark.gen_test
async def test_client_library_with_and_without_expect(fetch) -> None:
    response = await fetch(record_url(), method="PUT", body=b"with", expect_100_continue=True)
    assert response.code == 204
    assert await content(fetch) == b"with"
    response = await fetch(record_url(), method="PUT", body=b"without")
    assert response.code == 204
    assert await content(fetch) == b"without"


@pytest.mark.gen_test(timeout=30)
async def test_refused_body_is_dropped_for_a_while_then_the_connection_closes(fetch, base_url: str) -> None:
    # A client that goes on sending after the 413 (it does not read answers while it sends) is not read forever.
    stream = await open_stream(base_url)
    await stream.write(request_head("PUT", record_url(), {"Transfer-Encoding": "chunked"}) + chunk(bytes(LIMIT + 1)))
    answer = await read_answer(stream)
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    started = asyncio.get_running_loop().time()
    with pytest.raises(tornado.iostream.StreamClosedError):
        while asyncio.get_running_loop().time() - started < 20:
            await stream.write(chunk(bytes(1000)))  # still read (and dropped) during the linger: no reset yet
            await asyncio.sleep(0.01)
    assert 1 < asyncio.get_running_loop().time() - started < 10
    assert (await fetch("/ping")).code == 204
