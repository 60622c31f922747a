"""Clips through the API (`GET /records/{event}/{start}/clip?from=&to=`), on every engine: a tone staircase (each
second its own pitch, support/clips.py) in MP3 and Ogg/Opus as ffmpeg writes them, cut without re-encoding. A clip
decodes, lasts the asked length within 0.1 s, starts at the asked second's pitch, and keeps the source's codec and
bitrate; with the analysis done and while it is pending; of an appended record too. And the refusals: 400, 416, 422,
503, 404; revalidation (304); the file's name; a client that leaves stops its ffmpeg."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse

import pytest

from support.audio import children
from support.components import require
from support.clips import ENCODINGS, MP3, OPUS, assert_clip_of, seconds_of, staircase
from support.records import EVENT, record_url
from support.waiting import eventually

START = "2024-03-01T08:00:00"
SECONDS = 40.0


@contextlib.asynccontextmanager
async def analysing(app):
    """The app's analyses running, as the command starts them (its clips go on after)."""
    app.settings["analyzer"].start()
    try:
        yield
    finally:
        await app.settings["analyzer"].stop()


async def upload(fetch, body: bytes, content_type: str, start: str = START, append: bool = False) -> None:
    url = record_url(EVENT, start) + ("?append=true" if append else "")
    response = await fetch(url, method="PUT", body=body, headers={"Content-Type": content_type})
    assert response.code == 204, response.body


async def clip(fetch, start_: str, end: str, start: str = START, **kwargs):  # noqa: ANN003, ANN201
    query = urllib.parse.urlencode({"from": start_, "to": end})
    return await fetch(f"{record_url(EVENT, start)}/clip?{query}", **kwargs)


async def analysed(fetch, timeout: float = 60) -> dict:
    """The record's listing item once its analysis is done."""
    deadline = time.monotonic() + timeout
    while True:
        [item] = json.loads((await fetch(f"/records/{EVENT}")).body)["records"]
        if item["analysis"] != "pending":
            return item
        assert time.monotonic() < deadline, f"the analysis is still pending after {timeout} s"
        await asyncio.sleep(0.05)


def error(response) -> dict:  # noqa: ANN001
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.body)
    assert body["status_code"] == response.code
    return body


@pytest.mark.parametrize("encoding", ENCODINGS, ids=[e.name for e in ENCODINGS])
@pytest.mark.gen_test(timeout=120)
async def test_a_clip_starts_at_the_asked_audio_and_lasts_the_asked_length(app, fetch, tmp_path, encoding):
    source = staircase(tmp_path / f"stairs.{encoding.suffix}", encoding, SECONDS)
    await upload(fetch, source.read_bytes(), encoding.type)
    pending = await clip(fetch, "12.4", "17.4")  # the analysis is not running: the service asks ffprobe
    assert pending.code == 200, pending.body
    assert pending.headers["Content-Type"] == encoding.type
    assert pending.headers["Cache-Control"] == "no-cache"
    assert int(pending.headers["Content-Length"]) == len(pending.body)
    assert_clip_of(pending.body, source, 12.4, 5.0, tmp_path)
    clock = await clip(fetch, "0:21.5", "00:00:29")  # [HH:]MM:SS[.fff]
    assert_clip_of(clock.body, source, 21.5, 7.5, tmp_path)
    async with analysing(app):
        assert (await analysed(fetch))["analysis"] == "done"
    done = await clip(fetch, "30.7", "33.2")
    assert_clip_of(done.body, source, 30.7, 2.5, tmp_path)
    to_the_end = await clip(fetch, "35.5", "99")  # to past the end: up to the end
    assert_clip_of(to_the_end.body, source, 35.5, SECONDS - 35.5, tmp_path)


