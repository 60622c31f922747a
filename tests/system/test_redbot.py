"""REDbot ("lint for HTTP", PyPI `redbot`) on a real process, offline on 127.0.0.1 (issue 26): on a download, a
listing, the events list and a feed it reports no caching problem. It asks each URL several times (conditional
requests with the ETag and the Last-Modified it saw, a range, gzip) and grades what it sees in notes of four levels
(good, info, warn, bad) and several categories; none may be bad, and no caching one may be a warning. Every note it
gives is printed (`pytest -s`), for docs/api.md's list of what it still says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from support.audio import FORMATS, Tone, generate
from support.records import EVENT, record_url

REDBOT = Path(sys.executable).with_name("redbot")  # the test extra's
START = "2024-03-01T08:00:00"


def notes(url: str) -> list[dict]:
    """Every note REDbot gives on `url` (its HAR output's `_red_messages`, subnotes flattened)."""
    ran = subprocess.run([str(REDBOT), "-o", "har", url], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    har = json.loads(ran.stdout)
    [entry] = [e for e in har["log"]["entries"] if e["request"]["url"] == url]
    assert entry["response"]["status"] == 200, entry["response"]
    found: list[dict] = []

    def flatten(messages: list[dict]) -> None:
        for message in messages:
            found.append(message)
            flatten(message.get("subnotes", []))

    flatten(entry["_red_messages"])
    return found


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    """A real process keeping one record, an MP3 of two seconds, of an event with a title."""
    from support.service import Service

    folder = tmp_path_factory.mktemp("redbot")
    mp3 = next(f for f in FORMATS if f.name == "mp3")
    audio = generate(folder / "tone.mp3", mp3, Tone(duration=2.0, silence=(0.5, 1.0))).read_bytes()
    proc = Service(folder / "data")
    try:
        url = proc.url + record_url(EVENT, START)
        assert requests.put(url, data=audio, headers={"Content-Type": mp3.type}, timeout=30).status_code == 204
        assert requests.put(f"{proc.url}/records/{EVENT}", json={"title": "Morning show"}, timeout=30).ok
        yield proc
    finally:
        proc.proc.kill()
        proc.proc.wait()


@pytest.mark.parametrize(
    "what, path",
    [
        ("download", record_url(EVENT, START)),
        ("listing", f"/records/{EVENT}"),
        ("events list", "/records"),
        ("feed", f"/feeds/{EVENT}"),
    ],
)
def test_redbot_finds_no_caching_problem(archive, what, path) -> None:  # noqa: ANN001
    url = archive.url + path
    found = notes(url)
    print(f"\nREDbot on the {what} ({path}):")
    for note in found:
        print(f"  {note['level']:5} {note['category']:11} {note['note_id']}: {note['summary']}")
    assert [n for n in found if n["level"].lower() == "bad"] == []
    assert [n for n in found if n["category"].lower() == "caching" and n["level"].lower() == "warn"] == []
    # and it saw the validators work: a 304 to If-None-Match
    assert any(n["note_id"] == "INM_304" for n in found), [n["note_id"] for n in found]
