"""Listening while it records: `GET /records/{event}/{start}/live` sends a recording in progress from its first byte
and follows the upload until it ends; and `GET /uploads`, the uploads in flight.

A plain or resumable upload is followed in its own file (the bytes arrive there first). An append-mode recording is
followed in the record, and past the record's end in the file of the append request first in line (appends.py):
the bytes it received and that have not joined the record yet, which are the ones the record will have next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import BinaryIO

from tornado.iostream import StreamClosedError

from tornado_records.events import EventHub
from tornado_records.upload_events import UploadEvents, flight_of, in_flight
from tornado_records.handlers.base import BaseHandler
from tornado_records.handlers.records import parse_event, parse_start
from tornado_records.http.caching import NEVER
from tornado_records.storage.model import RecordNotFound, piece_end
from tornado_records.storage.store import RecordStore

CHUNK = 1 << 16
WAIT = 1.0  # seconds between looks at an upload that sent nothing new (a change wakes the follower at once)


class UploadsHandler(BaseHandler):
    """`GET /uploads`: the uploads in flight, and the append-mode recordings that broke off."""

    def get(self) -> None:
        self.set_header("Cache-Control", NEVER)
        self.write({"uploads": in_flight(self.settings["hub"])})

    head = get


class LiveHandler(BaseHandler):
    """`GET /records/{event}/{start}/live`: the recording from its beginning, following its upload in flight until
    the upload ends (then the answer ends); with none in flight, a redirect to the stored record."""

    async def get(self, event: str, start: str) -> None:
        store: RecordStore = self.settings["store"]
        hub: EventHub = self.settings["hub"]
        event_id, start_at = parse_event(event), parse_start(start)
        flight = flight_of(hub, str(event_id), start_at.isoformat())
        self.set_header("Cache-Control", NEVER)  # the stream, or the redirect while nothing is in flight: this moment's
        if flight is None:
            store.get(event_id, start_at)  # RecordNotFound: 404
            self.clear_header("Content-Type")
            self.redirect(f"/records/{event_id}/{start_at.isoformat()}", status=307)
            return
        self.take_stream_place()
        self.set_served_type(flight.content_type)
        self.set_header("X-Accel-Buffering", "no")  # nginx passes each part on as it comes
        with contextlib.suppress(StreamClosedError):
            if flight.append:
                await self._follow_record(store, flight)
            elif flight.source is not None:
                await self._follow_file(flight)

    async def _follow_file(self, flight: UploadEvents) -> None:
        """Send the upload's file as it grows, until the upload ends (or, for a resumable upload, until no request
        brings it bytes)."""
        try:
            file = open(flight.source, "rb")  # noqa: SIM115 (kept open while the upload's file is renamed or removed)
        except FileNotFoundError:
            return  # it ended meanwhile
        with file:
            sent = 0
            while True:
                ended = flight.ended or flight.paused
                sent += await self._send_from(file, sent)
                if ended:
                    return
                await self._wait(flight)

    async def _follow_record(self, store: RecordStore, flight: UploadEvents) -> None:
        """Send the record, then what the append request first in line received past the record's end, as they
        grow; until no append request to the record is in flight."""
        event, start = flight.key["event"], flight.key["start"]
        sent = 0
        while True:
            ended = flight_of(self.settings["hub"], event, start) is None
            sent = await self._send_record(store, event, start, sent)
            if sent is None or ended:
                return
            await self._wait(flight)
            flight = flight_of(self.settings["hub"], event, start) or flight

    async def _send_record(self, store: RecordStore, event: str, start: str, sent: int) -> int | None:
        """Send the record's content past `sent` bytes, then the unjoined bytes of the piece first in line; the
        new count of bytes sent (None: the record was replaced by a shorter one, so the follow ends)."""
        try:
            blob = store.open(parse_event(event), parse_start(start))
        except RecordNotFound:
            blob = None
        size = 0 if blob is None else blob.record.size
        # What the first piece in line received past the record's end: taken now, with the version just opened,
        # so that the two agree (the event loop writes the pieces; a join changes the index only).
        piece = self.settings["appends"].first_in_line(event, start)
        if piece is not None:
            runs = [] if blob is None else blob.record.segments
            joined = (piece_end(runs[-1], piece.name) if runs else None) or 0
            unjoined = (piece.name, joined, piece.size)
        if blob is not None:
            try:
                if size < sent and piece is None:
                    return None
                blob.file.seek(sent)
                while sent < size and (data := await blob.file.aread(min(CHUNK, size - sent))):
                    sent += len(data)
                    await self._write(data)
            finally:
                blob.close()
        if piece is not None:
            name, joined, upto = unjoined
            at = joined + (sent - size)  # the position in the piece's file that follows what was sent
            if at < joined:
                return sent
            with open(store.blobs / name, "rb") as file:
                while at < upto and (data := os.pread(file.fileno(), min(CHUNK, upto - at), at)):
                    at += len(data)
                    sent += len(data)
                    await self._write(data)
        return sent

    async def _send_from(self, file: BinaryIO, at: int) -> int:
        """Send the file from `at` to its current end; how many bytes were sent."""
        sent = 0
        while data := os.pread(file.fileno(), CHUNK, at + sent):
            sent += len(data)
            await self._write(data)
        return sent

    async def _write(self, data: bytes) -> None:
        self.write(data)
        await self.flush()

    async def _wait(self, flight: UploadEvents) -> None:
        """Until the upload changes (new bytes, a join, its end), or WAIT seconds."""
        flight.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(flight.changed.wait(), WAIT)
