"""Webhooks: every event of the log POSTed to each `--webhook` URL as JSON (the data line /sse sends), signed as the
Standard Webhooks specification says (webhook-id, webhook-timestamp, webhook-signature), in order, until delivered.

Each URL is a reader of the event log (eventlog.py: its position in the index is the newest event it is done with).
One task per URL reads the events after its position, POSTs each of a wanted type, and moves the position on only
after a 2xx answer; the next event waits for it, so a URL gets its events in order, each once, and a restart (or a
process that dies) re-sends at most the event that was in flight, with the same webhook-id: the event's id, as /sse
gives it. A failed attempt (refused, timed out, an answer other than 2xx) is tried again after SCHEDULE (1 s, 2 s,
5 s, 10 s, 30 s, 1 min, 2 min, then every 5 min), for as long as the log keeps the event: 24 h after it was published
(the log keeps what a reader has not read until then, and up to 100,000 events); then it is given up, said in the log
and counted.

With several processes on one PostgreSQL index, one process at a time delivers to a URL: the one that holds the URL's
name (Database.hold, an advisory lock of its connection); the others look every LOOK seconds, and one takes over when
the holder ends. Nothing of it waits on the event loop: the index's reads and writes run in a thread of the module's
own on a connection of its own, and the requests go through an HTTP client of its own, one in flight per URL, each
bounded by TIMEOUT; so a URL that hangs or is down holds back neither the other URLs nor the service.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import datetime
import json
import logging
import math
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import standardwebhooks
import tornado.httpclient
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tornado_records import __version__, eventlog
from tornado_records.eventlog import EventLog
from tornado_records.metrics import PREFIX
from tornado_records.redact import MASK, mask
from tornado_records.storage import sqldb

log = logging.getLogger("tornado_records.webhooks")

SCHEDULE = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # seconds before each new attempt; the last repeats
TIMEOUT = 10.0  # seconds to connect, and for the whole request
LOOK = 5.0  # seconds between looks for new events without being told, and at a URL another process holds
TOUCH = 3600.0  # seconds between the moments a URL's reader says it is there while it has nothing to deliver
BATCH = 100  # events read from the log at once
REASONS = ("refused", "timeout", "status")  # why an attempt failed: no connection, no answer in time, not 2xx

T = TypeVar("T")


class HoldLost(Exception):
    """The connection to the index was lost, and the names it held with it: another process may deliver now."""


class Target:
    """One URL: what the log and the metrics show of it, and its counts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = shown(url)
        self.reader = "webhook " + url  # its name among the log's readers, and the name its deliverer holds
        self.delivered = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.expired = 0
        self.wake = asyncio.Event()


def shown(url: str) -> str:
    """A URL as the log and /metrics show it: its password and query masked (they may be credentials)."""
    parts = urllib.parse.urlsplit(mask(url))
    return urllib.parse.urlunsplit(parts._replace(query=MASK if parts.query else "", fragment=""))


