"""Refusals decided before the body is read (401, 412, 413, 507) reach clients that send their whole body without
waiting for `100 Continue` (Python's http.client and requests, a raw socket), against a real `tornado-records`.

The service answers, then closes with a lingering close (tornado_records.server.Linger): what the client still sends
is read and dropped, within bounds of time, idleness and bytes, so that the client reads the answer rather than a
connection reset, and nothing is stored.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest
import requests

from support.disk import tmpfs
from support.rawhttp import Answer, connect, read_to_end, request, request_head
from support.records import EVENT, files_in, record_url
from tornado_records.http.server import LINGER_BYTES, LINGER_IDLE_SECONDS, LINGER_SECONDS

SECRET = "refusals-test-token"
SIZES = (8 << 20, 64 << 20)
SLACK = 3.0  # seconds a loaded machine may add to a bound


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes


class Refusing(NamedTuple):
    """A running service, and the headers of a PUT it refuses before reading the body."""

    url: str
    data_dir: Path
    headers: dict[str, str]
    status: int
    detail: Callable[[int], str]  # the detail of the refusal of a body of that size


@pytest.fixture(params=[401, 412, 413, 507])
def refusing(request: pytest.FixtureRequest, service, tmp_path: Path) -> Iterator[Refusing]:
    status = request.param
    if status == 507:  # the bodies are larger than the free space of an 8 MiB disk
        with tmpfs(tmp_path / "disk", "size=8m") as disk:
            svc = service(data_dir=disk / "data")
            yield Refusing(svc.url, svc.data_dir, {}, 507, space_detail)
        return
    token = tmp_path / "token"
    token.write_text(SECRET)
    svc = service("--token-file", str(token), "--max-body-size", "1M")
    authorized = {"Authorization": f"Bearer {SECRET}"}
    yield {
        401: Refusing(svc.url, svc.data_dir, {}, 401, lambda size: "This needs an Authorization: Bearer token"),
        412: Refusing(svc.url, svc.data_dir, {**authorized, "If-Match": '"not-there"'}, 412, precondition_detail),
        413: Refusing(svc.url, svc.data_dir, authorized, 413, limit_detail),
    }[status]


def precondition_detail(size: int) -> str:
    return f"The record of event {EVENT} starting at 2024-01-01T00:00:00 does not meet the request's preconditions"


def limit_detail(size: int) -> str:
    return f"The body of {size} bytes is over the limit of 1048576 bytes"


def space_detail(size: int) -> str:
    return f"An upload of {size} bytes does not fit in the space left on the server's disk"


def with_http_client(url: str, body: bytes, headers: dict[str, str]) -> Reply:
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", record_url(), body=body, headers=headers)  # sends it all, then reads
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def with_requests(url: str, body: bytes, headers: dict[str, str]) -> Reply:
    response = requests.put(url + record_url(), data=body, headers=headers, timeout=30)
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


def with_raw_socket(url: str, body: bytes, headers: dict[str, str]) -> Reply:
    with connect(url) as sock:
        sock.sendall(request_head("PUT", record_url(), {**headers, "Content-Length": str(len(body))}))
        sock.sendall(body)  # all of it, reading nothing meanwhile
        answer = Answer(read_to_end(sock))
    return Reply(answer.status, answer.headers, answer.body)


@pytest.fixture(scope="module")
def bodies() -> dict[int, bytes]:
    return {size: bytes(size) for size in SIZES}


@pytest.mark.parametrize("client", [with_http_client, with_requests, with_raw_socket])
def test_a_client_sending_its_whole_body_reads_the_refusal_and_nothing_is_stored(
    refusing: Refusing, client: Callable[..., Reply], bodies: dict[int, bytes]
) -> None:
    for size, body in bodies.items():
        reply = client(refusing.url, body, refusing.headers)
        assert reply.status == refusing.status, (size, reply)
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["connection"] == "close"
        assert json.loads(reply.body) == {"status_code": refusing.status, "detail": refusing.detail(size)}
    assert files_in(refusing.data_dir / "blobs") == []
    assert files_in(refusing.data_dir / "tmp") == []
    status, _, listing = request(refusing.url, "GET", f"/records/{EVENT}")
    assert status == 200 and json.loads(listing)["count"] == 0
    assert request(refusing.url, "GET", "/ping")[0] == 204


def refused_endless_upload(service) -> tuple[socket.socket, float]:  # noqa: ANN001
    """A connection that sent the head of a PUT of a TiB, which the service refuses (413) before reading the body,
    and the time.monotonic() just before the head was sent: before the answer, from which the service's bounds count.
    """
    svc = service("--max-body-size", "1M")
    sock = connect(svc.url)
    started = time.monotonic()
    sock.sendall(request_head("PUT", record_url(), {"Content-Length": str(1 << 40)}))
    return sock, started


def test_a_client_sending_without_end_is_cut_off_after_the_byte_bound(service) -> None:
    piece = bytes(1 << 20)
    sent = 0
    sock, started = refused_endless_upload(service)
    with sock:
        with pytest.raises(OSError):  # the reset that ends it
            while time.monotonic() - started < LINGER_SECONDS + 2 * SLACK:
                sock.sendall(piece)
                sent += len(piece)
        elapsed = time.monotonic() - started
    # Read and dropped for a while (as much as the 64 MiB bodies above), then cut off at a bound: the bytes, or the
    # time on a machine too slow to send a GiB within it. Socket buffers hold a few MiB more.
    assert 64 << 20 < sent <= LINGER_BYTES + (32 << 20), sent
    assert elapsed < LINGER_SECONDS + SLACK, elapsed


def test_a_client_trickling_without_end_is_cut_off_after_the_time_bound(service) -> None:
    piece = bytes(1024)
    sent = 0
    received = b""
    ended = False  # the answer, then the end of the stream, have come: the client still sends
    sock, started = refused_endless_upload(service)
    with sock:
        with pytest.raises(OSError):
            while time.monotonic() - started < LINGER_SECONDS + 2 * SLACK:
                sock.sendall(piece)  # 20 KiB/s: never idle for long, never many bytes
                sent += len(piece)
                if not ended and select.select([sock], [], [], 0)[0]:
                    data = sock.recv(65536)
                    received += data
                    ended = not data
                time.sleep(0.05)  # paced by the clock, not by the socket (at its end it is always readable)
        elapsed = time.monotonic() - started
    answer = Answer(received)
    assert answer.status == 413 and json.loads(answer.body)["status_code"] == 413
    assert ended and sent < LINGER_BYTES // 1000, sent  # so neither the idle nor the byte bound cut it off
    # The clock started before the request was sent, so before the answer from which the service counts; only the
    # event loop's millisecond clock can make the close look a little early.
    assert LINGER_SECONDS - 0.01 < elapsed < LINGER_SECONDS + SLACK, elapsed


def test_a_client_that_stops_sending_is_closed_after_the_idle_bound(service) -> None:
    sock, _ = refused_endless_upload(service)
    with sock:
        sock.sendall(bytes(1 << 20))
        answer = Answer(read_to_end(sock))  # the answer, and at once the end of the stream
        assert answer.status == 413
        time.sleep(0.5)
        sock.sendall(b"more")  # the last byte it sends: the idle bound counts from here
        time.sleep(LINGER_IDLE_SECONDS + 1)  # still well within LINGER_SECONDS of the answer
        with pytest.raises(OSError):  # closed: the next byte is answered with a reset, and a later one fails
            for _ in range(10):
                sock.sendall(b"late")
                time.sleep(0.1)
