"""`GET /sse` over real HTTP: headers, retry and keepalive lines, every event type with its payload, replay after a
reconnect, slow subscribers dropped, 500 subscribers, removal on disconnect, shutdown; curl and Chromium as clients."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from support.event_schema import conforms, resolve
from support.records import EVENT, START, record_url
from support.sse import Listener, listen
from support.waiting import wait_for
from tornado_records.events import EventHub


@pytest.fixture
def settings() -> dict[str, str]:
    # hundreds of subscribers from one address (the test's): above the per-client cap's default of 100
    return {"sse_keepalive": "0.2", "max_client_streams": "1000"}


# -- conformance to records.yaml ---------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_the_served_openapi_document_describes_the_stream(fetch: Any) -> None:
    document = json.loads((await fetch("/openapi/openapi.json")).body)
    operation = document["paths"]["/sse"]["get"]
    assert {"200", "503"} <= operation["responses"].keys()
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"Cache-Control", "X-Accel-Buffering"} <= operation["responses"]["200"]["headers"].keys()
    assert any(p["name"] == "Last-Event-ID" and p["in"] == "header" for p in operation["parameters"])
    event_types = {resolve(s)["properties"]["type"]["const"] for s in document["components"]["schemas"]["Event"]["oneOf"]}
    assert event_types == {
        "record-created", "record-updated", "record-deleted", "upload-started", "upload-progress", "upload-aborted",
        "upload-resumed", "upload-completed", "upload-interrupted", "event-updated", "recorder-standby",
        "recorder-takeover", "record-analyzed", "dead-air", "dead-air-over",
    }


# -- the stream ---------------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_headers_then_retry_line_then_keepalive_comments(port: int) -> None:
    began = time.monotonic()  # before the subscription, from which the hub's keepalive timer counts
    listener = await Listener.open(port)
    assert listener.status == 200
    assert listener.headers["content-type"] == "text/event-stream"
    assert listener.headers["cache-control"] == "no-store"  # issue 26: an event stream is never kept
    assert listener.headers["x-accel-buffering"] == "no"
    assert listener.headers["transfer-encoding"] == "chunked"
    assert await listener.line() == "retry: 3000"
    assert await listener.line() == ""
    for _ in range(3):
        assert await listener.line(timeout=2) == ": keepalive"
        assert await listener.line() == ""
    assert 0.6 <= time.monotonic() - began <= 2.0  # every 0.2 s, as the settings say: the third after 0.6 s
    listener.close()


@pytest.mark.gen_test(timeout=20)
async def test_record_events_with_their_payloads(port: int, fetch: Any) -> None:
    listener = await listen(port)
    # Any case of UUID and a short start: events show the canonical forms, as the API does.
    url = record_url(EVENT.upper(), "2024-01-01T00:00")
    assert (await fetch(url, method="PUT", body=b"first", headers={"Content-Type": "audio/ogg"})).code == 204
    started_id, started = await listener.event()
    created_id, created = await listener.event()
    listing = json.loads((await fetch(f"/records/{EVENT}")).body)
    assert conforms(started)["type"] == "upload-started"
    assert started["data"] == {"event": EVENT, "start": START, "type": "audio/ogg"}
    assert conforms(created)["type"] == "record-created"
    listed = listing["records"][0]  # the listing adds what the analysis found: the rest is the event's record
    assert set(listed) - set(created["data"]["record"]) == {"analysis", "audio"}
    assert created["data"] == {"record": {k: listed[k] for k in created["data"]["record"]}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["created_at"])

    assert (await fetch(url, method="PUT", body=b"second, longer", headers={"Content-Type": "audio/flac"})).code == 204
    _, restarted = await listener.event()
    updated_id, updated = await listener.event()
    assert restarted["type"] == "upload-started"
    assert conforms(updated)["type"] == "record-updated"
    listed = json.loads((await fetch(f"/records/{EVENT}")).body)["records"][0]
    assert updated["data"]["record"] == {k: listed[k] for k in updated["data"]["record"]}
    assert updated["data"]["record"]["size"] == len(b"second, longer")

    assert (await fetch(url, method="DELETE")).code == 204
    deleted_id, deleted = await listener.event()
    assert conforms(deleted) == {**deleted, "type": "record-deleted", "data": {"record": {"event": EVENT, "start": START}}}
    assert [created_id, updated_id, deleted_id] == [started_id + 1, started_id + 3, started_id + 4]
    listener.close()


@pytest.mark.gen_test(timeout=20)
async def test_failed_requests_publish_no_record_event(port: int, fetch: Any) -> None:
    listener = await listen(port)
    assert (await fetch(record_url(), method="DELETE")).code == 404
    assert (await fetch(record_url(start="2024-01-01T00:00Z"), method="PUT", body=b"x")).code == 400
    assert (await fetch(record_url(), method="PUT", body=b"x")).code == 204
    # The first event after those failures is the good upload's.
    assert (await listener.event())[1]["type"] == "upload-started"
    assert (await listener.event())[1]["type"] == "record-created"
    listener.close()


async def send_chunked(port: int, path: str, chunks: int, size: int, pause: float) -> socket.socket:
    """A PUT whose chunked body is sent slowly and never finished; the open socket is returned."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    for _ in range(chunks):
        sock.sendall(b"%x\r\n" % size + b"a" * size + b"\r\n")
        await asyncio.sleep(pause)
    return sock


