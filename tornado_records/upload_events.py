"""The events of an upload in flight, from its upload-started to its end (record-created/updated, upload-aborted; in
append mode upload-completed or upload-interrupted), as the hub publishes them and `GET /uploads` lists them; and a
record's deletion."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tornado_records.events import EventHub, utc_now

INTERRUPTED_KEPT = 24 * 3600.0  # seconds an interrupted append-mode recording stays listed among the uploads


def in_flight(hub: EventHub) -> list[dict[str, Any]]:
    """The uploads in flight and the append-mode recordings that broke off (and were not taken up again, replaced
    or deleted since, for up to INTERRUPTED_KEPT seconds), as `GET /uploads` shows them."""
    now = time.monotonic()
    for key, entry in list(hub.interrupted.items()):
        if now - entry["_at"] > INTERRUPTED_KEPT:
            del hub.interrupted[key]
    kept = [{k: v for k, v in entry.items() if k != "_at"} for entry in hub.interrupted.values()]
    return [flight.to_json() for flight in hub.flights] + kept


def flight_of(hub: EventHub, event: str, start: str) -> UploadEvents | None:
    """The newest upload in flight to the record (event, start), or None."""
    return next((f for f in reversed(hub.flights) if f.key == {"event": event, "start": start}), None)


class UploadEvents:
    """The events of one upload in flight: upload-started at once, then upload-progress at most every
    `hub.progress_interval` seconds, and in the end either record-created/updated or upload-aborted (once).

    In append mode: upload-started says `"append": true`; upload-resumed if the record's recorder had broken off
    before; record-created/updated each time what arrived joined the record; and in the end upload-completed or,
    if the body stopped before its end, upload-interrupted (what it received is kept either way).

    A resumable upload (tus, IETF) has one over all the requests that bring its bytes: upload-started says
    `"resumable": true`, upload-progress gives its offset, and it ends with record-created/updated or upload-aborted
    (cancelled, expired, or refused at completion); a break in between is no end."""

    def __init__(
        self,
        hub: EventHub,
        event: str,
        start: str,
        content_type: str,
        append: bool = False,
        resumable: bool = False,
        announce: bool = True,
    ) -> None:
        self.hub = hub
        self.key = {"event": event, "start": start}
        self.content_type = content_type
        self.size = 0
        self.record_size: int | None = None  # in append mode: the record's size at the last join
        self.ended = False
        self.append = append
        self.mode = "append" if append else "resumable" if resumable else "put"
        self.paused = resumable  # a resumable upload between the requests that bring its bytes
        self.started = utc_now()
        self.source: Path | None = None  # the file that receives the bytes (not in append mode: see appends.py)
        self.changed = asyncio.Event()  # set at each change (bytes in the file, a join, the end), for its listeners
        self._last_report = time.monotonic()
        hub.uploads += 1
        hub.flights.append(self)
        hub.interrupted.pop((event, start), None)
        if announce:  # not for a resumable upload taken up again after a restart
            flags = {"append": True} if append else {"resumable": True} if resumable else {}
            hub.publish("upload-started", {**self.key, "type": content_type, **flags})

    def to_json(self) -> dict[str, Any]:
        """The upload as `GET /uploads` shows it."""
        state = "paused" if self.paused else "receiving"
        return {**self.key, "type": self.content_type, "mode": self.mode, "state": state, "bytes": self.size,
                "size": self.record_size, "started": self.started}  # fmt: skip

    def pause(self, paused: bool) -> None:
        """A resumable upload's bytes stopped coming (a request ended) or come again (a request began)."""
        self.paused = paused
        self.changed.set()

    def progress(self, size: int) -> None:
        """The upload has received `size` bytes so far."""
        self.hub.received_bytes += size - self.size
        self.size = size
        now = time.monotonic()
        if now - self._last_report >= self.hub.progress_interval and not self.ended:
            self._last_report = now
            self.hub.publish("upload-progress", {**self.key, "bytes": size})

    def committed(self, record: dict[str, Any], created: bool) -> None:
        """The upload became the record's current version (`record` as the API shows it)."""
        self._end()
        self.hub.publish("record-created" if created else "record-updated", {"record": record})

    def aborted(self, reason: str) -> None:
        """The upload stopped and left nothing (`reason`: client-gone, too-large, disk-full, ...); once at most.
        Never in append mode, which keeps what arrived."""
        if not self.ended and not self.append:
            self._end()
            self.hub.publish("upload-aborted", {**self.key, "bytes": self.size, "reason": reason})

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.hub.uploads -= 1
            self.hub.flights.remove(self)
            self.changed.set()

    def resumed(self) -> None:
        """An append request's first byte arrived after the record's previous one broke off (or while it seems
        still open: a dead connection not noticed yet)."""
        self.hub.publish("upload-resumed", self.key)

    def joined(self, record: dict[str, Any], created: bool) -> None:
        """What an append request received so far joined the record: `record` is the new version."""
        self.record_size = record["size"]
        self.changed.set()
        self.hub.publish("record-created" if created else "record-updated", {"record": record})

    def append_ended(self, received: int, reason: str | None, size: int | None) -> None:
        """An append request ended, all it received (`received` bytes) being in the record, now of `size` bytes
        (None: there is no record); `reason` None if its body arrived to its end, else why it stopped."""
        self._end()
        data = {**self.key, "bytes": received, "size": size}
        if reason is None:
            self.hub.publish("upload-completed", data)
        else:
            self.hub.publish("upload-interrupted", {**data, "reason": reason})
            if size is not None and flight_of(self.hub, **self.key) is None:
                self.hub.interrupted[tuple(self.key.values())] = {
                    **self.to_json(), **data, "state": "interrupted", "reason": reason, "ended": utc_now(),
                    "_at": time.monotonic(),
                }  # fmt: skip


def publish_deleted(hub: EventHub, event: str, start: str) -> None:
    """Announce that the record (event, start) was deleted."""
    hub.interrupted.pop((event, start), None)
    hub.publish("record-deleted", {"record": {"event": event, "start": start}})
