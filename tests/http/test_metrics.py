"""`GET /metrics`: parsed with prometheus_client's own parser, its counters moving as real requests are made."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from support.metrics import P, Samples, parse, value
from support.records import EVENT, record_url
from support.sse import listen
from tornado_records.app import close_app, make_app
from tornado_records.config import build_config


async def scrape(fetch: Any) -> Samples:
    response = await fetch("/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["Cache-Control"] == "no-store"
    return parse(response.body.decode())


def requests(samples: Samples, route: str, method: str, status: int) -> float:
    return value(samples, P + "http_requests_total", route=route, method=method, status=str(status))


@pytest.mark.gen_test
async def test_requests_are_counted_by_route_method_and_status(fetch: Any) -> None:
    before = await scrape(fetch)
    for _ in range(3):
        assert (await fetch("/ping")).code == 204
    assert (await fetch(record_url(), method="PUT", body=b"x")).code == 204
    assert (await fetch(record_url(start="2030-01-01T00:00:00"))).code == 404
    assert (await fetch(record_url(), method="PATCH", body=b"")).code == 405
    assert (await fetch("/no/such/route")).code == 404
    assert (await fetch("/ping", method="BREW", allow_nonstandard_methods=True)).code == 405
    assert (await fetch(f"/records/{EVENT}")).code == 200
    after = await scrape(fetch)
    moved = {
        ("/ping", "GET", 204): 3,
        ("/records/{event}/{start}", "PUT", 204): 1,
        ("/records/{event}/{start}", "GET", 404): 1,
        ("/records/{event}/{start}", "PATCH", 405): 1,
        ("other", "GET", 404): 1,
        ("/ping", "other", 405): 1,  # an unknown method is not a label of its own
        ("/records/{event}", "GET", 200): 1,
        ("/metrics", "GET", 200): 1,  # the first scrape
    }
    for (route, method, status), count in moved.items():
        assert requests(after, route, method, status) - requests(before, route, method, status) == count, route
    # The route label is the route's template, never the path asked for.
    routes = {dict(labels)["route"] for name, labels in after if name == P + "http_requests_total"}
    assert routes <= {"/ping", "/metrics", "/records/{event}", "/records/{event}/{start}", "other"}


@pytest.mark.gen_test
async def test_bytes_in_and_out_and_the_records_stored(fetch: Any) -> None:
    body = os.urandom(100_000)
    before = await scrape(fetch)
    assert (await fetch(record_url(), method="PUT", body=body)).code == 204
    assert (await fetch(record_url(start="2024-01-02T00:00:00"), method="PUT", body=b"12345")).code == 204
    assert (await fetch(record_url())).body == body
    stored = await scrape(fetch)
    assert value(stored, P + "upload_received_bytes_total") - value(before, P + "upload_received_bytes_total") == (
        100_005
    )
    sent = P + "http_sent_bytes_total"
    assert value(stored, sent, route="/records/{event}/{start}") - value(
        before, sent, route="/records/{event}/{start}"
    ) == 100_000
    assert value(stored, P + "records") == 2 and value(stored, P + "records_bytes") == 100_005
    assert (await fetch(record_url(), method="DELETE")).code == 204
    deleted = await scrape(fetch)
    assert value(deleted, P + "records") == 1 and value(deleted, P + "records_bytes") == 5
    assert value(deleted, sent, route="/metrics") > 0  # the earlier scrapes' own bodies


@pytest.mark.gen_test
async def test_disk_free_used_and_size_of_the_data_directory(fetch: Any, data_dir: Path) -> None:
    samples = await scrape(fetch)
    disk = os.statvfs(data_dir)
    size, free, used = (value(samples, P + f"disk_{name}_bytes") for name in ("size", "free", "used"))
    assert size == disk.f_blocks * disk.f_frsize
    assert 0 < free <= size and 0 < used <= size
    assert abs(free - disk.f_bavail * disk.f_frsize) < 64 << 20  # other engineers write meanwhile


@pytest.mark.gen_test(timeout=30)
async def test_uploads_in_flight_subscribers_and_events_published(fetch: Any, port: int) -> None:
    before = await scrape(fetch)
    assert value(before, P + "uploads_in_flight") == 0 and value(before, P + "sse_subscribers") == 0
    listener = await listen(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT {record_url()} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
    )
    await listener.event_of("upload-started")
    during = await scrape(fetch)
    assert value(during, P + "uploads_in_flight") == 1 and value(during, P + "sse_subscribers") == 1
    writer.write(b"0\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 204")
    writer.close()
    await listener.event_of("record-created")
    after = await scrape(fetch)
    assert value(after, P + "uploads_in_flight") == 0
    published = P + "events_published_total"
    for event_type in ("upload-started", "record-created"):
        assert value(after, published, type=event_type) - value(before, published, type=event_type) == 1
    assert value(after, P + "sse_sent_bytes_total") > value(before, P + "sse_sent_bytes_total")
    listener.close()
    for _ in range(200):  # the server notices the stream's end as soon as the loop reads the close
        if value(await scrape(fetch), P + "sse_subscribers") == 0:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the subscriber that left is still counted")


@pytest.mark.gen_test
async def test_head_and_the_process_metrics(fetch: Any) -> None:
    head = await fetch("/metrics", method="HEAD")
    assert head.code == 200 and head.body == b""
    samples = await scrape(fetch)
    assert value(samples, "process_resident_memory_bytes") > 0


@pytest.mark.gen_test
async def test_each_app_has_its_own_registry(fetch: Any, tmp_path: Path) -> None:
    other = make_app(build_config({"data_dir": str(tmp_path / "other")}, {}))
    try:
        for _ in range(2):
            await fetch("/ping")
        mine = await scrape(fetch)
        theirs = parse(other.settings["metrics"].exposition().decode())
        assert requests(mine, "/ping", "GET", 204) == 2
        assert requests(theirs, "/ping", "GET", 204) == 0
    finally:
        close_app(other)
