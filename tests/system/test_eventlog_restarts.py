"""Last-Event-ID across real restarts of `tornado-records` (SIGTERM and kill -9), in order and without duplicates,
and the bound on a real process's event log."""

from __future__ import annotations

import http.client
import signal
from typing import Any

import pytest

from support.records import EVENT, put, run_on_index
from support.sse import Stream
from support.waiting import wait_until


def summary(events: list[tuple[int, dict]]) -> list[tuple[str, str]]:
    """(type, start) of each event."""
    return [(e["type"], e["data"].get("start") or e["data"]["record"]["start"]) for _, e in events]


@pytest.mark.parametrize("stop", ["SIGTERM", "kill -9"])
def test_a_dashboard_reconnecting_after_a_restart_gets_what_it_missed_in_order_without_duplicates(
    service: Any, engine: dict[str, str], stop: str
) -> None:
    first = service("--analysis-workers", "0")
    dashboard = Stream(first)
    put(first, "2024-01-01T01:00:00")
    seen = dashboard.events(2)
    dashboard.close()  # the dashboard goes away; what follows it misses
    put(first, "2024-01-01T02:00:00")
    if stop == "SIGTERM":
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
    else:
        # the durability bound the README states, FLUSH_DELAY plus an fsync: the events it missed are in the log
        missed = f"SELECT count(*) FROM events WHERE id > {seen[-1][0]}"
        assert wait_until(lambda: run_on_index(engine, first.data_dir, missed)[0][0] >= 2)
        first.proc.kill()
        first.proc.wait()
    second = service("--analysis-workers", "0")
    put(second, "2024-01-01T03:00:00")  # published by the new process while the dashboard is still away

    resumed = Stream(second, last_id=seen[-1][0])
    missed = resumed.events(4)
    assert summary(missed) == [
        ("upload-started", "2024-01-01T02:00:00"),
        ("record-created", "2024-01-01T02:00:00"),
        ("upload-started", "2024-01-01T03:00:00"),
        ("record-created", "2024-01-01T03:00:00"),
    ]
    ids = [seen[-1][0]] + [event_id for event_id, _ in missed]
    assert ids == sorted(set(ids))  # increasing across the restart, none twice
    # Then the live ones, and nothing else in between: the replay held no duplicate.
    put(second, "2024-01-01T04:00:00")
    live = resumed.events(2)
    assert summary(live) == [("upload-started", "2024-01-01T04:00:00"), ("record-created", "2024-01-01T04:00:00")]
    assert live[0][0] > missed[-1][0]
    resumed.close()
    # A dashboard that saw everything before the restart gets only what came after it.
    caught_up = Stream(second, last_id=missed[1][0])
    assert summary(caught_up.events(4)) == summary(missed[2:] + live)
    caught_up.close()


def test_the_log_of_a_real_process_is_bounded_to_the_newest_1000_events(service: Any) -> None:
    server = service("--analysis-workers", "0")  # the events counted are the uploads' (no record-analyzed)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for n in range(510):  # 1020 events: upload-started and record-created each
        conn.request("PUT", f"/records/{EVENT}/2024-01-01T00:00:{n % 60:02d}.{n:06d}", body=b"x")
        assert conn.getresponse().read() == b""
    conn.close()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    again = service("--analysis-workers", "0")
    replay = Stream(again, last_id=0)
    events = replay.events(1000)
    assert [e["data"].get("start") or e["data"]["record"]["start"] for _, e in events[:2]] == [
        "2024-01-01T00:00:10.000010"
    ] * 2  # the first 10 uploads' events (20) were trimmed
    assert [event_id for event_id, _ in events] == sorted({event_id for event_id, _ in events})
    put(again, "2025-01-01T00:00:00")
    assert summary([replay.event()]) == [("upload-started", "2025-01-01T00:00:00")]  # nothing more was kept
    replay.close()
