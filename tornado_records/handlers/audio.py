"""What the service knows of a record's audio, beyond the listing: its waveform (`GET /records/{event}/{start}/peaks`)
in the audiowaveform JSON format, version 2, which peaks.js and waveform-data read."""

from __future__ import annotations

import array
import json

from tornado_records.audio import analyses
from tornado_records.handlers.base import ApiError, BaseHandler
from tornado_records.handlers.records import parse_event, parse_start, validators_of
from tornado_records.http.caching import REVALIDATE
from tornado_records.http.semantics import precondition_status
from tornado_records.storage.model import PreconditionFailed
from tornado_records.storage.store import RecordStore

_NOT_YET = {
    analyses.PENDING: "its audio is not analysed yet: ask again once the listing says analysis \"done\"",
    "unsupported": "its content is not audio that the service can decode",
    "failed": "its analysis failed (the service's log says why; `tornado-records analyze` tries again)",
}


class PeaksHandler(BaseHandler):
    """`GET /records/{event}/{start}/peaks`: min/max pairs of 8-bit samples, one pair a pixel, for the record's
    current version; with its ETag (304 on revalidation), 404 while it has no waveform."""

    def get(self, event: str, start: str) -> None:
        store: RecordStore = self.settings["store"]
        event_id, start_at = parse_event(event), parse_start(start)
        record = store.get(event_id, start_at)
        self.set_header("ETag", record.etag)
        self.set_header("Last-Modified", record.modified_at)
        self.set_header("Cache-Control", REVALIDATE)  # a replaced record has another waveform: revalidate
        status = precondition_status(self.request.method, self.request.headers, validators_of(record))
        if status == 412:
            raise PreconditionFailed(event_id, start_at)
        found = analyses.peaks(store.rconn, record)
        state = analyses.PENDING if found is None else found[0]
        if state != "done":
            self.clear_header("ETag")
            self.clear_header("Last-Modified")
            headers = {"Retry-After": "10"} if state == analyses.PENDING else None
            raise ApiError(404, f"The record of event {event_id} starting at {start_at.isoformat()} has no waveform: "
                           + _NOT_YET[state], headers)  # fmt: skip
        self.set_header("Content-Type", "application/json")
        if status == 304 or self.request.method == "HEAD":
            self.set_status(status or 200)
            return
        _, samples_per_pixel, sample_rate, pairs = found
        data = array.array("b", pairs).tolist()
        self.write(json.dumps({
            "version": 2, "channels": 1, "sample_rate": sample_rate, "samples_per_pixel": samples_per_pixel,
            "bits": 8, "length": len(data) // 2, "data": data,
        }, separators=(",", ":")))  # fmt: skip

    head = get
