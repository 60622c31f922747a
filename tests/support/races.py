"""Writers racing on one record through two processes."""

from __future__ import annotations

from support.rawhttp import Answer, connect, read_until, request_head
from support.records import record_url
from support.sse import Stream


def race_writers(a, b, bodies: list[bytes]) -> list[int]:  # noqa: ANN001
    """PUT each body with `If-None-Match: *` to the one record, in turn through process a and b, all at once: every
    upload has begun (its upload-started is on the event stream) before any body ends, so that each is decided at
    its commit: one 204, a 412 for the others, and each upload's events. The statuses, in the bodies' order.

    (Sent whole from threads, a writer that a busy machine delayed came after the winner's commit: refused before
    its upload began, it had no event at all.)"""
    watcher = Stream(a)  # every process's events, as the processes share the log
    socks = []
    for n, body in enumerate(bodies):
        sock = connect((a, b)[n % 2].url)
        headers = {"If-None-Match": "*", "Content-Length": str(len(body)), "Connection": "close"}
        sock.sendall(request_head("PUT", record_url(), headers) + body[:-1])
        socks.append(sock)
    begun = 0
    while begun < len(bodies):
        begun += watcher.event()[1]["type"] == "upload-started"
    watcher.close()
    for sock, body in zip(socks, bodies):
        sock.sendall(body[-1:])
    statuses = [Answer(read_until(sock, b"\r\n\r\n", timeout=60)).status for sock in socks]
    for sock in socks:
        sock.close()
    return statuses
