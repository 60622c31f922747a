"""The EventHub on its own: ids and order, the wire form, replay from an id, bounds, removal, keepalive, close."""

from __future__ import annotations

import asyncio
import datetime
import re
import time

import pytest

from support.hub import Client, parse
from support.records import EVENT, START
from support.waiting import eventually
from tornado_records.events import KEEPALIVE_LINE, EventHub
from tornado_records.upload_events import UploadEvents, publish_deleted
from tornado_records.handlers.base import ApiError, abort_reason


@pytest.mark.gen_test
async def test_events_reach_every_subscriber_in_order_with_increasing_ids() -> None:
    hub = EventHub(first_id=1)
    first, second = Client(hub), Client(hub)
    ids = [hub.publish("test", {"n": n}) for n in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    for client in (first, second):
        assert client.ids() == ids
        assert [body["data"]["n"] for _, body in client.events()] == list(range(5))
        assert all(body["type"] == "test" for _, body in client.events())


@pytest.mark.gen_test
async def test_an_event_is_serialized_once_and_shared_by_all_subscribers() -> None:
    hub = EventHub()
    clients = [Client(hub) for _ in range(3)]
    hub.publish("test", {"n": 1})
    assert clients[0].received[0] is clients[1].received[0] is clients[2].received[0]


@pytest.mark.gen_test
async def test_a_subscriber_that_keeps_up_gets_each_event_in_its_own_write() -> None:
    hub = EventHub()
    client = Client(hub)
    for n in range(3):
        hub.publish("test", {"n": n})
    assert client.writes == 3 and client.subscriber.unsent == 0 and client.subscriber.queue == []


@pytest.mark.gen_test
async def test_created_at_is_utc_with_microseconds_and_z() -> None:
    hub = EventHub()
    client = Client(hub)
    before = datetime.datetime.now(datetime.timezone.utc)
    hub.publish("test", {})
    [(_, body)] = client.events()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["created_at"])
    created = datetime.datetime.fromisoformat(body["created_at"])
    assert created.tzinfo is not None and created.utcoffset() == datetime.timedelta(0)
    assert before <= created <= datetime.datetime.now(datetime.timezone.utc)


def test_ids_keep_increasing_across_hubs_by_default() -> None:
    """A restarted service must not reuse the ids an earlier run gave (clients send them back)."""
    earlier = EventHub()
    last = max(earlier.publish("test", {}) for _ in range(10))
    assert EventHub().publish("test", {}) > last


@pytest.mark.gen_test
async def test_replay_from_an_id_gives_exactly_the_later_events_then_the_live_ones() -> None:
    hub = EventHub(first_id=1)
    for n in range(10):
        hub.publish("test", {"n": n})
    resumed = Client(hub, last_id=6)
    hub.publish("test", {"n": 10})
    assert resumed.ids() == [7, 8, 9, 10, 11]
    assert Client(hub, last_id=11).ids() == []


@pytest.mark.gen_test
async def test_events_published_before_start_are_sent_first_in_order() -> None:
    hub = EventHub(first_id=1)
    hub.publish("test", {})
    received: list[bytes] = []

    def send(batch: list[bytes]) -> asyncio.Future:
        received.extend(batch)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    subscriber = hub.subscribe(send, last_id=0)
    hub.publish("test", {})  # while the stream's own first bytes are going out
    assert received == []
    subscriber.start()
    hub.publish("test", {})
    assert [parse(wire)[0] for wire in received] == [1, 2, 3]


@pytest.mark.gen_test
async def test_no_replay_without_an_id() -> None:
    hub = EventHub(first_id=1)
    hub.publish("test", {})
    fresh = Client(hub)
    hub.publish("test", {})
    assert fresh.ids() == [2]


