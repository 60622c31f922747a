"""The EventHub on its own: ids and order, the wire form, replay from an id, bounds, removal, keepalive, close."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time

import pytest

from tornado_records.events import KEEPALIVE_LINE, EventHub, Subscriber, UploadEvents, publish_deleted

EVENT = "0f339cb0-7ab4-43fe-852d-75708232f76c"
START = "2024-01-01T00:00:00"


def parse(wire: bytes) -> tuple[int, dict]:
    """The id and the JSON of one event as sent on the wire (exactly an id line, a data line, a blank line)."""
    match = re.fullmatch(rb"id: (\d+)\ndata: (.+)\n\n", wire)
    assert match, wire
    return int(match.group(1)), json.loads(match.group(2))


async def received(subscriber: Subscriber) -> list[tuple[int, dict]]:
    """The events queued for a subscriber (waiting briefly for some)."""
    batch = await asyncio.wait_for(subscriber.next(), 5)
    return [parse(wire) for wire in batch if wire != KEEPALIVE_LINE]


@pytest.mark.gen_test
async def test_events_reach_every_subscriber_in_order_with_increasing_ids() -> None:
    hub = EventHub(first_id=1)
    first, second = hub.subscribe(), hub.subscribe()
    ids = [hub.publish("test", {"n": n}) for n in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    for subscriber in (first, second):
        events = await received(subscriber)
        assert [event_id for event_id, _ in events] == ids
        assert [body["data"]["n"] for _, body in events] == list(range(5))
        assert all(body["type"] == "test" for _, body in events)


@pytest.mark.gen_test
async def test_an_event_is_serialized_once_and_shared_by_all_subscribers() -> None:
    hub = EventHub()
    subscribers = [hub.subscribe() for _ in range(3)]
    hub.publish("test", {"n": 1})
    batches = [await s.next() for s in subscribers]
    assert batches[0][0] is batches[1][0] is batches[2][0]


@pytest.mark.gen_test
async def test_created_at_is_utc_with_microseconds_and_z() -> None:
    hub = EventHub()
    subscriber = hub.subscribe()
    before = datetime.datetime.now(datetime.timezone.utc)
    hub.publish("test", {})
    [(_, body)] = await received(subscriber)
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
async def test_replay_from_an_id_gives_exactly_the_later_events() -> None:
    hub = EventHub(first_id=1)
    for n in range(10):
        hub.publish("test", {"n": n})
    assert [event_id for event_id, _ in await received(hub.subscribe(last_id=6))] == [7, 8, 9, 10]
    live = hub.subscribe(last_id=10)
    hub.publish("test", {"n": 10})
    assert [event_id for event_id, _ in await received(live)] == [11]


@pytest.mark.gen_test
async def test_no_replay_without_an_id_and_no_gap_between_replay_and_live() -> None:
    hub = EventHub(first_id=1)
    hub.publish("test", {})
    fresh = hub.subscribe()
    resumed = hub.subscribe(last_id=0)
    hub.publish("test", {})
    assert [event_id for event_id, _ in await received(fresh)] == [2]
    assert [event_id for event_id, _ in await received(resumed)] == [1, 2]


@pytest.mark.gen_test
async def test_the_replay_buffer_is_bounded_and_keeps_the_newest() -> None:
    hub = EventHub(first_id=1, replay=5)
    for _ in range(12):
        hub.publish("test", {})
    assert hub.replay_ids() == [8, 9, 10, 11, 12]
    # An id older than the buffer gets what is left; one from an earlier run (beyond the newest) gets all of it.
    assert [event_id for event_id, _ in await received(hub.subscribe(last_id=2))] == [8, 9, 10, 11, 12]
    assert [event_id for event_id, _ in await received(hub.subscribe(last_id=999))] == [8, 9, 10, 11, 12]


@pytest.mark.gen_test
async def test_a_subscriber_too_far_behind_is_dropped_and_the_others_kept() -> None:
    hub = EventHub(max_unsent=10_000)
    dropped: list[str] = []
    slow = hub.subscribe(on_drop=lambda: dropped.append("slow"))
    reader = hub.subscribe(on_drop=lambda: dropped.append("reader"))
    for _ in range(30):
        hub.publish("test", {"pad": "x" * 900})
        await reader.next()  # the reader keeps up: it takes each event as it comes
    assert dropped == ["slow"]
    assert hub.subscribers == {reader}
    assert slow.closed and await slow.next() == []


@pytest.mark.gen_test
async def test_unsent_counts_the_queue_and_the_batch_in_flight() -> None:
    hub = EventHub()
    subscriber = hub.subscribe()
    size = len(KEEPALIVE_LINE)
    subscriber.put(KEEPALIVE_LINE)
    assert subscriber.unsent == size
    await subscriber.next()
    assert subscriber.unsent == size  # taken, not yet sent
    subscriber.put(KEEPALIVE_LINE)
    await subscriber.next()  # the first batch was sent; the second is in flight
    assert subscriber.unsent == size


@pytest.mark.gen_test
async def test_unsubscribe_removes_and_ends_the_subscriber() -> None:
    hub = EventHub()
    subscriber = hub.subscribe()
    waiting = asyncio.ensure_future(subscriber.next())
    await asyncio.sleep(0.01)
    hub.unsubscribe(subscriber)
    assert hub.subscribers == set()
    assert await asyncio.wait_for(waiting, 1) == []
    hub.unsubscribe(subscriber)  # twice is harmless
    hub.publish("test", {})
    assert subscriber.queue == []


@pytest.mark.gen_test
async def test_keepalive_reaches_every_subscriber_and_stops_with_them() -> None:
    hub = EventHub(keepalive=0.05)
    first, second = hub.subscribe(), hub.subscribe()
    assert await asyncio.wait_for(first.next(), 1) == [KEEPALIVE_LINE]
    assert KEEPALIVE_LINE in await asyncio.wait_for(second.next(), 1)
    hub.unsubscribe(first)
    hub.unsubscribe(second)
    await asyncio.sleep(0.15)
    assert hub._timer is None  # no subscriber, no timer waking for nothing


@pytest.mark.gen_test
async def test_close_ends_every_stream_and_drops_those_that_stay() -> None:
    hub = EventHub()
    dropped: list[Subscriber] = []
    leaving = hub.subscribe()
    staying = hub.subscribe(on_drop=lambda: dropped.append(staying))

    async def read_then_leave() -> list[bytes]:
        batch = await leaving.next()
        hub.unsubscribe(leaving)  # what the handler does when its stream ends
        return batch

    reader = asyncio.ensure_future(read_then_leave())
    await hub.close(timeout=0.2)
    assert await reader == []
    assert dropped == [staying]
    assert hub.subscribers == set()
    late = hub.subscribe()
    assert late.closed and hub.subscribers == set()


@pytest.mark.gen_test
async def test_upload_events_started_throttled_progress_and_one_ending() -> None:
    hub = EventHub(first_id=1, progress_interval=0.1)
    subscriber = hub.subscribe()
    began = time.monotonic()
    upload = UploadEvents(hub, EVENT, START, "audio/ogg")
    for size in range(1, 11):
        upload.progress(size * 100)
        await asyncio.sleep(0.03)
    uploading = time.monotonic() - began
    upload.aborted("client-gone")
    upload.aborted("error")  # only the first ending counts
    upload.committed({"event": EVENT}, created=True)
    events = [body for _, body in await received(subscriber)]
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
    subscriber = hub.subscribe()
    upload = UploadEvents(hub, EVENT, START, "audio/ogg")
    upload.committed({"event": EVENT, "start": START}, created=False)
    upload.aborted("client-gone")
    publish_deleted(hub, EVENT, START)
    events = [body for _, body in await received(subscriber)]
    assert [e["type"] for e in events] == ["upload-started", "record-updated", "record-deleted"]
    assert events[1]["data"] == {"record": {"event": EVENT, "start": START}}
    assert events[2]["data"] == {"record": {"event": EVENT, "start": START}}