@pytest.mark.gen_test(timeout=120)
async def test_a_clip_of_an_appended_record_spans_its_parts(app, fetch, tmp_path):
    source = staircase(tmp_path / "stairs.mp3", MP3, SECONDS)
    data = source.read_bytes()
    await upload(fetch, data[: len(data) // 2 + 7], MP3.type, append=True)  # two requests: two runs of content
    await upload(fetch, data[len(data) // 2 + 7 :], MP3.type, append=True)
    assert (await fetch(record_url(EVENT, START))).body == data
    response = await clip(fetch, "15.3", "25.3")  # across the join (at about 20 s)
    assert response.code == 200, response.body
    assert_clip_of(response.body, source, 15.3, 10.0, tmp_path)


@pytest.mark.gen_test(timeout=60)
async def test_the_file_is_named_for_the_event_the_start_and_the_range(app, fetch, tmp_path):
    source = staircase(tmp_path / "stairs.opus", OPUS, 10.0)
    await upload(fetch, source.read_bytes(), OPUS.type)
    response = await clip(fetch, "1.5", "4")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="{EVENT} 2024-03-01T08.00.00 0m01.5s-0m04s.opus"'
    )
    title = 'Matinée: "news" / weather'
    assert (await fetch(f"/records/{EVENT}", method="PUT", body=json.dumps({"title": title}))).code == 200
    response = await clip(fetch, "1.5", "4")
    name = "Matinée_ _news_ _ weather 2024-03-01T08.00.00 0m01.5s-0m04s.opus"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="Matinee_ _news_ _ weather 2024-03-01T08.00.00 0m01.5s-0m04s.opus"; '
        f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    )


@pytest.mark.gen_test(timeout=60)
async def test_a_clip_is_revalidated_by_its_etag(app, fetch, tmp_path):
    source = staircase(tmp_path / "stairs.mp3", MP3, 10.0)
    await upload(fetch, source.read_bytes(), MP3.type)
    first = await clip(fetch, "2", "4")
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and first.headers["Last-Modified"]
    again = await clip(fetch, "2", "4", headers={"If-None-Match": etag})
    assert again.code == 304 and again.body == b"" and again.headers["ETag"] == etag
    other = await clip(fetch, "2", "5", headers={"If-None-Match": etag})
    assert other.code == 200 and other.headers["ETag"] != etag
    await upload(fetch, staircase(tmp_path / "other.mp3", MP3, 9.0).read_bytes(), MP3.type)
    replaced = await clip(fetch, "2", "4", headers={"If-None-Match": etag})
    assert replaced.code == 200 and replaced.headers["ETag"] != etag


@pytest.mark.gen_test(timeout=60)
async def test_unreadable_negative_and_empty_ranges_are_400(app, fetch, tmp_path):
    await upload(fetch, staircase(tmp_path / "stairs.mp3", MP3, 10.0).read_bytes(), MP3.type)
    for query in ("from=1", "to=2", "", "from=abc&to=2", "from=1&to=1:2:3:4", "from=1.2.3&to=4", "from=1&to=1:75",
                  "from=-1&to=2", "from=1&to=-2", "from=3&to=3", "from=4&to=2.5", "from=0:05&to=0:04.999",
                  "from=nan&to=inf", "from=1e3&to=2e3"):  # fmt: skip
        response = await fetch(f"{record_url(EVENT, START)}/clip?{query}")
        assert response.code == 400, query
        assert error(response)["detail"], query
    assert "negative" in error(await clip(fetch, "-1", "2"))["detail"]
    assert "empty" in error(await clip(fetch, "3", "2"))["detail"]


@pytest.mark.parametrize("analysis", ["pending", "done"])
@pytest.mark.gen_test(timeout=60)
async def test_a_range_past_the_end_is_416(app, fetch, tmp_path, analysis):
    await upload(fetch, staircase(tmp_path / "stairs.opus", OPUS, 10.0).read_bytes(), OPUS.type)
    if analysis == "done":
        async with analysing(app):
            await analysed(fetch)
    for start_, end in (("10.5", "12"), ("15", "20"), ("1:00", "2:00")):
        response = await clip(fetch, start_, end)
        assert response.code == 416, (start_, response.body)
        assert "end of the audio" in error(response)["detail"]


@pytest.mark.parametrize("analysis", ["pending", "done"])
@pytest.mark.gen_test(timeout=60)
async def test_a_record_that_is_not_audio_is_422(app, fetch, analysis):
    await upload(fetch, os.urandom(200_000), "audio/mpeg")
    if analysis == "done":
        async with analysing(app):
            assert (await analysed(fetch))["analysis"] == "unsupported"
    response = await clip(fetch, "1", "2")
    assert response.code == 422 and "not audio" in error(response)["detail"]


@pytest.mark.gen_test(timeout=60)
async def test_a_missing_record_is_404(app, fetch):
    response = await clip(fetch, "1", "2")
    assert response.code == 404 and error(response)


@pytest.fixture
def settings(request) -> dict[str, str]:  # noqa: ANN001
    return {"clip_workers": getattr(request, "param", "4")}


@pytest.mark.engines("sqlite", "s3")
@pytest.mark.parametrize("settings", ["1"], indirect=True)
@pytest.mark.gen_test(timeout=180)
async def test_a_client_that_leaves_stops_its_ffmpeg_and_one_more_clip_than_the_workers_is_503(
    app, fetch, port, tmp_path
):
    short = staircase(tmp_path / "stairs.mp3", MP3, 30.0, rate=44100)
    long = tmp_path / "long.mp3"  # 50 minutes: the 30 s repeated (a stream copy, quick to make)
    subprocess.run([require("ffmpeg"), "-v", "error", "-stream_loop", "99", "-i", str(short), "-c", "copy", str(long)],
                   check=True)  # fmt: skip
    await upload(fetch, long.read_bytes(), MP3.type)
    assert children(os.getpid()) == []
    leaving = socket.create_connection(("127.0.0.1", port))
    leaving.sendall(f"GET {record_url(EVENT, START)}/clip?from=10&to=2990 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert await eventually(lambda: [name for _, name in children(os.getpid())] == ["ffmpeg"], timeout=30)
    # Its cut copies 50 minutes in a fraction of a second: the test stops it (SIGSTOP), so that it is still cutting
    # when the next clip is asked for, and ends only if the service kills it.
    [(cutting, _)] = children(os.getpid())
    os.kill(cutting, signal.SIGSTOP)
    busy = await clip(fetch, "1", "2")  # the one worker cuts the other clip
    assert busy.code == 503 and busy.headers["Retry-After"] and "ask again" in error(busy)["detail"], busy.body
    leaving.close()
    assert await eventually(lambda: children(os.getpid()) == [], timeout=10), children(os.getpid())

    async def free() -> bool:  # the worker is free again, once the cut that was stopped has ended in its thread
        nonlocal after
        after = await clip(fetch, "1.5", "3.5")
        return after.code != 503

    after = None
    deadline = time.monotonic() + 10
    while not await free() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert after.code == 200 and abs(seconds_of(after.body) - 2.0) <= 0.1, after.code


@pytest.mark.parametrize("settings", ["0"], indirect=True)
@pytest.mark.gen_test(timeout=60)
async def test_without_clip_workers_a_clip_is_503(app, fetch, tmp_path):
    await upload(fetch, staircase(tmp_path / "stairs.mp3", MP3, 5.0).read_bytes(), MP3.type)
    response = await clip(fetch, "1", "2")
    assert response.code == 503 and response.headers["Retry-After"] and error(response)
