"""The listening room (`/`) in a real browser: Debian's Chromium driven by Selenium against a real `tornado-records`
process, with real audio files (ffmpeg), curl, and a slow chunked upload as a live recorder sends it.

Each test ends by checking Chrome's performance log: no request of the page went anywhere but the service. The time
each page view and each live update took is printed (`pytest -s`): it is what a user waits.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.keys import Keys

from support.browser import Browser
from support.components import require
from support.paced_recorder import PacedRecorder
from support.paths import REPO
from support.waiting import wait_until

VENDORED = REPO / "static" / "room" / "vendor"
TUS_PACKAGE = REPO / "tests" / "clients" / "node_modules" / "tus-js-client"
TOKEN = "room-secret"
MORNING = "0f339cb0-7ab4-43fe-852d-75708232f76c"
NIGHT = "5b1e2a44-9c1f-4d8e-a0b7-3c2d1e0f9a88"


def timing(what: str, seconds: float) -> None:
    """Print one measured wait of a user (pytest -s shows them)."""
    print(f"\nroom timing: {what}: {1000 * seconds:.0f} ms")


def audio(tmp_path: Path, name: str, seconds: int, *codec: str) -> Path:
    """A sine tone of `seconds` made by ffmpeg (WAV by default; `codec` as ffmpeg flags such as -c:a libmp3lame)."""
    path = tmp_path / name
    subprocess.run(
        [require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}:sample_rate=48000", "-ac", "2", *codec, str(path)],
        check=True,
    )  # fmt: skip
    return path


def put(url: str, event: str, start: str, body: bytes, token: str | None = None, kind: str = "audio/wav") -> None:
    headers = {"Content-Type": kind} | ({"Authorization": f"Bearer {token}"} if token else {})
    answer = requests.put(f"{url}/records/{event}/{start}", data=body, headers=headers, timeout=30)
    assert answer.status_code == 204, answer.text


def all_analysed(url: str, *events: str) -> bool:
    """Whether the analysis of every record of the events has ended (none is pending)."""
    listings = [requests.get(f"{url}/records/{event}?limit=100", timeout=10).json() for event in events]
    return all(record["analysis"] != "pending" for listing in listings for record in listing["records"])


def wait_for_rows(browser: Browser, count: int, css: str = "#events-body tr") -> None:
    browser.wait(lambda: len(browser.find_all(css)) == count, what=f"{count} rows of {css}")


# -- the files of the page ---------------------------------------------------------------------------------------


def test_the_page_and_its_files_come_from_the_service(service) -> None:  # noqa: ANN001
    proc = service()
    page = requests.get(proc.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<meta name="viewport"' in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for path in ["/room/room.js", "/room/waveform.js", "/room/room.css", "/room/vendor/tus.min.js"]:
        assert requests.get(proc.url + path, timeout=10).status_code == 200, path
        assert f'"{path}?v=' in page.text, path  # each link names the file's version (docs/api.md, "Caching")
    missing = requests.get(proc.url + "/room/nothing.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["status_code"] == 404
    outside = requests.get(proc.url + "/room/%2e%2e/setup.py", timeout=10)
    assert outside.status_code in (403, 404) and "setup(" not in outside.text


# -- browsing ----------------------------------------------------------------------------------------------------


def test_events_and_an_events_records_render(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    wav = audio(tmp_path, "tone.wav", 3).read_bytes()
    put(proc.url, MORNING, "2024-01-01T06:00:00", wav)
    put(proc.url, MORNING, "2024-01-02T06:00:00", wav)
    put(proc.url, NIGHT, "2024-01-01T23:00:00", wav[:50_000])
    assert requests.put(f"{proc.url}/records/{MORNING}", json={"title": "Morning show"}, timeout=10).ok
    assert wait_until(lambda: all_analysed(proc.url, MORNING, NIGHT), timeout=120)  # the picture shows durations
    browser = browsers(proc)

    began = time.monotonic()
    browser.open("/")
    wait_for_rows(browser, 2)
    timing("events list, page load to rendered list", time.monotonic() - began)
    timing("events list, navigation start to rendered (in the page)", browser.js("return roomTimings.events") / 1000)
    rows = browser.text("#events-body tr")
    assert "Morning show" in rows and MORNING in rows and "2024-01-02 06:00:00" in rows
    assert "0:06" in rows  # two records of 3 s
    assert NIGHT in rows  # an untitled event shows its UUID
    assert rows.index(NIGHT) < rows.index("Morning show")  # the newest change first
    assert browser.text("#events-page") == "1–2 of 2"
    browser.screenshot("room-events.png")

    began = time.monotonic()
    browser.find("#events-body a[href$='" + MORNING + "']").click()
    wait_for_rows(browser, 2, "#records-list li")
    timing("an event's records, click to rendered list", time.monotonic() - began)
    assert browser.find("#event-heading").text == "Morning show"
    first, second = browser.find_all("#records-list li")
    assert "2024-01-02 06:00:00" in first.text and "2024-01-01 06:00:00" in second.text  # newest first
    assert "audio/wav" in first.text and f"{len(wav) / 1000:.1f} kB" in first.text
    player = first.find_element("css selector", "audio")
    assert player.get_attribute("preload") == "none" and player.get_attribute("controls") is not None
    assert player.get_attribute("src") == f"{proc.url}/records/{MORNING}/2024-01-02T06:00:00"
    download = first.find_element("css selector", "a.download")
    assert download.get_attribute("href") == player.get_attribute("src")

    # The title is editable; the service keeps it, and the list shows it (no token on this service).
    field = browser.find("#title-input")
    field.clear()
    field.send_keys("Morning show (weekdays)")
    browser.find("#title-form button[type=submit]").click()
    browser.wait(lambda: browser.find("#event-heading").text == "Morning show (weekdays)", what="the new title")
    assert requests.get(f"{proc.url}/records/{MORNING}?limit=0", timeout=10).json()["title"] == "Morning show (weekdays)"
    browser.find("#back").click()
    browser.wait(lambda: "Morning show (weekdays)" in browser.text("#events-body"), what="the title in the list")


def test_audio_plays_and_seeks_with_a_range_request(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    wav = audio(tmp_path, "tone.wav", 30).read_bytes()
    put(proc.url, MORNING, "2024-01-01T06:00:00", wav)
    browser = browsers(proc)
    browser.open(f"/#event/{MORNING}")
    wait_for_rows(browser, 1, "#records-list li")
    # 1 MB/s, five times the WAV's rate: it plays at once, and 3/4 of it has not arrived when the seek comes.
    browser.driver.execute_cdp_cmd("Network.enable", {})
    browser.driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": 1_000_000, "uploadThroughput": -1},
    )
    browser.find("#records-list audio").click()  # focus; playing is started as the controls' button would
    assert browser.js("return document.querySelector('#records-list audio').play().then(() => 'playing')") == "playing"
    browser.wait(lambda: browser.js("return document.querySelector('#records-list audio').currentTime") > 1.0,
                 what="currentTime advancing")  # fmt: skip
    began = time.monotonic()
    browser.js("const a = document.querySelector('#records-list audio'); a.currentTime = a.duration * 0.75")
    browser.wait(lambda: browser.js("return document.querySelector('#records-list audio').currentTime") > 22.6,
                 what="playing from 3/4")  # fmt: skip
    timing("seek to 3/4, to playing there", time.monotonic() - began)
    ranges = [
        int(r["headers"]["range"].removeprefix("bytes=").split("-")[0])
        for r in browser.collect()
        if r["url"] == f"{proc.url}/records/{MORNING}/2024-01-01T06:00:00" and "range" in r["headers"]
    ]
    assert 0 in ranges  # the first request
    assert any(0.7 * len(wav) <= first <= 0.8 * len(wav) for first in ranges), ranges  # the seek's
    assert "GET /records/" + MORNING + "/2024-01-01T06:00:00 206" in proc.log
    browser.screenshot("room-records.png")


# -- live updates ------------------------------------------------------------------------------------------------


def curl(*args: str) -> None:
    subprocess.run([require("curl"), "--silent", "--show-error", "--fail", *args], check=True, timeout=30)


def test_records_uploaded_and_deleted_with_curl_appear_and_go_without_reload(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    wav = audio(tmp_path, "tone.wav", 2)
    put(proc.url, MORNING, "2024-01-01T06:00:00", wav.read_bytes())
    browser = browsers(proc)
    browser.open("/")
    wait_for_rows(browser, 1)
    browser.js("window.sameDocument = true")

    began = time.monotonic()
    curl("--upload-file", str(wav), "-H", "Content-Type: audio/wav", f"{proc.url}/records/{NIGHT}/2024-02-01T23:00:00")
    wait_for_rows(browser, 2)
    seconds = time.monotonic() - began
    timing("curl upload of a new event to its row in the events list", seconds)
    assert seconds < 2
    assert browser.find("#events-body tr").text.startswith(NIGHT)  # newest change first

    browser.find(f"#events-body a[href$='{MORNING}']").click()
    wait_for_rows(browser, 1, "#records-list li")
    began = time.monotonic()
    curl("--upload-file", str(wav), "-H", "Content-Type: audio/wav", f"{proc.url}/records/{MORNING}/2024-01-08T06:00:00")
    wait_for_rows(browser, 2, "#records-list li")
    seconds = time.monotonic() - began
    timing("curl upload to its row in the open event's records", seconds)
    assert seconds < 2
    assert "2024-01-08 06:00:00" in browser.find("#records-list li").text

    began = time.monotonic()
    curl("--request", "DELETE", f"{proc.url}/records/{MORNING}/2024-01-01T06:00:00")
    browser.wait(lambda: "2024-01-01 06:00:00" not in browser.text("#records-list"), what="the deleted record gone")
    seconds = time.monotonic() - began
    timing("curl delete to its row gone", seconds)
    assert seconds < 2
    assert browser.text("#records-page") == "1–1 of 1"
    assert browser.js("return window.sameDocument") is True  # never reloaded


def test_recording_now_grows_and_plays_live_while_it_records(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    seconds = 60
    mp3 = audio(tmp_path, "show.mp3", seconds, "-c:a", "libmp3lame", "-b:a", "128k").read_bytes()
    for day in (1, 2, 3):
        short = audio(tmp_path, f"day{day}.mp3", 5 * day, "-c:a", "libmp3lame", "-b:a", "128k").read_bytes()
        put(proc.url, MORNING, f"2024-03-0{day}T06:00:00", short, kind="audio/mpeg")
    assert requests.put(f"{proc.url}/records/{MORNING}", json={"title": "Morning show"}, timeout=10).ok
    assert requests.put(f"{proc.url}/records/{NIGHT}", json={"title": "Night owls"}, timeout=10).ok
    browser = browsers(proc)
    browser.open("/")
    wait_for_rows(browser, 1)
    assert browser.find("#now-empty").is_displayed()

    start = "2024-03-01T22:00:00"
    recorder = PacedRecorder(proc.url, f"/records/{NIGHT}/{start}", mp3, len(mp3) // seconds, "audio/mpeg")
    began = time.monotonic()
    recorder.start()
    browser.wait(lambda: "Night owls" in browser.text("#now-list"), what="the recording in Recording now")
    timing("upload start to its row in Recording now", time.monotonic() - began)
    sizes = [int(browser.find("#now-list .size").get_attribute("data-bytes"))]
    for _ in range(2):  # upload-progress comes every few seconds: the size shown grows twice
        grown = browser.wait(lambda: int(browser.find("#now-list .size").get_attribute("data-bytes")) > sizes[-1],
                             timeout=10, what="the size growing")  # fmt: skip
        assert grown
        sizes.append(int(browser.find("#now-list .size").get_attribute("data-bytes")))
    assert sizes[0] < sizes[1] < sizes[2] <= recorder.sent
    assert "2024-03-01 22:00:00" in browser.text("#now-list")

    browser.driver.refresh()  # a page opened while it records learns of it from GET /uploads
    browser.wait(lambda: int(browser.find("#now-list .size").get_attribute("data-bytes")) > sizes[-1] / 2,
                 what="the recording after a reload")  # fmt: skip
    browser.screenshot("room-recording-now.png")

    browser.find("#now-list button.listen").click()
    arrived = recorder.sent / recorder.rate  # seconds of audio that had arrived when the player started
    began = time.monotonic()
    browser.wait(lambda: browser.js("return document.getElementById('live-audio').currentTime") > 0.5,
                 what="the live player playing")  # fmt: skip
    timing("Listen live, click to playing", time.monotonic() - began)
    browser.wait(lambda: browser.js("return document.getElementById('live-audio').currentTime") > arrived + 2,
                 timeout=arrived + 20, what="playing audio that arrived after the player started")  # fmt: skip
    assert f"GET /records/{NIGHT}/{start}/live 200" not in proc.log  # the answer is still streaming
    assert recorder.is_alive()
    browser.find(f"#events-body a[href$='{MORNING}']").click()  # the page stays: the live player plays on
    wait_for_rows(browser, 3, "#records-list li")
    browser.js("document.querySelector('#records-list audio').play()")
    browser.wait(lambda: browser.js("return document.querySelector('#records-list audio').currentTime") > 1,
                 what="a record playing beside the live one")  # fmt: skip
    assert not browser.js("return document.getElementById('live-audio').paused")
    time.sleep(0.5)  # the players' clocks on screen catch up
    browser.screenshot("room-listen-live.png")  # docs/room.png

    recorder.stop.set()
    recorder.join(30)
    assert recorder.status == 204
    began = time.monotonic()
    browser.wait(lambda: browser.find("#now-empty").is_displayed(), what="the finished recording gone from the list")
    timing("upload end to its row gone from Recording now", time.monotonic() - began)
    browser.find("#back").click()
    browser.wait(lambda: "Night owls" in browser.text("#events-body"), what="the new record's event in the list")
    stored = requests.get(f"{proc.url}/records/{NIGHT}/{start}", timeout=10)
    assert stored.content == mp3[: recorder.sent]


# -- writing: delete and upload, with and without a token --------------------------------------------------------


def answer_token(browser: Browser, token: str, refused_before: bool) -> None:
    """Type `token` into the page's token dialog, which must be open (saying the last one was refused, or not)."""
    browser.wait(
        lambda: browser.find("#token-dialog").is_displayed()
        and browser.find("#token-wrong").is_displayed() == refused_before
        and browser.find("#token-input").get_attribute("value") == "",
        what=f"the token dialog ({'after a refusal' if refused_before else 'first'})",
    )
    browser.find("#token-input").send_keys(token)
    browser.find("#token-ok").click()


