"""A request body as it comes off the wire (body.py): a chunked body framed in every way HTTP/1.1 allows, cut into
TCP segments anywhere, arrives whole, and a request sent right behind a body on the same connection is answered, as
is each of a long run of requests sent together; bodies read into the same reused blocks, at once and one round
after another, each arrive whole."""

import asyncio
import hashlib
import os
from typing import Any

import pytest

from support.rawhttp import open_stream, read_answer, request_head
from support.records import EVENT, record_url

pytestmark = pytest.mark.gen_test(timeout=60)

PUT = {"Content-Type": "audio/ogg"}
CHUNKED = {**PUT, "Transfer-Encoding": "chunked"}


def framed(data: bytes, sizes: list[int]) -> bytes:
    """`data` as a chunked body of chunks of the sizes given (in turn, again and again), with the spellings of sizes
    HTTP allows (upper and lower case hex, leading zeros, chunk extensions), then trailer fields."""
    out, pos, turn = [], 0, 0
    while pos < len(data):
        size = min(sizes[turn % len(sizes)], len(data) - pos)
        spelling = [b"%x", b"%X", b"000%x", b"%x;name=value", b'%x ; q="a;b"'][turn % 5]
        out.append(spelling % size + b"\r\n" + data[pos : pos + size] + b"\r\n")
        pos, turn = pos + size, turn + 1
    return b"".join(out) + b"0;last\r\nChecksum: abc\r\nX-Other: 1\r\n\r\n"


async def test_a_chunked_body_in_any_framing_and_segments_arrives_whole(http_server: Any, base_url: str) -> None:
    data = os.urandom(700_000)
    body = framed(data, [1, 2, 5, 300_001, 65_536, 7, 100_000])
    get = request_head("GET", record_url(), {})
    stream = await open_stream(base_url)
    raw = request_head("PUT", record_url(), CHUNKED) + body + get  # the GET right behind the body
    cuts = sorted({*range(0, len(raw), 65_537), *(len(raw) - n for n in range(1, 70)), *range(150, 400, 3)})
    for begin, end in zip(cuts, [*cuts[1:], len(raw)]):  # the last 70 bytes one at a time, and more in between
        await stream.write(raw[begin:end])
    put = await read_answer(stream)
    assert put.status == 204, put.body
    assert put.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    got = await read_answer(stream)  # the pipelined GET, on the same connection
    assert got.status == 200 and got.body == data
    stream.close()


async def test_requests_sent_together_behind_bodies_are_each_answered(http_server: Any, base_url: str) -> None:
    first, second = os.urandom(300_000), os.urandom(1_000)
    starts = ["2024-01-01T00:00:00", "2024-01-01T01:00:00"]
    raw = (
        request_head("PUT", record_url(EVENT, starts[0]), CHUNKED) + framed(first, [131_072])
        + request_head("PUT", record_url(EVENT, starts[1]), {**PUT, "Content-Length": str(len(second))}) + second
        + request_head("GET", record_url(EVENT, starts[0]), {})
        + request_head("GET", record_url(EVENT, starts[1]), {})
    )  # fmt: skip
    stream = await open_stream(base_url)
    await stream.write(raw)  # all at once: each body ends where the next request begins
    statuses = [(await read_answer(stream)).status for _ in range(2)]
    assert statuses == [204, 204]
    assert (await read_answer(stream)).body == first
    assert (await read_answer(stream)).body == second
    stream.close()


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhelloX\r\n0\r\n\r\n",  # data longer than its size
        b"5;\r\nhello\r\n" + b"0\r\nX: " + b"y" * (70 << 10) + b"\r\n\r\n",  # trailer fields over 64 KiB
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
    ],
)
async def test_a_malformed_chunked_body_is_refused_and_nothing_stored(
    http_server: Any, base_url: str, fetch: Any, body: bytes
) -> None:
    stream = await open_stream(base_url)
    await stream.write(request_head("PUT", record_url(), CHUNKED) + body)
    answer = await read_answer(stream)
    assert answer.status == 400 and b"framing is malformed" in answer.body, answer.raw
    stream.close()
    assert (await fetch(record_url(), raise_error=False)).code == 404


async def test_a_long_run_of_requests_sent_together_is_answered_in_full_and_in_order(
    http_server: Any, base_url: str
) -> None:
    # more than the 64 KiB a kept-alive connection reads ahead of the request it is answering (server.LeanIOStream)
    heads = [request_head("GET", path, {}) for path in ("/ping", "/nothing") * 1_000]
    assert sum(map(len, heads)) > 64 * 1024
    stream = await open_stream(base_url)
    await stream.write(b"".join(heads))
    statuses = [(await read_answer(stream)).status for _ in heads]
    assert statuses == [204, 404] * 1_000
    stream.close()


async def test_many_bodies_at_once_in_rounds_each_arrive_whole(http_server: Any, fetch: Any) -> None:
    # each body spans several of body.py's blocks, which the next reads reuse once the file has their bytes: a block
    # taken again too early would put another body's bytes in a file
    starts = [f"2024-06-01T{hour:02d}:00:00" for hour in range(12)]
    for _ in range(3):
        bodies = {start: os.urandom(1_300_000 + index * 4_099) for index, start in enumerate(starts)}
        puts = [fetch(record_url(EVENT, start), method="PUT", body=bodies[start], headers=PUT) for start in starts]
        assert [answer.code for answer in await asyncio.gather(*puts)] == [204] * len(starts)
        for start, body in bodies.items():
            got = await fetch(record_url(EVENT, start))
            assert got.code == 200 and got.body == body
            assert got.headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
