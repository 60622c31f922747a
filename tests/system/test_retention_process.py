"""Retention in a real process: a bad value stops the start; a sweep at start announces each deletion to a dashboard."""

from __future__ import annotations

import datetime
import http.client
import json
import signal
import subprocess
from typing import Any

import pytest

from support.records import EVENT, put
from support.service import COMMAND
from support.sse import Stream
from support.waiting import wait_until

DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize("value", ["5y", "0d", "90", "-1d", "1.5d"])
def test_a_bad_retention_fails_at_start_with_one_line(value: str, tmp_path: Any) -> None:
    result = subprocess.run(
        [*COMMAND, "--retention", value, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--retention" in result.stderr and "Traceback" not in result.stderr


def test_a_real_process_sweeps_at_start_and_announces_each_deletion_to_a_dashboard_that_reconnects(
    service: Any,
) -> None:
    now = datetime.datetime.now()  # the server's local time, as the sweeps read it
    old = ["2000-01-01T00:00:00", (now - 2 * DAY).isoformat(), (now - DAY - datetime.timedelta(minutes=5)).isoformat()]
    kept = [(now - DAY + datetime.timedelta(minutes=5)).isoformat(), "2999-01-01T00:00:00"]
    first = service()
    for start in old + kept:
        put(first, start)
    dashboard = Stream(first)
    put(first, "2999-06-01T00:00:00")
    last_seen = dashboard.events(2)[-1][0]
    dashboard.close()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0

    second = service(env={"RECORDS_RETENTION": "1d"})
    line = wait_until(lambda: next((l for l in second.lines if "retention: deleted" in l), None))
    assert line and " INFO tornado_records.retention: retention: deleted 3 record(s) that started before " in line
    assert "(older than 1d)" in line and line.rstrip().endswith(" ms")
    conn = http.client.HTTPConnection("127.0.0.1", second.port, timeout=30)
    conn.request("GET", f"/records/{EVENT}")
    listed = [record["start"] for record in json.loads(conn.getresponse().read())["records"]]
    assert listed == sorted(kept + ["2999-06-01T00:00:00"])
    resumed = Stream(second, last_id=last_seen)
    deleted = [event["data"]["record"]["start"] for _, event in resumed.events(3)]
    assert deleted == sorted(old)
    resumed.close()
    assert second.stop() == 0
    assert "Traceback" not in second.log