@pytest.mark.gen_test
async def test_the_replay_buffer_is_bounded_and_keeps_the_newest() -> None:
    hub = EventHub(first_id=1, replay=5)
    for _ in range(12):
        hub.publish("test", {})
    assert hub.replay_ids() == [8, 9, 10, 11, 12]
    # An id older than the buffer gets what is left; one from an earlier run (beyond the newest) gets all of it.
    assert Client(hub, last_id=2).ids() == [8, 9, 10, 11, 12]
    assert Client(hub, last_id=999).ids() == [8, 9, 10, 11, 12]


@pytest.mark.gen_test
async def test_a_slow_subscriber_queues_behind_its_write_in_flight_then_gets_one_batch() -> None:
    hub = EventHub(first_id=1)
    client = Client(hub, slow=True)
    for _ in range(4):
        hub.publish("test", {})
    assert client.writes == 1 and len(client.subscriber.queue) == 3
    assert client.subscriber.unsent == sum(map(len, client.received)) + sum(map(len, client.subscriber.queue))
    client.catch_up()
    await asyncio.sleep(0)  # the write's completion arrives as a callback
    assert client.writes == 2 and client.ids() == [1, 2, 3, 4]
    client.catch_up()
    await asyncio.sleep(0)
    assert client.subscriber.unsent == 0 and client.subscriber.queue == []


@pytest.mark.gen_test
async def test_a_subscriber_too_far_behind_is_dropped_and_the_others_kept() -> None:
    hub = EventHub(max_unsent=10_000)
    slow, fast = Client(hub, slow=True), Client(hub)
    for _ in range(30):
        hub.publish("test", {"pad": "x" * 900})
        assert slow.subscriber.unsent <= 10_000 or slow.dropped
    assert slow.dropped and not fast.dropped
    assert hub.subscribers == {fast.subscriber}
    assert len(fast.events()) == 30
    assert slow.subscriber.closed and slow.subscriber.queue == []


@pytest.mark.gen_test
async def test_unsubscribe_removes_and_ends_the_subscriber() -> None:
    hub = EventHub()
    client = Client(hub)
    hub.unsubscribe(client.subscriber)
    assert hub.subscribers == set()
    await asyncio.wait_for(client.subscriber.done, 1)
    hub.unsubscribe(client.subscriber)  # twice is harmless
    hub.publish("test", {})
    assert client.received == []


@pytest.mark.gen_test
async def test_keepalive_reaches_every_subscriber_and_stops_with_them() -> None:
    hub = EventHub(keepalive=0.05)
    first, second = Client(hub), Client(hub)
    assert await eventually(lambda: first.received[:2] == second.received[:2] == [KEEPALIVE_LINE, KEEPALIVE_LINE])
    hub.unsubscribe(first.subscriber)
    hub.unsubscribe(second.subscriber)
    assert await eventually(lambda: hub._timer is None)  # no subscriber: its last tick sets no timer again


@pytest.mark.gen_test
async def test_close_ends_every_stream_and_drops_those_stuck_in_a_write() -> None:
    hub = EventHub()
    idle, stuck = Client(hub), Client(hub, slow=True)
    hub.publish("test", {})  # stuck's write of it never completes
    idle.subscriber.done.add_done_callback(lambda _: hub.unsubscribe(idle.subscriber))  # as the handler does
    await hub.close(timeout=0.2)
    assert idle.subscriber.done.done() and not idle.dropped
    assert stuck.dropped and not stuck.subscriber.done.done()
    assert hub.subscribers == set()
    late = Client(hub)
    assert late.subscriber.closed and hub.subscribers == set()
    await asyncio.wait_for(late.subscriber.done, 1)


@pytest.mark.gen_test
async def test_a_failed_write_ends_the_subscriber() -> None:
    hub = EventHub()
    client = Client(hub, slow=True)
    hub.publish("test", {})
    client.pending.pop().set_exception(ConnectionResetError())
    await asyncio.wait_for(client.subscriber.done, 1)
    hub.publish("test", {})
    assert client.writes == 1


