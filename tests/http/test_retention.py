"""`--retention`: records whose start is older are deleted on a schedule, each with its record-deleted event, and one
log line per sweep; with a clock the test controls (in-process), and in a real process with the real clock."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import pytest
import tornado.web

from support.records import EVENT, record_url
from support.sse import listen
from support.waiting import eventually
from tornado_records import retention as retention_module
from tornado_records.storage import sqldb
from tornado_records.retention import Retention

OTHER = "5d8a3c0e-1b2f-4e6a-9c7d-0e1f2a3b4c5d"
DAY = datetime.timedelta(days=1)


class Clock:
    """The sweep's notion of now, set by the test."""

    def __init__(self, now: str) -> None:
        self.now = datetime.datetime.fromisoformat(now)

    def __call__(self) -> datetime.datetime:
        return self.now


def retention_of(app: tornado.web.Application, clock: Clock, days: int, interval: float = 0.05) -> Retention:
    """Sweeps of the app's data directory as `--retention {days}d` makes them, on the test's clock."""
    settings = app.settings
    config = settings["config"]
    index = sqldb.connect(config.index.url, config.data_dir, read_only=True)
    return Retention(
        settings["store"], settings["hub"], index, datetime.timedelta(days=days), clock=clock, interval=interval
    )


async def starts(fetch: Any, event: str = EVENT) -> list[str]:
    response = await fetch(f"/records/{event}?limit=1000")
    return [record["start"] for record in json.loads(response.body)["records"]]


def sweep_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tornado_records.retention"]


@pytest.mark.gen_test(timeout=30)
async def test_old_records_are_deleted_as_the_clock_advances_each_announced_and_logged(
    app: tornado.web.Application, fetch: Any, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tornado_records.retention")
    for event, start in [
        (EVENT, "2024-01-01T00:00:00"),
        (OTHER, "2024-01-05T23:59:59.999999"),
        (EVENT, "2024-01-06T00:00:00"),  # exactly 30 days before the first now: not older, kept
        (EVENT, "2024-01-10T00:00:00"),
        (EVENT, "2024-02-01T00:00:00"),
    ]:
        assert (await fetch(record_url(event, start), method="PUT", body=b"audio")).code == 204
    listener = await listen(port)
    clock = Clock("2024-02-05T00:00:00")
    sweeps = retention_of(app, clock, days=30)
    sweeps.start()
    try:
        first = [(await listener.event_of("record-deleted"))[1]["data"]["record"] for _ in range(2)]
        assert first == [
            {"event": EVENT, "start": "2024-01-01T00:00:00"},
            {"event": OTHER, "start": "2024-01-05T23:59:59.999999"},
        ]
        assert await starts(fetch) == ["2024-01-06T00:00:00", "2024-01-10T00:00:00", "2024-02-01T00:00:00"]
        assert await starts(fetch, OTHER) == []
        assert (await fetch(record_url(EVENT, "2024-01-01T00:00:00"))).code == 404
        # The schedule goes on: the next sweeps find nothing more (and say so), until the clock moves.
        assert await eventually(lambda: any(" deleted 0 record(s)" in line for line in sweep_lines(caplog)))
        clock.now = datetime.datetime(2024, 2, 15)  # the next sweeps see a later now
        second = (await listener.event_of("record-deleted"))[1]["data"]["record"]
        assert second["start"] == "2024-01-06T00:00:00"
        second = (await listener.event_of("record-deleted"))[1]["data"]["record"]
        assert second["start"] == "2024-01-10T00:00:00"
        assert await starts(fetch) == ["2024-02-01T00:00:00"]
    finally:
        await sweeps.stop()
        sweeps.close()
    listener.close()
    lines = sweep_lines(caplog)
    assert lines[0].startswith("retention: deleted 2 record(s) that started before 2024-01-06T00:00:00 (older than 30d)")
    assert any(line.startswith("retention: deleted 2 record(s) that started before 2024-01-16T00:00:00") for line in lines)
    assert all(line.endswith(" ms") for line in lines)
    assert {line.split()[2] for line in lines} <= {"0", "2"}  # one line per sweep, empty ones too


@pytest.mark.gen_test(timeout=30)
async def test_a_sweep_deletes_past_one_batch(
    app: tornado.web.Application, fetch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "BATCH", 2)  # records found per query: five records take three
    for day in range(1, 6):
        assert (await fetch(record_url(start=f"2024-01-0{day}T00:00:00"), method="PUT", body=b"a")).code == 204
    sweeps = retention_of(app, Clock("2024-03-01T00:00:00"), days=30)
    try:
        assert await sweeps.sweep() == 5
        assert await sweeps.sweep() == 0
    finally:
        sweeps.close()
    assert await starts(fetch) == []


