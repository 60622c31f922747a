"""Upload, download, HEAD and DELETE of one record, through real HTTP, with the files on disk checked."""

import asyncio
import hashlib
import json
import os
import time

import pytest

from support.records import EVENT, START, files_in, record_url
from support.waiting import eventually

MB = 1 << 20


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest() + '"'


def chunked_producer(data: bytes, size: int = 64 * 1024):
    async def produce(write):
        for i in range(0, len(data), size):
            await write(data[i : i + size])

    return produce


@pytest.mark.gen_test(timeout=60)
async def test_chunked_upload_round_trips_byte_exact(blobs, fetch, data_dir):
    data = os.urandom(5 * MB + 123)
    put = await fetch(
        record_url(),
        method="PUT",
        headers={"Content-Type": "audio/ogg", "Transfer-Encoding": "chunked"},
        body_producer=chunked_producer(data),
    )
    assert put.code == 204 and put.body == b""
    assert put.headers["ETag"] == etag_of(data)
    assert "Last-Modified" in put.headers

    got = await fetch(record_url())
    assert got.code == 200
    assert got.body == data
    assert got.headers["Content-Type"] == "audio/ogg"
    assert int(got.headers["Content-Length"]) == len(data)
    assert got.headers["ETag"] == etag_of(data)
    assert got.headers["Last-Modified"] == put.headers["Last-Modified"]
    # One immutable blob holding exactly those bytes, nothing left in tmp/.
    [blob] = list(blobs())
    assert blobs()[blob] == data
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test(timeout=60)
async def test_content_length_upload_round_trips_and_alias_route_serves_it(fetch):
    data = os.urandom(3 * MB)
    put = await fetch(record_url(), method="PUT", headers={"Content-Type": "audio/flac"}, body=data)
    assert put.code == 204
    got = await fetch(f"/record/{EVENT}/{START}")
    assert got.code == 200 and got.body == data and got.headers["Content-Type"] == "audio/flac"


@pytest.mark.gen_test
async def test_missing_content_type_is_stored_as_octet_stream_and_empty_body_is_a_record(fetch):
    put = await fetch(record_url(), method="PUT", body=b"")
    assert put.code == 204
    assert put.headers["ETag"] == etag_of(b"")
    got = await fetch(record_url())
    assert got.code == 200 and got.body == b""
    assert got.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.gen_test
async def test_head_gives_the_headers_of_a_download_without_body(fetch):
    data = os.urandom(100_000)
    await fetch(record_url(), method="PUT", headers={"Content-Type": "audio/mpeg"}, body=data)
    head = await fetch(record_url(), method="HEAD")
    assert head.code == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Content-Type"] == "audio/mpeg"
    assert head.headers["ETag"] == etag_of(data)
    assert "Last-Modified" in head.headers


@pytest.mark.gen_test
async def test_replacing_a_record_keeps_only_the_new_version(blobs, fetch, data_dir):
    await fetch(record_url(), method="PUT", headers={"Content-Type": "audio/ogg"}, body=b"old version")
    put = await fetch(record_url(), method="PUT", headers={"Content-Type": "audio/wav"}, body=b"new version!")
    assert put.code == 204 and put.headers["ETag"] == etag_of(b"new version!")
    got = await fetch(record_url())
    assert got.body == b"new version!" and got.headers["Content-Type"] == "audio/wav"
    listed = json.loads((await fetch(f"/records/{EVENT}")).body)
    assert listed["count"] == 1 and listed["records"][0]["size"] == len(b"new version!")
    [blob] = list(blobs())
    assert blobs()[blob] == b"new version!"


@pytest.mark.gen_test
async def test_delete_removes_the_record_and_its_file(blobs, fetch, data_dir):
    await fetch(record_url(), method="PUT", body=b"x" * 1000)
    assert len(list(blobs())) == 1
    deleted = await fetch(record_url(), method="DELETE")
    assert deleted.code == 204 and deleted.body == b""
    assert list(blobs()) == []
    missing = await fetch(record_url())
    assert missing.code == 404
    assert json.loads(missing.body) == {
        "status_code": 404,
        "detail": f"No record of event {EVENT} starting at {START}",
    }
    assert json.loads((await fetch(f"/records/{EVENT}")).body)["count"] == 0


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_missing_record_is_404_json(fetch, method):
    response = await fetch(record_url(), method=method)
    assert response.code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body)["status_code"] == 404


@pytest.mark.gen_test
async def test_missing_record_head_is_404(fetch):
    assert (await fetch(record_url(), method="HEAD")).code == 404


async def abort_upload_midway(port: int, data_dir, chunked: bool) -> None:
    """Send part of an upload over a raw socket, wait until it is being written to tmp/, then vanish."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {10 * MB}"
    writer.write(f"PUT {record_url()} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/ogg\r\n{framing}\r\n\r\n".encode())
    part = b"y" * MB
    writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
    await writer.drain()
    assert await eventually(lambda: files_in(data_dir / "tmp")), "the upload never reached tmp/"
    writer.transport.abort()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_aborted_upload_leaves_previous_version_whole_and_no_file(
    blobs, fetch, http_port, data_dir, chunked
):
    previous = os.urandom(2 * MB)
    await fetch(record_url(), method="PUT", headers={"Content-Type": "audio/flac"}, body=previous)
    [blob] = list(blobs())

    await abort_upload_midway(http_port, data_dir, chunked)
    assert await eventually(lambda: not files_in(data_dir / "tmp"))
    assert list(blobs()) == [blob]
    got = await fetch(record_url())
    assert got.code == 200 and got.body == previous and got.headers["Content-Type"] == "audio/flac"


@pytest.mark.gen_test(timeout=30)
async def test_aborted_first_upload_leaves_no_record(blobs, fetch, http_port, data_dir):
    await abort_upload_midway(http_port, data_dir, chunked=True)
    assert await eventually(lambda: not files_in(data_dir / "tmp"))
    assert (await fetch(record_url())).code == 404
    assert json.loads((await fetch(f"/records/{EVENT}")).body)["count"] == 0
    assert list(blobs()) == []


@pytest.mark.gen_test(timeout=60)
async def test_uploads_that_end_together_are_answered_together_each_with_its_record(fetch) -> None:
    # their commits share the writer's turns (storage/commits.py); on a shared index their events are written to the
    # log once a turn (before, each waited a second for the log's lock that the turn held)
    starts = [f"2024-05-01T{hour:02d}:00:00" for hour in range(20)]
    bodies = {start: os.urandom(50_000) for start in starts}
    began = time.monotonic()
    answers = await asyncio.gather(*(fetch(record_url(start=s), method="PUT", body=bodies[s]) for s in starts))
    assert [answer.code for answer in answers] == [204] * len(starts)
    assert time.monotonic() - began < 4  # one of them alone takes a few milliseconds
    for start in starts:
        answer = await fetch(record_url(start=start))
        assert answer.code == 200 and answer.body == bodies[start]
