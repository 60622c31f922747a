"""Replay that outlives the process: the event log in records.sqlite3 behind the hub, its bounds (count and age),
and Last-Event-ID across real restarts of `tornado-records` (SIGTERM and kill -9), in order and without duplicates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from support.hub import Client
from tornado_records.eventlog import EventLog
from tornado_records.events import EventHub


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return tmp_path / "records.sqlite3"


def restarted(index: Path, **kwargs: Any) -> EventHub:
    """A hub as a new process makes it: fed by a new log on the same database."""
    return EventHub(log=EventLog(index, **kwargs))


@pytest.mark.gen_test
async def test_a_new_hub_replays_what_the_last_one_published_and_continues_its_ids(index: Path) -> None:
    hub = EventHub(first_id=1, log=EventLog(index))
    for n in range(6):
        hub.publish("test", {"n": n})
    hub.log.close()
    # The clock of the new process is behind (first_id=1): ids still continue after the last one kept.
    again = EventHub(first_id=1, log=EventLog(index))
    resumed = Client(again, last_id=3)
    again.publish("test", {"n": 6})
    assert resumed.ids() == [4, 5, 6, 7]
    assert [body["data"]["n"] for _, body in resumed.events()] == [3, 4, 5, 6]
    again.log.close()


@pytest.mark.gen_test
async def test_the_log_keeps_the_newest_max_events(index: Path) -> None:
    hub = EventHub(first_id=1, log=EventLog(index, max_events=5))
    for _ in range(12):
        hub.publish("test", {})
    assert hub.replay_ids() == [8, 9, 10, 11, 12]
    hub.log.close()
    again = restarted(index, max_events=5)
    assert again.replay_ids() == [8, 9, 10, 11, 12]
    assert Client(again, last_id=2).ids() == [8, 9, 10, 11, 12]  # older than the log: what is left
    again.log.close()
    # A larger bound at the next start does not bring back what was trimmed.
    assert restarted(index, max_events=100).replay_ids() == [8, 9, 10, 11, 12]


@pytest.mark.gen_test
async def test_events_older_than_max_age_are_not_replayed_before_or_after_a_restart(index: Path) -> None:
    # The new events must be replayed within max_age of their publication, the old ones after it: a few seconds, so
    # that a slow machine's restart stays within it.
    hub = EventHub(first_id=1, log=EventLog(index, max_age=2))
    for _ in range(3):
        hub.publish("old", {})
    time.sleep(2.1)
    for _ in range(2):
        hub.publish("new", {})
    assert Client(hub, last_id=0).ids() == [4, 5]
    hub.log.close()
    again = restarted(index, max_age=2)
    assert again.replay_ids() == [4, 5]
    assert [body["type"] for _, body in Client(again, last_id=0).events()] == ["new", "new"]
    again.log.close()


@pytest.mark.gen_test
async def test_close_writes_what_is_queued(index: Path) -> None:
    log = EventLog(index, flush_delay=60)  # nothing would be written for a minute but for close()
    hub = EventHub(first_id=1, log=log)
    for _ in range(3):
        hub.publish("test", {})
    log.close()
    log.close()  # twice is harmless
    assert restarted(index).replay_ids() == [1, 2, 3]


# -- a real process, restarted ----------------------------------------------------------------------------------