class Webhooks:
    """The deliveries to every URL: `start()` and `await stop()` on the event loop, `close()` at the end."""

    def __init__(
        self,
        urls: tuple[str, ...],
        secret: bytes,
        types: frozenset[str] | None,
        index: str,
        data_dir: Path,
        events: EventLog,
        shared: bool = False,
    ) -> None:
        self.targets = [Target(url) for url in urls]
        self.types = types
        self.signer = standardwebhooks.Webhook(secret.decode())
        self.collector = WebhookCollector(self)
        self._db = sqldb.connect(index, data_dir, shared=shared)  # used in the thread below only
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records-webhooks")
        self._generation = 0  # one more each time the connection to the index is made again (its names are lost)
        if isinstance(self._db, sqldb.PostgresDatabase):
            self._db.on_reconnect.append(self._lost)
        for target in self.targets:  # a URL new to the index gets the events from now on
            eventlog.add_reader(self._db, target.reader)
        self._events = events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._client: tornado.httpclient.AsyncHTTPClient | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=len(self.targets))
        self._events.on_written.append(self._written)
        self._tasks = [asyncio.ensure_future(self._serve(target)) for target in self.targets]

    async def stop(self) -> None:
        """End the deliveries: a request in flight is abandoned (its event goes again at the next start)."""
        if self._written in self._events.on_written:
            self._events.on_written.remove(self._written)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            self._client.close()

    def close(self) -> None:
        """Let go of the index (and of the URLs this process held)."""
        self._thread.submit(self._db.close).result()
        self._thread.shutdown(wait=True)

    def _written(self) -> None:
        """In the log's thread: events are in the table."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for target in self.targets:
            target.wake.set()

    def _lost(self) -> None:
        """In this module's thread: the connection to the index was made again."""
        self._generation += 1

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    async def _serve(self, target: Target) -> None:
        """Deliver to one URL whenever this process holds it, as long as the service runs."""
        while True:
            try:
                generation = self._generation
                if await self._in_thread(self._db.hold, target.reader):
                    await self._deliver_all(target, generation)
                else:
                    await asyncio.sleep(LOOK)  # another process delivers to it
            except asyncio.CancelledError:
                raise
            except HoldLost:
                continue
            except Exception as exc:  # noqa: BLE001 (the index away for a while: look again)
                log.warning("webhook %s: %s; trying again in %g s", target.label, exc, LOOK)
                await asyncio.sleep(LOOK)

    async def _deliver_all(self, target: Target, generation: int) -> None:
        """Deliver the events after the URL's position, one after the other, and wait for more."""
        position = kept = await self._in_thread(eventlog.reader_position, self._db, target.reader)
        said = time.monotonic()
        while True:
            target.wake.clear()
            events = await self._in_thread(eventlog.events_after, self._db, position, BATCH)
            if not events:
                if kept != position or time.monotonic() - said > TOUCH:  # past unwanted types; or: "still here"
                    await self._in_thread(eventlog.move_reader, self._db, target.reader, position)
                    kept, said = position, time.monotonic()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(target.wake.wait(), LOOK)
                continue
            for event_id, wire, created in events:
                body = eventlog.body_of(wire)
                if self.types is None or json.loads(body)["type"] in self.types:
                    await self._deliver(target, event_id, body, created, generation)
                    await self._in_thread(eventlog.move_reader, self._db, target.reader, event_id)
                    kept, said = event_id, time.monotonic()
                position = event_id

    async def _deliver(self, target: Target, event_id: int, body: bytes, created: float, generation: int) -> None:
        """POST one event until the URL answers 2xx, or until the log lets the event go (then it is given up)."""
        attempt = 0
        while True:
            if self._generation != generation:
                raise HoldLost()
            failure = await self._post(target, event_id, body)
            if failure is None:
                target.delivered += 1
                if attempt:
                    log.info("webhook %s: event %d delivered after %d attempt(s)", target.label, event_id, attempt + 1)
                return
            reason, detail = failure
            target.failures[reason] += 1
            delay = SCHEDULE[min(attempt, len(SCHEDULE) - 1)]
            attempt += 1
            log.log(
                logging.WARNING if attempt == 1 else logging.INFO,
                "webhook %s: event %d not delivered (%s); attempt %d again in %g s",
                target.label, event_id, detail, attempt + 1, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            if not await self._in_thread(eventlog.is_kept, self._db, event_id):
                target.expired += 1
                log.warning("webhook %s: event %d given up after %d attempt(s) over %.0f s: the event log no longer "
                            "keeps it", target.label, event_id, attempt, time.time() - created)  # fmt: skip
                return

    async def _post(self, target: Target, event_id: int, body: bytes) -> tuple[str, str] | None:
        """One attempt; None if the URL answered 2xx, else why not (a reason of REASONS, and what happened)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        message = str(event_id)
        request = tornado.httpclient.HTTPRequest(
            target.url,
            "POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"tornado-records/{__version__}",
                "webhook-id": message,
                "webhook-timestamp": str(math.floor(now.timestamp())),
                "webhook-signature": self.signer.sign(message, now, body.decode()),
            },
            body=body,
            connect_timeout=TIMEOUT,
            request_timeout=TIMEOUT,
            follow_redirects=False,
            decompress_response=False,
            streaming_callback=_discard,  # the answer's body is not read into memory
        )
        assert self._client is not None
        try:
            response = await self._client.fetch(request, raise_error=False)
        except tornado.httpclient.HTTPClientError as exc:
            return ("timeout" if exc.code == 599 and "timeout" in str(exc).lower() else "refused"), str(exc)
        except Exception as exc:  # noqa: BLE001 (refused, unreachable, a TLS failure, a name that does not resolve)
            return "refused", f"{type(exc).__name__}: {exc}"
        if 200 <= response.code < 300:
            return None
        return "status", f"answered {response.code}"

    def oldest_undelivered(self) -> dict[str, float]:
        """By URL, when the oldest event not delivered to it was published (Unix time, 0 for none). Blocks."""
        def look() -> dict[str, float]:
            return {t.url: eventlog.oldest_unread(self._db, t.reader) or 0.0 for t in self.targets}

        return self._thread.submit(look).result(timeout=TIMEOUT)


def _discard(chunk: bytes) -> None:
    pass


class WebhookCollector(Collector):
    """The webhooks' metrics, read at scrape time: deliveries, failures and give-ups by URL (this process's), and
    the age of the oldest event not delivered yet (the index's, whichever process delivers)."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    def collect(self) -> Iterator[Metric]:
        targets = self.webhooks.targets
        delivered = CounterMetricFamily(
            PREFIX + "webhook_deliveries", "Events delivered to a webhook URL (answered 2xx), by URL", labels=["url"]
        )
        failures = CounterMetricFamily(
            PREFIX + "webhook_failures",
            "Webhook attempts that failed, by URL and reason (refused: no connection; timeout: no answer in time; "
            "status: an answer other than 2xx)",
            labels=["url", "reason"],
        )
        expired = CounterMetricFamily(
            PREFIX + "webhook_given_up", "Events never delivered to a webhook URL: the event log let them go (24 h)",
            labels=["url"],
        )  # fmt: skip
        for target in targets:
            delivered.add_metric([target.label], target.delivered)
            for reason in REASONS:
                failures.add_metric([target.label, reason], target.failures[reason])
            expired.add_metric([target.label], target.expired)
        yield from (delivered, failures, expired)
        age = GaugeMetricFamily(
            PREFIX + "webhook_oldest_undelivered_age_seconds",
            "Seconds since the oldest event not delivered yet to a webhook URL was published (0: none waits), by URL",
            labels=["url"],
        )
        now = time.time()
        try:
            oldest = self.webhooks.oldest_undelivered()
        except Exception as exc:  # noqa: BLE001 (the index away, or busy past TIMEOUT: the other metrics still go)
            log.warning("the webhooks' oldest undelivered events cannot be read: %s", exc)
            return
        for target in targets:
            published = oldest.get(target.url, 0.0)
            age.add_metric([target.label], max(0.0, now - published) if published else 0.0)
        yield age