@pytest.mark.gen_test(timeout=20)
async def test_upload_progress_then_aborted_when_the_client_goes(
    port: int, hub: EventHub, data_dir: Path
) -> None:
    hub.progress_interval = 0.1
    listener = await listen(port)
    began = time.monotonic()
    sock = await send_chunked(port, record_url(), chunks=10, size=1000, pause=0.05)
    await wait_for(lambda: any(p.stat().st_size == 10_000 for p in (data_dir / "tmp").rglob("*.part")))
    sock.close()
    sending = time.monotonic() - began
    _, started = await listener.event()
    assert started["type"] == "upload-started"
    events = []
    while not events or events[-1]["type"] == "upload-progress":
        events.append(conforms((await listener.event())[1]))
    progress = [e["data"]["bytes"] for e in events[:-1]]
    assert 2 <= len(progress) <= sending / 0.1 + 1, progress  # at least 0.5 s of body, at most one every 0.1 s
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] <= 10_000
    assert events[-1]["type"] == "upload-aborted"
    assert events[-1]["data"] == {"event": EVENT, "start": START, "bytes": 10_000, "reason": "client-gone"}
    listener.close()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.engines("sqlite", "postgresql")  # the failure made here is of blobs/ (test_s3: the object store's)
async def test_upload_aborted_on_a_server_error_and_no_record_event(
    port: int, fetch: Any, data_dir: Path
) -> None:
    listener = await listen(port)
    shutil.rmtree(data_dir / "blobs")  # the commit's rename into blobs/ now fails
    assert (await fetch(record_url(), method="PUT", body=b"12345")).code == 500
    assert (await listener.event())[1]["type"] == "upload-started"
    _, aborted = await listener.event()
    assert conforms(aborted)["data"] == {"event": EVENT, "start": START, "bytes": 5, "reason": "error"}
    (data_dir / "blobs").mkdir()
    assert (await fetch(record_url(), method="PUT", body=b"12345")).code == 204
    assert (await listener.event())[1]["type"] == "upload-started"
    assert (await listener.event())[1]["type"] == "record-created"
    listener.close()


