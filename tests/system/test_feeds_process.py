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


def shell_commands(page: Path, containing: str) -> list[str]:
    """The shell commands of a page (continuation lines joined) that contain a text."""
    blocks = re.findall(r"```sh\n(.*?)```", page.read_text(), re.DOTALL)
    commands = [line.strip() for block in blocks for line in re.sub(r"\\\n\s*", "", block).splitlines()]
    return [command for command in commands if containing in command]


@pytest.mark.engines("sqlite")
def test_the_readme_feed_command_and_the_publishing_steps_work_as_written(service) -> None:
    require("curl")
    svc = service()
    put = request(svc.url, "PUT", record_url(EVENT, "2024-01-01T06:00:00"), b"audio", {"Content-Type": "audio/mpeg"})
    assert put[0] == 204

    def run(command: str) -> bytes:
        result = subprocess.run(
            ["bash", "-c", command.replace("localhost:10700", f"localhost:{svc.port}")], capture_output=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    [details] = shell_commands(REPO / "docs" / "feeds.md", "--request PUT")  # the first step of publishing
    assert json.loads(run(details))["timezone"] == "Europe/Berlin"
    [command] = shell_commands(REPO / "README.md", "/feeds/")
    feed = feedparser.parse(run(command))
    assert not feed.bozo and len(feed.entries) == 1 and feed.feed.title == "Morning show"
    assert feed.entries[0].published == "Mon, 01 Jan 2024 06:00:00 +0100"
    assert feed.entries[0].enclosures[0].href == f"http://localhost:{svc.port}{record_url(EVENT, '2024-01-01T06:00:00')}"


@pytest.mark.parametrize("value", ["Mars/Olympus", "utc+1"])
def test_a_bad_timezone_fails_at_start_with_one_line(value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "--timezone", value, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--timezone" in result.stderr and "Traceback" not in result.stderr