@pytest.mark.parametrize("token", [None, TOKEN], ids=["open-service", "token-file"])
def test_delete_and_upload_with_progress(service, browsers, tmp_path: Path, token: str | None) -> None:  # noqa: ANN001
    (tmp_path / "token").write_text(TOKEN)
    proc = service(*(("--token-file", str(tmp_path / "token")) if token else ()))
    show = audio(tmp_path, "show.wav", 30)
    put(proc.url, MORNING, "2024-01-01T06:00:00", show.read_bytes()[:100_000], token)
    browser = browsers(proc)
    browser.open(f"/#event/{MORNING}")
    wait_for_rows(browser, 1, "#records-list li")

    browser.find("#records-list button.delete").click()
    browser.wait(lambda: browser.find("#delete-dialog").is_displayed(), what="the confirmation")
    assert "2024-01-01 06:00:00" in browser.find("#delete-what").text
    browser.find("#delete-cancel").click()  # kept
    assert requests.get(f"{proc.url}/records/{MORNING}/2024-01-01T06:00:00", timeout=10).status_code == 200
    browser.find("#records-list button.delete").click()
    browser.wait(lambda: browser.find("#delete-dialog").is_displayed(), what="the confirmation")
    browser.find("#delete-ok").click()
    if token:
        answer_token(browser, "not-the-token", refused_before=False)
        answer_token(browser, TOKEN, refused_before=True)
        browser.wait(  # the dialog's close event, which keeps the token, comes after the click
            lambda: browser.js("return sessionStorage.getItem('tornado-records-token')") == TOKEN,
            what="the token kept for the tab",
        )
        assert browser.js("return JSON.stringify(localStorage)").find(TOKEN) == -1  # for the tab only
        browser.js("sessionStorage.clear()")  # the upload asks again
    browser.wait(lambda: not browser.find_all("#records-list li"), what="the record gone")
    assert requests.get(f"{proc.url}/records/{MORNING}/2024-01-01T06:00:00", timeout=10).status_code == 404

    # Upload a 5.8 MB file at 2 MB/s, so that the progress bar has something to show.
    browser.driver.execute_cdp_cmd("Network.enable", {})
    browser.driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2_000_000},
    )
    assert browser.find("#upload-event").get_attribute("value") == MORNING  # the open event
    browser.js("document.getElementById('upload-start').value = '2024-02-03T04:05:06'")
    browser.find("#upload-file").send_keys(str(show))
    began = time.monotonic()
    browser.find("#upload-submit").click()
    if token:
        answer_token(browser, TOKEN, refused_before=False)
    progress = set()
    while "Stored" not in (status := browser.find("#upload-status").text) and time.monotonic() - began < 60:
        assert "Not uploaded" not in status, status
        progress.add(round(float(browser.find("#upload-progress").get_attribute("value"))))
        time.sleep(0.05)
    timing(f"upload of {show.stat().st_size} bytes at 2 MB/s, click to stored", time.monotonic() - began)
    assert "Stored show.wav as 2024-02-03 04:05:06" in status
    assert float(browser.find("#upload-progress").get_attribute("value")) == 100
    assert len({p for p in progress if 0 < p < 100}) >= 3, progress  # it moved
    wait_for_rows(browser, 1, "#records-list li")  # from /sse
    stored = requests.get(f"{proc.url}/records/{MORNING}/2024-02-03T04:05:06", timeout=10)
    assert stored.content == show.read_bytes() and stored.headers["Content-Type"] == "audio/wav"
    assert ("POST /records/" + MORNING + "/2024-02-03T04:05:06 201") in proc.log  # tus creation

    # The title takes the kept token too, and asks nothing more.
    browser.find("#title-input").send_keys("Morning show")
    browser.find("#title-form button[type=submit]").click()
    browser.wait(lambda: browser.find("#event-heading").text == "Morning show", what="the title")
    assert not browser.find("#token-dialog").is_displayed()
    assert requests.get(f"{proc.url}/records/{MORNING}?limit=0", timeout=10).json()["title"] == "Morning show"


