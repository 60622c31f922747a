"""Metrics: what `GET /metrics` shows, in the Prometheus text format, from one registry per application.

Requests and the bytes of their answers are counted as each request ends (from the access log's function), in plain
dicts: a request pays one or two dict increments, and the counters are made of the dicts only when the metrics are
scraped (prometheus-client's own Counter takes a lock and builds its label key at every increment). The rest is read
when the metrics are scraped: the hub's counts (events, subscribers, uploads in flight, bytes received), the disk
holding the data directory, and the records stored (one query of the index, on a read-only connection).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tornado_records.storage.sqldb import Database
from tornado_records.events import EventHub

PREFIX = "tornado_records_"
METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"})  # others are counted as "other"


class Metrics:
    """The metrics of one application: `observe` each finished request, `exposition()` for a scrape."""

    def __init__(self, hub: EventHub, data_dir: Path, index: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestCollector()
        self.registry.register(self.requests)
        self.state = StateCollector(hub, data_dir, index)
        self.registry.register(self.state)
        ProcessCollector(registry=self.registry)

    def observe(self, route: str, method: str, status: int, sent: int) -> None:
        """Count a finished request (on the event loop: the counts are not locked)."""
        self.requests.answered[route, method if method in METHODS else "other", status] += 1
        if sent:
            self.requests.sent[route] += sent

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format. Blocks (it queries the index): run it in a thread."""
        return generate_latest(self.registry)

    def close(self) -> None:
        self.state.close()


class RequestCollector(Collector):
    """The requests answered and the bytes of their answers, counted in dicts as each request ends."""

    def __init__(self) -> None:
        self.answered: collections.Counter[tuple[str, str, int]] = collections.Counter()  # (route, method, status)
        self.sent: collections.Counter[str] = collections.Counter()  # by route

    def collect(self) -> Iterator[Metric]:
        answered, sent = dict.copy(self.answered), dict.copy(self.sent)  # copied at once: the event loop adds
        requests = CounterMetricFamily(
            PREFIX + "http_requests", "HTTP requests answered, by route, method and status",
            labels=["route", "method", "status"],
        )  # fmt: skip
        for (route, method, status), count in sorted(answered.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        sent_bytes = CounterMetricFamily(
            PREFIX + "http_sent_bytes",
            "Body bytes of the answers sent, by route (counted when each request ends; /sse events are counted in "
            "tornado_records_sse_sent_bytes_total)",
            labels=["route"],
        )
        for route, count in sorted(sent.items()):
            sent_bytes.add_metric([route], count)
        yield sent_bytes


class StateCollector(Collector):
    """The metrics read at scrape time: the hub's counts, the disk, the records stored."""

    def __init__(self, hub: EventHub, data_dir: Path, index: Database) -> None:
        self.hub = hub
        self.data_dir = data_dir
        self._index = index  # a read-only connection of its own

    def close(self) -> None:
        self._index.close()

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        yield GaugeMetricFamily(PREFIX + "uploads_in_flight", "Uploads whose body is arriving", hub.uploads)
        yield CounterMetricFamily(
            PREFIX + "upload_received_bytes", "Bytes of upload bodies received (stored or not)", hub.received_bytes
        )
        yield GaugeMetricFamily(PREFIX + "sse_subscribers", "Open /sse event streams", len(hub.subscribers))
        yield CounterMetricFamily(
            PREFIX + "sse_sent_bytes", "Bytes of events and keepalives handed to /sse subscribers", hub.sent_bytes
        )
        published = CounterMetricFamily(PREFIX + "events_published", "Events published, by type", labels=["type"])
        for event_type, count in sorted(dict.copy(hub.published).items()):  # copied at once: the loop adds
            published.add_metric([event_type], count)
        yield published
        disk = os.statvfs(self.data_dir)
        yield GaugeMetricFamily(
            PREFIX + "disk_free_bytes", "Bytes free for the service on the data directory's disk",
            disk.f_bavail * disk.f_frsize,
        )  # fmt: skip
        yield GaugeMetricFamily(
            PREFIX + "disk_used_bytes", "Bytes used on the data directory's disk (by everything on it)",
            (disk.f_blocks - disk.f_bfree) * disk.f_frsize,
        )  # fmt: skip
        yield GaugeMetricFamily(
            PREFIX + "disk_size_bytes", "Size of the data directory's disk", disk.f_blocks * disk.f_frsize
        )
        count, size = self._index.execute("SELECT count(*), coalesce(sum(size), 0) FROM records").fetchone()
        yield GaugeMetricFamily(PREFIX + "records", "Records stored", count)
        yield GaugeMetricFamily(PREFIX + "records_bytes", "Bytes of the records stored (their sizes summed)", size)
