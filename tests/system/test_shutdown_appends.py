"""SIGTERM during a live recording (an append request, `PUT ...?append=true`, that never ends by itself): the process
ends the append at once, keeping what arrived, instead of waiting out `--shutdown-grace`; the recorder's connection
is closed, so that it reconnects to the next process (as `systemctl restart` wants)."""

from __future__ import annotations

import json
import os
import signal
import time

from support.rawhttp import chunk, connect, read_to_end, request, request_head
from support.records import EVENT, record_url
from support.waiting import wait_until

LIVE = record_url(start="2024-07-01T06:00:00") + "?append=true"


def test_sigterm_ends_a_live_append_at_once_and_keeps_what_arrived(service) -> None:
    svc = service("--shutdown-grace", "30")
    sent = os.urandom(200_000)
    recorder = connect(svc.url)
    recorder.sendall(
        request_head("PUT", LIVE, {"Content-Type": "audio/mpeg", "Transfer-Encoding": "chunked"})
        + chunk(sent[:100_000])
        + chunk(sent[100_000:])
    )
    assert wait_until(lambda: _received(svc) >= len(sent))

    began = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=10) == 0
    assert time.monotonic() - began < 5  # not the 30 s of the grace
    assert "ending 1 live append request(s) at once" in svc.log
    assert "still in flight" not in svc.log
    assert read_to_end(recorder) == b""  # closed without an answer: the recorder reconnects
    recorder.close()

    again = service()
    status, headers, body = request(again.url, "GET", record_url(start="2024-07-01T06:00:00"))
    assert status == 200 and body == sent and headers["Content-Type"] == "audio/mpeg"
    listed = json.loads(request(again.url, "GET", f"/records/{EVENT}")[2])
    assert listed["records"][0]["size"] == len(sent)


def _received(svc) -> int:  # noqa: ANN001
    """Bytes of upload bodies the process has received, from its metrics."""
    text = request(svc.url, "GET", "/metrics")[2].decode()
    line = next(line for line in text.splitlines() if line.startswith("tornado_records_upload_received_bytes_total"))
    return int(float(line.split()[-1]))
