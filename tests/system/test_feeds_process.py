"""Podcast feeds from a real `tornado-records` process: an app that polls the feed keeps every item's guid, and gets
304, across a restart of the service; the README's feed command works as written; a bad --timezone stops the start
with one line."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import feedparser
import pytest

from support.components import require
from support.paths import REPO
from support.rawhttp import request
from support.records import EVENT, record_url
from support.service import COMMAND

FEED = f"/feeds/{EVENT}"
PODCAST_GUIDS = uuid.UUID("ead4c236-bf58-58c6-a2c6-a6b28d128cb6")


def read_feed(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    status, answer_headers, body = request(url, "GET", FEED, None, headers)
    assert status in (200, 304), body
    return status, answer_headers, body


def test_guids_and_validators_stay_the_same_across_a_restart(service) -> None:
    flags = ("--timezone", "Europe/Berlin", "--public-url", "https://radio.example", "--analysis-workers", "0")
    first = service(*flags)  # no analysis: what the feed shows changes only as the test changes it
    details = json.dumps({"title": "Morning show", "author": "Radio Example"}).encode()
    assert request(first.url, "PUT", f"/records/{EVENT}", details)[0] == 200
    for start in ("2024-01-01T06:00:00", "2024-01-02T06:00:00"):
        assert request(first.url, "PUT", record_url(EVENT, start), b"audio " + start.encode())[0] == 204
    _, headers, body = read_feed(first.url)
    before = feedparser.parse(body)
    assert first.stop() == 0

    again = service(*flags, data_dir=first.data_dir)
    status, after_headers, after_body = read_feed(again.url)
    after = feedparser.parse(after_body)
    assert [e.id for e in after.entries] == [e.id for e in before.entries] and len(after.entries) == 2
    assert after_body == body and after_headers["ETag"] == headers["ETag"]
    assert after.feed.podcast_guid == str(uuid.uuid5(PODCAST_GUIDS, f"radio.example{FEED}"))
    assert read_feed(again.url, {"If-None-Match": headers["ETag"]})[0] == 304
    assert read_feed(again.url, {"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    assert "Traceback" not in first.log + again.log


def readme_feed_commands() -> list[str]:
    """The README's shell commands that read a feed."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if "/feeds/" in line]


@pytest.mark.engines("sqlite")
def test_the_readme_feed_command_works_as_written(service) -> None:
    require("curl")
    svc = service()
    put = request(svc.url, "PUT", record_url(EVENT, "2024-01-01T06:00:00"), b"audio", {"Content-Type": "audio/mpeg"})
    assert put[0] == 204
    [command] = readme_feed_commands()
    result = subprocess.run(
        ["bash", "-c", command.replace("localhost:10700", f"localhost:{svc.port}")], capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    feed = feedparser.parse(result.stdout)
    assert not feed.bozo and len(feed.entries) == 1
    assert feed.entries[0].enclosures[0].href == f"http://localhost:{svc.port}{record_url(EVENT, '2024-01-01T06:00:00')}"


@pytest.mark.parametrize("value", ["Mars/Olympus", "utc+1"])
def test_a_bad_timezone_fails_at_start_with_one_line(value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "--timezone", value, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--timezone" in result.stderr and "Traceback" not in result.stderr