@pytest.mark.gen_test(timeout=20)
async def test_replay_after_reconnect_without_gaps_or_duplicates(port: int, fetch: Any) -> None:
    listener = await listen(port)
    await fetch(record_url(start="2024-01-01T01:00:00"), method="PUT", body=b"1")
    seen = [await listener.event(), await listener.event()]
    listener.close()
    last_id = seen[-1][0]
    for hour in (2, 3):  # published while the client is away
        await fetch(record_url(start=f"2024-01-01T0{hour}:00:00"), method="PUT", body=b"2")
    for resumed in (
        await listen(port, headers={"Last-Event-ID": str(last_id)}),
        await listen(port, path=f"/sse?lastEventId={last_id}"),
    ):
        missed = [await resumed.event() for _ in range(4)]
        assert [event_id for event_id, _ in missed] == list(range(last_id + 1, last_id + 5))
        assert [e["type"] for _, e in missed] == ["upload-started", "record-created"] * 2
        assert [e["data"]["record"]["start"] for _, e in missed[1::2]] == ["2024-01-01T02:00:00", "2024-01-01T03:00:00"]
        await fetch(record_url(start="2024-01-02T00:00:00"), method="PUT", body=b"5")  # then the next ids follow
        assert (await resumed.event())[0] == missed[-1][0] + 1
        resumed.close()
    # Without an id (or with one this service never gives) there is no replay: the first event is a live one.
    for fresh in (await listen(port), await listen(port, headers={"Last-Event-ID": "bogus"})):
        await fetch(record_url(start="2024-01-01T04:00:00"), method="PUT", body=b"4")
        assert (await fresh.event())[1]["data"]["start"] == "2024-01-01T04:00:00"
        fresh.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_subscriber_that_stops_reading_is_dropped_while_others_keep_receiving(
    port: int, hub: EventHub
) -> None:
    reader = await listen(port)
    [reading] = hub.subscribers
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: len(hub.subscribers) == 2)
    [slow] = hub.subscribers - {reading}
    most_unsent = 0
    for n in range(400):  # up to 25 MB of 64 KB events, each read by the reader before the next is published
        hub.publish("test", {"n": n, "pad": "x" * 65536})
        assert (await reader.event())[1]["data"]["n"] == n
        if slow not in hub.subscribers:
            break
        most_unsent = max(most_unsent, slow.unsent)
    assert slow not in hub.subscribers and len(hub.subscribers) == 1, "the stalled subscriber was never dropped"
    assert most_unsent <= hub.max_unsent  # the server never held more than the bound for it
    # The server closed the stalled connection: reading it to the end reaches EOF (or a reset).
    stalled.settimeout(10)
    with pytest.raises((ConnectionResetError, EOFError)):
        while stalled.recv(1 << 20):
            pass
        raise EOFError
    hub.publish("test", {"after": True})
    assert (await reader.event())[1]["data"] == {"after": True}
    reader.close()


@pytest.mark.gen_test(timeout=60)
async def test_500_subscribers_all_receive_an_event_and_are_gone_after_disconnecting(
    port: int, hub: EventHub, fetch: Any
) -> None:
    hub.keepalive = 600  # no write in the meantime reveals the closed connections: they must be removed at once
    listeners = await asyncio.gather(*(listen(port) for _ in range(500)))
    assert len(hub.subscribers) == 500
    assert (await fetch(record_url(), method="PUT", body=b"x")).code == 204
    events = await asyncio.gather(*(listener.event_of("record-created") for listener in listeners))
    assert len({event_id for event_id, _ in events}) == 1
    assert all(event["data"]["record"]["event"] == EVENT for _, event in events)
    for listener in listeners:
        listener.close()
    await wait_for(lambda: not hub.subscribers, timeout=5)  # removed as each connection closes (on_connection_close)


@pytest.mark.gen_test(timeout=60)
async def test_with_each_event_written_by_several_threads_every_subscriber_gets_each_once_in_order(
    port: int, hub: EventHub, fetch: Any
) -> None:
    hub.split_at, hub.send_threads = 2, 3  # as with thousands of subscribers on three cores
    listeners = await asyncio.gather(*(listen(port) for _ in range(200)))
    for hour in range(5):
        url = record_url(start=f"2024-01-01T0{hour}:00:00")
        assert (await fetch(url, method="PUT", body=b"x", headers={"Content-Type": "audio/ogg"})).code == 204
    streams = [[await listener.event() for _ in range(10)] for listener in listeners]
    ids = [event_id for event_id, _ in streams[0]]
    assert ids == sorted(set(ids))
    assert [event["type"] for _, event in streams[0]] == ["upload-started", "record-created"] * 5
    assert all(stream == streams[0] for stream in streams)  # the same events, once each, in the same order
    for listener in listeners:
        listener.close()


@pytest.mark.gen_test(timeout=20)
async def test_closing_the_hub_ends_every_stream_cleanly(port: int, hub: EventHub) -> None:
    listeners = [await listen(port) for _ in range(3)]
    began = time.monotonic()
    await hub.close(timeout=5)
    assert time.monotonic() - began < 2  # every stream ended and left the hub without being cut off
    for listener in listeners:
        while (line := await listener.line()) is not None:  # until the last chunk: a clean end, not a cut
            assert line in ("", ": keepalive")
    assert not hub.subscribers  # removed as each response finished (on_finish)
    late = await Listener.open(port)  # a stream asked for after the close ends at once
    assert await late.line() == "retry: 3000"
    assert await late.line() == ""
    assert await late.line() is None


# -- the keepalive setting ---------------------------------------------------------------------------------------


# -- real clients and a real process -----------------------------------------------------------------------------