@pytest.mark.gen_test
async def test_what_the_socket_does_not_take_at_once_is_sent_after_and_later_events_wait_behind_it() -> None:
    hub = EventHub(first_id=1)
    taken: list[bytes] = []
    sent: list[list[bytes]] = []
    in_flight = asyncio.get_running_loop().create_future()

    def write(data: bytes) -> int:  # a socket with room for 10 bytes, then none
        room = 10 - sum(map(len, taken))
        if room <= 0:
            raise BlockingIOError()
        taken.append(data[:room])
        return len(taken[-1])

    def frame(data: bytes) -> bytes:
        return b"[" + data + b"]"

    subscriber = hub.subscribe(lambda batch: sent.append(batch) or in_flight, write=write, frame=frame)
    subscriber.start()
    hub.publish("test", {})
    hub.publish("test", {})
    assert len(sent) == 1 and len(subscriber.queue) == 1  # the first's rest in flight; the second waits behind it
    in_flight.set_result(None)
    await asyncio.sleep(0)
    stream = b"".join(taken + [data for batch in sent for data in batch])
    assert stream.startswith(b"[") and stream.endswith(b"]")  # each event framed, and whole
    assert [parse(wire)[0] for wire in stream[1:-1].split(b"][")] == [1, 2]
    assert subscriber.unsent == 0 and not subscriber.closed


@pytest.mark.gen_test
async def test_a_socket_that_fails_ends_the_subscriber() -> None:
    hub = EventHub()

    def write(data: bytes) -> int:
        raise ConnectionResetError()

    subscriber = hub.subscribe(lambda batch: pytest.fail("nothing is left to send"), write=write)
    subscriber.start()
    hub.publish("test", {})
    await asyncio.wait_for(subscriber.done, 1)
    assert subscriber.closed


@pytest.mark.gen_test
async def test_upload_events_started_throttled_progress_and_one_ending() -> None:
    hub = EventHub(first_id=1, progress_interval=0.1)
    client = Client(hub)
    began = time.monotonic()
    upload = UploadEvents(hub, EVENT, START, "audio/ogg")
    for size in range(1, 11):
        upload.progress(size * 100)
        await asyncio.sleep(0.03)
    uploading = time.monotonic() - began
    upload.aborted("client-gone")
    upload.aborted("error")  # only the first ending counts
    upload.committed({"event": EVENT}, created=True)
    events = [body for _, body in client.events()]
    assert events[0]["type"] == "upload-started"
    assert events[0]["data"] == {"event": EVENT, "start": START, "type": "audio/ogg"}
    progress = [e["data"] for e in events if e["type"] == "upload-progress"]
    assert 1 <= len(progress) <= uploading / 0.1, progress  # at least 0.3 s of uploading, one at most every 0.1 s
    assert all(p.keys() == {"event", "start", "bytes"} for p in progress)
    assert events[-2]["type"] == "upload-aborted"
    assert events[-2]["data"] == {"event": EVENT, "start": START, "bytes": 1000, "reason": "client-gone"}
    assert events[-1]["type"] == "record-created"  # a commit is always announced
    assert len(events) == len(progress) + 3


@pytest.mark.gen_test
async def test_committed_upload_is_never_aborted_and_delete_is_announced() -> None:
    hub = EventHub(first_id=1)
    client = Client(hub)
    upload = UploadEvents(hub, EVENT, START, "audio/ogg")
    upload.committed({"event": EVENT, "start": START}, created=False)
    upload.aborted("client-gone")
    publish_deleted(hub, EVENT, START)
    events = [body for _, body in client.events()]
    assert [e["type"] for e in events] == ["upload-started", "record-updated", "record-deleted"]
    assert events[1]["data"] == {"record": {"event": EVENT, "start": START}}
    assert events[2]["data"] == {"record": {"event": EVENT, "start": START}}


def test_abort_reasons_by_status() -> None:
    """The one mapping from an upload's error to the reason its upload-aborted event gives."""
    assert abort_reason(ApiError(413, "too large"), 413) == "too-large"
    assert abort_reason(ApiError(412, "changed"), 412) == "precondition-failed"
    assert abort_reason(None, 507) == "disk-full"
    assert abort_reason(OSError("boom"), 500) == "error"
