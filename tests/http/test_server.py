"""The server's guard against Tornado's bare refusals watches a connection only while a request is read: writing an
answer (a download, an event stream) goes straight to Tornado's stream, with no extra call per write."""

from __future__ import annotations

import asyncio

import pytest

from support.rawhttp import upload
from support.records import record_url
from support.waiting import eventually


def guards_armed(http_server) -> list[bool]:  # noqa: ANN001
    """For each open connection: whether its guard is in the way of writes."""
    return [guard.armed or "write" in vars(guard.stream) for guard in http_server._guards.values()]


@pytest.mark.gen_test
async def test_no_guard_while_an_event_stream_or_a_download_is_written(fetch, http_server, http_port: int) -> None:
    assert (await upload(fetch, record_url(), bytes(32 << 20))).code == 204
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")  # the stream is open and being written
    download, dl_writer = await asyncio.open_connection("127.0.0.1", http_port)
    dl_writer.write(f"GET {record_url()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await download.readuntil(b"\r\n\r\n")  # the download has begun; 32 MiB do not fit in the sockets' buffers
    idle, idle_writer = await asyncio.open_connection("127.0.0.1", http_port)
    idle_writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # half a head: this one is being read
    assert await eventually(lambda: sorted(guards_armed(http_server)) == [False, False, True])
    for w in (writer, dl_writer, idle_writer):
        w.close()
