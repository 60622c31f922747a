"""Two hubs on one shared event log (two processes on one PostgreSQL index), in one process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from support.hub import Client
from support.records import EVENT
from tornado_records.events import EventHub


@pytest.mark.gen_test(timeout=30)
async def test_a_last_event_id_from_another_process_is_not_sent_again(postgres_url: str) -> None:
    """Two hubs on one shared log (two processes on one PostgreSQL index): a client that had events from one and
    reconnects to the other, which has not delivered them yet, gets only the events after its Last-Event-ID."""
    from tornado_records.storage import sqldb
    from tornado_records.eventlog import SharedEventLog

    def shared_hub() -> EventHub:
        connect = lambda: sqldb.connect(postgres_url, Path("/nonexistent"))  # noqa: E731
        return EventHub(keepalive=60, log=SharedEventLog(connect(), connect()))

    behind, ahead = shared_hub(), shared_hub()  # `behind` takes no events until it has a subscriber
    try:
        first = Client(ahead)
        for n in range(3):
            ahead.publish("record-deleted", {"event": EVENT, "start": f"2024-01-01T00:00:0{n}"})
        await ahead.settled()
        assert len(first.ids()) == 3
        moved = Client(behind, last_id=first.ids()[1])  # it had two from `ahead`
        ahead.publish("record-deleted", {"event": EVENT, "start": "2024-01-01T00:00:09"})
        await ahead.settled()
        while len(moved.ids()) < 2 or behind.last_id < ahead.last_id:
            await asyncio.sleep(0.01)
        assert moved.ids() == first.ids()[2:] == [first.ids()[2], ahead.last_id]
    finally:
        await behind.close(timeout=1)
        await ahead.close(timeout=1)
        behind.log.close()
        ahead.log.close()
