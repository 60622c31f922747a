"""EventHub: the live events (records and uploads) fanned out to subscribers, with a replay buffer. Knows no HTTP.

With an EventLog behind it, the replay buffer starts from the events the log kept and every event goes to the log
too, so that replay outlives the process; without one it lives in memory only.

Each event is serialized once, in `EventHub.publish`, to its Server-Sent Events wire form (an `id:` line and one
`data:` line of JSON), and that same bytes object is handed to every subscriber. A subscriber costs nothing while
no event comes (nothing of its own wakes up: one hub-wide timer sends the keepalives), and little when one comes:
`publish` writes to each client directly; only a client that is behind has a queue, bounded by `max_unsent`.
With many subscribers, the writes of one event are shared among threads (`send()` lets go of the GIL, and on loopback
it does the receiving side's work too), the event loop waiting for them: each subscriber's events stay in order.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tornado_records.eventlog import EventLog, frame
from tornado_records.storage.sqldb import Database

log = logging.getLogger("tornado_records.events")

REPLAY_EVENTS = 1000  # events kept for subscribers that reconnect with Last-Event-ID (without an event log)
MAX_UNSENT = 1 << 20  # bytes a subscriber may have queued and unsent before it is dropped
KEEPALIVE = 15.0  # seconds between keepalive comments
PROGRESS_INTERVAL = 3.0  # seconds: at most one upload-progress event per upload in this time
CLOSE_TIMEOUT = 1.0  # seconds that streams get to end by themselves at close(), before they are cut off
# threads that hand one event to the subscribers' sockets: one a core (the event loop's own among them), at most 4,
# as the Python around each send() holds the GIL; from SPLIT_AT subscribers on (below it, a thread's wake-up costs
# more than it saves)
SEND_THREADS = min(4, len(os.sched_getaffinity(0)))
SPLIT_AT = 1000

KEEPALIVE_LINE = b": keepalive\n\n"


def utc_now() -> str:
    """The current time, UTC, as ISO 8601 with microseconds and a Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


CHANGE_EVENTS = frozenset({"record-created", "record-updated", "record-deleted"})  # the events of a record's change
# every type of event the hub publishes (records.yaml's Event lists each; tests/unit/test_webhook_settings.py checks)
EVENT_TYPES = (
    "record-created", "record-updated", "record-deleted", "record-analyzed", "event-updated",
    "upload-started", "upload-progress", "upload-aborted", "upload-resumed", "upload-completed", "upload-interrupted",
    "recorder-standby", "recorder-takeover", "dead-air", "dead-air-over",
)  # fmt: skip


def event_body(event_type: str, data: dict[str, Any]) -> str:
    """The data line of an unnamed Server-Sent Event: `{"type", "created_at", "data"}` as JSON."""
    return json.dumps({"type": event_type, "created_at": utc_now(), "data": data}, separators=(",", ":"))


def event_bytes(event_id: int, event_type: str, data: dict[str, Any]) -> bytes:
    """One unnamed Server-Sent Event: its id line and a data line holding `{"type", "created_at", "data"}`."""
    return frame(event_id, event_body(event_type, data))


def write_each(pairs: list[tuple[Subscriber, bytes]]) -> list[tuple[Subscriber, bytes, int]]:
    """Hand each subscriber's bytes to its client (`Subscriber.write`, on any thread: it touches no other state);
    returns those not taken whole: (subscriber, bytes, how many were taken, or -1 if the client is gone)."""
    left = []
    for subscriber, data in pairs:
        taken = written(subscriber.write, data)  # type: ignore[arg-type]
        if taken != len(data):
            left.append((subscriber, data, taken))
    return left


def written(write: Callable[[bytes], int], data: bytes) -> int:
    """How many bytes of `data` the client took at once through `write`; -1 if the client is gone."""
    try:
        return write(data)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        return -1