# -- paging, filter, keyboard, phone -----------------------------------------------------------------------------


def test_events_paging_filter_keyboard_and_phone(service, browsers) -> None:  # noqa: ANN001
    proc = service()
    events = [str(uuid.UUID(int=n + 1)) for n in range(13)]
    for n, event in enumerate(events, 1):
        put(proc.url, event, "2024-01-01T00:00:00", b"x" * n)
        assert requests.put(f"{proc.url}/records/{event}", json={"title": f"Show {n:02}"}, timeout=10).ok
    browser = browsers(proc)
    browser.open("/")
    wait_for_rows(browser, 10)
    assert browser.find("#events-body tr").text.startswith("Show 13")  # the newest change first
    assert browser.text("#events-page") == "1–10 of 13"
    assert not browser.find("#events-prev").is_enabled()

    browser.find("#events-next").click()
    wait_for_rows(browser, 3)
    assert browser.text("#events-page") == "11–13 of 13"
    assert [row.text.split("\n")[0] for row in browser.find_all("#events-body tr a")] == ["Show 03", "Show 02", "Show 01"]
    assert not browser.find("#events-next").is_enabled()

    began = time.monotonic()
    browser.find("#filter").send_keys("show 07")
    browser.wait(lambda: browser.text("#events-page") == "1–1 of 1", what="the filtered list")
    timing("filter typed to filtered list", time.monotonic() - began)
    assert browser.find("#events-body a").text == "Show 07"
    browser.find("#filter").clear()
    browser.find("#filter").send_keys(events[11][-12:])  # part of a UUID
    browser.wait(lambda: browser.text("#events-body a") == "Show 12", what="the event found by its UUID")
    browser.find("#filter").send_keys("zz")
    browser.wait(lambda: browser.find("#events-empty").is_displayed(), what="no match")

    # By keyboard: from the filter, Tab reaches the first event and Enter opens it.
    browser.find("#filter").clear()
    browser.find("#filter").send_keys("show 05")
    browser.wait(lambda: browser.text("#events-body a") == "Show 05", what="the filtered list")
    browser.find("#filter").send_keys(Keys.TAB)
    assert browser.js("return document.activeElement.textContent") == "Show 05"
    browser.js("return document.activeElement").send_keys(Keys.ENTER)
    browser.wait(lambda: browser.find("#event-heading").text == "Show 05", what="the event opened")
    wait_for_rows(browser, 1, "#records-list li")

    # On a phone's width nothing is wider than the screen.
    browser.driver.set_window_size(390, 844)
    browser.find("#back").click()
    browser.wait(lambda: browser.find("#events-body").is_displayed(), what="the events list again")
    assert browser.find("#filter").get_attribute("value") == "show 05"  # the filter is kept
    assert browser.text("#events-body a") == "Show 05"
    browser.find("#filter").send_keys(Keys.CONTROL, "a", Keys.BACKSPACE)  # as a person empties it
    wait_for_rows(browser, 10)
    assert browser.js("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.screenshot("room-phone.png")