class Subscriber:
    """One subscriber: while it keeps up, each event is handed to its client at once; behind, they queue.

    `write(data)` hands bytes to the client at once without waiting (a non-blocking socket's `send`): it returns how
    many it took, raises BlockingIOError if none, another OSError if the client is gone. What it does not take goes
    through `send(batch)`, which returns a future done once the batch is sent; only one is in flight at a time, and
    what comes meanwhile queues behind it. Without `write`, everything goes through `send`. `frame` turns the hub's
    bytes into those of this client's stream (HTTP/1.1's chunks); the hub frames each event once per frame.
    """

    __slots__ = ("write", "send", "frame", "on_drop", "since", "after", "queue", "unsent", "closed", "done", "_busy",
                 "_in_flight")  # fmt: skip

    def __init__(
        self,
        send: Callable[[list[bytes]], asyncio.Future],
        on_drop: Callable[[], None],
        since: float = -math.inf,
        after: float = -math.inf,
        write: Callable[[bytes], int] | None = None,
        frame: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.write = write
        self.send = send
        self.frame = frame
        self.since = since  # events published before this (Unix time) are not for it: it came without a Last-Event-ID
        self.after = after  # nor those of ids up to this: its client had them (from another process sharing the log)
        self.on_drop = on_drop
        self.queue: list[bytes] = []
        self.unsent = 0  # bytes queued or in flight
        self.closed = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # closed, nothing in flight
        self._busy = True  # until start(): the stream's own first bytes go out first
        self._in_flight = 0

    def put(self, data: bytes) -> None:
        """Hand (framed) bytes to the client now, or queue them behind those in flight."""
        if self.closed:
            return
        if self._busy:
            self.unsent += len(data)
            self.queue.append(data)
            return
        self.wrote(data, 0 if self.write is None else written(self.write, data))

    @property
    def direct(self) -> bool:
        """Whether the next bytes go to the client at once through `write` (nothing queued or in flight)."""
        return not (self._busy or self.closed or self.write is None)

    def wrote(self, data: bytes, taken: int) -> None:
        """After `data` went to `write` (or not: `taken` 0) and the client took `taken` bytes of it (-1: the client
        is gone): the rest goes through `send`, and what comes meanwhile queues behind it."""
        if taken < 0:
            self.close()
        elif taken < len(data):
            rest = data[taken:] if taken else data
            self.unsent += len(rest)
            self._write([rest])

    def start(self) -> None:
        """Begin sending: what was queued until now goes first."""
        self._sent(None)

    def close(self) -> None:
        """End the subscription: nothing more is sent, and `done` resolves once no write is in flight."""
        self.closed = True
        self.queue = []
        if not self._busy and not self.done.done():
            self.done.set_result(None)

    def _write(self, batch: list[bytes]) -> None:
        self._busy = True
        self._in_flight = sum(map(len, batch))
        future = self.send(batch)
        if future.done():
            self._sent(future)
        else:
            future.add_done_callback(self._sent)

    def _sent(self, future: asyncio.Future | None) -> None:
        self._busy = False
        self.unsent -= self._in_flight
        self._in_flight = 0
        if self.closed or (future is not None and future.exception() is not None):
            self.close()  # closed meanwhile, or the client is gone: `done` resolves now that nothing is in flight
        elif self.queue:
            batch, self.queue = self.queue, []
            self._write(batch)


class EventHub:
    """The subscribers, a bounded buffer of recent events for replay (fed by the event log, if any), and publish().

    It also counts what the service's metrics show: events published by type, bytes handed to subscribers, and
    the uploads in flight and the bytes they received (kept by upload_events.UploadEvents).
    """

    def __init__(
        self,
        *,
        replay: int = REPLAY_EVENTS,
        max_unsent: int = MAX_UNSENT,
        keepalive: float = KEEPALIVE,
        progress_interval: float = PROGRESS_INTERVAL,
        first_id: int | None = None,
        log: EventLog | None = None,
        send_threads: int = SEND_THREADS,
        split_at: int = SPLIT_AT,
    ) -> None:
        self.subscribers: set[Subscriber] = set()
        self.split_at = split_at  # from this many subscribers on, an event's writes are shared among `send_threads`
        self.send_threads = send_threads
        self._senders: ThreadPoolExecutor | None = None
        self.max_unsent = max_unsent
        self.keepalive = keepalive
        self.progress_interval = progress_interval
        self.closed = False
        self.log = log
        self.published: collections.Counter[str] = collections.Counter()  # events, by type
        self.sent_bytes = 0  # bytes handed to subscribers (events and keepalives)
        self.uploads = 0  # uploads in flight
        self.flights: list[Any] = []  # the uploads in flight, oldest first (upload_events.UploadEvents)
        self.interrupted: dict[tuple[str, str], dict[str, Any]] = {}  # append-mode recordings that broke off, by record
        self.received_bytes = 0  # bytes the uploads received
        # Ids start from the time in microseconds, so they keep increasing across restarts of the service, even
        # when the newest events the log kept were lost (a power cut), and past the log's newest when the clock
        # went back.
        first = time.time_ns() // 1000 if first_id is None else first_id
        if log is not None:
            first = log.last_id + 1 if log.assigns_ids else max(first, log.last_id + 1)
        self.last_id = first - 1
        self._listening = False
        self._replay: collections.deque[tuple[int, bytes, float]] = collections.deque(
            [] if log is None else log.recent(), maxlen=replay if log is None else log.max_events
        )
        self._timer: asyncio.TimerHandle | None = None
        # the events that the store writes to a shared log in the transaction of their change (see write_changes)
        self.written_with_change: frozenset[str] = frozenset()
        # what this process's events are told to besides the subscribers (the audio analysis): watch(type, data)
        self.watchers: list[Callable[[str, dict[str, Any]], None]] = []

    def write_changes(self, conn: Database, changes: list[tuple[str, dict[str, Any]]]) -> None:
        """Write the events (type, data) of records' changes to the shared log in the changes' transaction, on
        `conn` (the store calls it, in its writer thread, once a transaction: the log's lock is then held to its
        end); the hub's `publish` of each then only counts it."""
        assert self.log is not None and self.log.assigns_ids
        if not conn.writes_in_turn:  # (SQLite: waited for before the transaction began, see app.py)
            self.log.wait_written()  # the uploads' own events (upload-started, ...) before them
        created = time.time()
        self.log.write_in(conn, [(event_body(event_type, data), created) for event_type, data in changes])

    def publish(self, event_type: str, data: dict[str, Any]) -> int | None:
        """Send an event to every subscriber and keep it for replay; returns its id (with a shared log: None, the
        log gives the id and brings the event back to every process's subscribers)."""
        for watch in self.watchers:
            watch(event_type, data)
        if self.log is not None and self.log.assigns_ids:
            self._listen()
            self.published[event_type] += 1
            if event_type not in self.written_with_change:
                self.log.publish(event_body(event_type, data), time.time())
            return None
        self.last_id += 1
        wire = event_bytes(self.last_id, event_type, data)
        created = time.time()
        self._replay.append((self.last_id, wire, created))
        if self.log is not None:
            self.log.append(self.last_id, wire, created)
        self.published[event_type] += 1
        self._send(wire)
        return self.last_id

    def deliver(self, events: list[tuple[int, bytes, float]]) -> None:
        """Send every subscriber the events a shared log brought (of every process, in their order) that it has not
        sent yet, and keep them for replay."""
        for event_id, wire, created in events:
            if event_id > self.last_id:
                self.last_id = event_id
                self._replay.append((event_id, wire, created))
                self._send(wire, created, event_id)

    async def settled(self) -> None:
        """Wait until every event published until now has reached the subscribers (with a shared log, a little
        after `publish`)."""
        log = self.log
        while log is not None and log.assigns_ids and (log.written < log.queued or self.last_id < log.written_id):
            await asyncio.sleep(0.005)

    def _listen(self) -> None:
        """With a shared log: begin taking its events (on the event loop, at the first publish or subscribe)."""
        if not self._listening and self.log is not None and self.log.assigns_ids:
            self._listening = True
            self.log.start(self.deliver, asyncio.get_running_loop())

    def subscribe(
        self,
        send: Callable[[list[bytes]], asyncio.Future],
        last_id: int | None = None,
        on_drop: Callable[[], None] = lambda: None,
        write: Callable[[bytes], int] | None = None,
        frame: Callable[[bytes], bytes] | None = None,
    ) -> Subscriber:
        """A new subscriber that sends through `write` and `send` (see Subscriber), its queue holding the buffered
        events after `last_id` (none if it is None); it sends nothing until its `start()`.

        A `last_id` beyond the newest event comes from an earlier run of the service: every buffered event is new
        to it. `on_drop` is called if the hub gives up on the subscriber (too far behind, or still there at close).
        """
        shared = self.log is not None and self.log.assigns_ids
        # With a shared log, ids are the one stream's: a Last-Event-ID past this process's newest is an event it has
        # not delivered yet, which the client had from another process (nothing of it is sent again).
        after = last_id if shared and last_id is not None else -math.inf
        subscriber = Subscriber(send, on_drop, -math.inf if last_id is not None else time.time(), after, write, frame)
        self._listen()
        if self.closed:
            subscriber.close()
            return subscriber
        if last_id is not None:
            missed = last_id > self.last_id and not shared
            oldest = -math.inf if self.log is None else self.log.oldest()
            for event_id, wire, created in self._replay:
                if (missed or event_id > last_id) and created >= oldest:
                    subscriber.put(wire if frame is None else frame(wire))
        self.subscribers.add(subscriber)
        if self._timer is None:
            self._schedule_keepalive()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber (it left). Safe to call more than once."""
        self.subscribers.discard(subscriber)
        subscriber.close()

    def replay_ids(self) -> list[int]:
        """The ids of the events kept for replay, oldest first."""
        return [event_id for event_id, _, _ in self._replay]

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """End every stream: each subscriber is closed at once; those still there after `timeout` are dropped."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._senders is not None:
            self._senders.shutdown(wait=False)
            self._senders = None
        for subscriber in self.subscribers:
            subscriber.close()
        deadline = time.monotonic() + timeout
        while self.subscribers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for subscriber in list(self.subscribers):
            self._drop(subscriber)

    def _send(self, wire: bytes, created: float = math.inf, event_id: float = math.inf) -> None:
        """Send to every subscriber (those that came without a Last-Event-ID after the event was published skip
        it: a shared log delivers it a little later than it was published; so do those whose client had it).

        The fan-out's hot path (10,000 subscribers: 10,000 turns of this loop an event): the bytes are framed once
        per frame, and each subscriber that keeps up hands them to its client's socket at once; with many, the
        event loop's thread and `send_threads - 1` others each write to a share of them, the loop waiting for all
        (what a socket did not take whole then goes on as `put` does, on the loop)."""
        subscribers = tuple(self.subscribers)
        self.sent_bytes += len(wire) * len(subscribers)
        framed: dict[Callable[[bytes], bytes] | None, bytes] = {None: wire}
        max_unsent = self.max_unsent
        behind = []
        shared = self.send_threads > 1 and len(subscribers) >= self.split_at
        direct: list[tuple[Subscriber, bytes]] = []
        for subscriber in subscribers:
            if created < subscriber.since or event_id <= subscriber.after:
                continue
            data = framed.get(subscriber.frame)
            if data is None:
                data = framed[subscriber.frame] = subscriber.frame(wire)
            if shared and subscriber.direct:
                direct.append((subscriber, data))
                continue
            subscriber.put(data)
            if subscriber.unsent > max_unsent:
                behind.append(subscriber)
        for subscriber, data, taken in self._write_shared(direct):
            subscriber.wrote(data, taken)
            if subscriber.unsent > max_unsent:
                behind.append(subscriber)
        for subscriber in behind:
            log.warning("dropping an event-stream subscriber %d bytes behind", subscriber.unsent)
            self._drop(subscriber)

    def _write_shared(self, pairs: list[tuple[Subscriber, bytes]]) -> list[tuple[Subscriber, bytes, int]]:
        """`write_each` of the pairs, shared among the sending threads, this one among them; blocks until all are
        done (so that each subscriber's next bytes follow these)."""
        if not pairs:
            return []
        if self._senders is None:
            self._senders = ThreadPoolExecutor(self.send_threads - 1, thread_name_prefix="sse-send")
        share = -(-len(pairs) // self.send_threads)
        others = [self._senders.submit(write_each, pairs[i : i + share]) for i in range(share, len(pairs), share)]
        left = write_each(pairs[:share])
        for other in others:
            left += other.result()
        return left

    def _drop(self, subscriber: Subscriber) -> None:
        self.unsubscribe(subscriber)
        subscriber.on_drop()

    def _schedule_keepalive(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.keepalive, self._keep_alive)

    def _keep_alive(self) -> None:
        """Send the keepalive comment to every subscriber; the timer runs only while there are subscribers."""
        self._timer = None
        if self.subscribers and not self.closed:
            self._send(KEEPALIVE_LINE)
            self._schedule_keepalive()
