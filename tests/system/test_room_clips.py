"""The listening room's publishing links, in a real browser (Chromium, Selenium) on a real `tornado-records`
process: an event's podcast feed shown as an absolute link and copied; a record's clip marked on its waveform (a click
moves the player, *Mark start* takes its time) and with the player's time (*Mark end*), its range drawn on the
waveform, its link copied, and downloaded by the browser: audio of the marked length that starts at the marked
second (a tone staircase, support/clips.py)."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from selenium.webdriver.common.action_chains import ActionChains

from support.browser import Browser
from support.clips import MP3, seconds_of, staircase, step_at, first_step

MORNING = "0f339cb0-7ab4-43fe-852d-75708232f76c"
START = "2024-05-01T06:00:00"
ANALYSIS = 120.0  # seconds an analysis may take on a busy machine (ffmpeg runs at nice 19)


def analysed(url: str) -> dict:
    deadline = time.monotonic() + ANALYSIS
    while True:
        [item] = requests.get(f"{url}/records/{MORNING}", timeout=10).json()["records"]
        if item["analysis"] != "pending":
            return item
        assert time.monotonic() < deadline, f"the analysis is still pending after {ANALYSIS} s"
        time.sleep(0.1)


def clipboard(browser: Browser) -> str:
    """What the page's clipboard holds (read as the page, which the test allowed to)."""
    return browser.driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, (e) => done(`error: ${e}`))"
    )


def test_the_feed_link_and_a_marked_clip(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    source = staircase(tmp_path / "stairs.mp3", MP3, 20.0, rate=44100)
    answer = requests.put(f"{proc.url}/records/{MORNING}/{START}", data=source.read_bytes(),
                          headers={"Content-Type": MP3.type}, timeout=30)  # fmt: skip
    assert answer.status_code == 204
    requests.put(f"{proc.url}/records/{MORNING}", json={"title": "Morning show"}, timeout=10)
    duration = analysed(proc.url)["audio"]["duration"]
    browser = browsers(proc)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": proc.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})  # fmt: skip
    browser.open(f"/#event/{MORNING}")

    # The feed: an absolute link, and a button that copies it.
    feed = f"{proc.url}/feeds/{MORNING}"
    link = browser.wait(lambda: browser.find("#feed-url"), what="the feed link")
    browser.wait(lambda: link.text == feed, what="the feed's address")
    assert link.get_attribute("href") == feed
    browser.find("#feed-copy").click()
    browser.wait(lambda: browser.text("#feed-status") == "Copied.", what="the feed's link copied")
    assert clipboard(browser) == feed

    # A clip: its start marked on the waveform (a click at 27 % moves the player there), its end with the player.
    row = browser.wait(lambda: browser.find(f"#records-list li[data-key='{MORNING} {START}']"), what="the row")
    wave = row.find_element("css selector", ".wave")
    browser.wait(lambda: wave.get_attribute("data-drawn"), what="the waveform drawn")
    assert not row.find_element("css selector", ".clip-download").is_displayed()  # nothing marked yet
    offset = round((0.27 - 0.5) * wave.rect["width"])
    ActionChains(browser.driver).move_to_element_with_offset(wave, offset, 0).click().perform()
    row.find_element("css selector", ".mark-from").click()
    begin = browser.js("return arguments[0].querySelector('audio').currentTime", row)
    assert abs(begin - 0.27 * duration) < 0.2
    browser.js("arguments[0].querySelector('audio').currentTime = 12.6", row)
    row.find_element("css selector", ".mark-to").click()
    marked = round(begin, 3)
    address = f"{proc.url}/records/{MORNING}/{START}/clip?from={marked:g}&to=12.6"
    marks = row.find_element("css selector", ".clip")
    browser.wait(lambda: marks.get_attribute("data-link") == address, what="the clip's link")
    assert row.find_element("css selector", ".clip-to").text == "0:12.6"
    band = row.find_element("css selector", ".clip-range")
    assert band.is_displayed()
    assert abs(band.rect["x"] - wave.rect["x"] - 0.27 * wave.rect["width"]) < 4
    assert abs(band.rect["width"] - (12.6 - begin) / duration * wave.rect["width"]) < 4
    row.find_element("css selector", ".clip-copy").click()
    browser.wait(lambda: "Copied." in row.text, what="the clip's link copied")
    assert clipboard(browser) == address
    browser.screenshot("room-feed-and-clip.png")  # docs/room-feed-and-clip.png

    # The download: the service's file name, and audio from the marked second, of the marked length.
    row.find_element("css selector", ".clip-download").click()
    saved = browser.wait(lambda: [p for p in downloads.iterdir() if not p.name.endswith(".crdownload")], timeout=30,
                         what="the clip downloaded")  # fmt: skip
    assert [p.name for p in saved] == [f"Morning show 2024-05-01T06.00.00 0m{marked:06.3f}s-0m12.6s.mp3".replace(
        f"{marked:06.3f}", f"{marked:06.3f}".rstrip("0").rstrip("."))]  # fmt: skip
    clip = saved[0].read_bytes()
    assert abs(seconds_of(clip) - (12.6 - marked)) <= 0.1
    assert first_step(clip) == step_at(marked)

    # The end before the start: no clip, and a word why.
    browser.js("arguments[0].querySelector('audio').currentTime = 2", row)
    row.find_element("css selector", ".mark-to").click()
    browser.wait(lambda: "The end must be after the start." in row.text, what="the note")
    assert not row.find_element("css selector", ".clip-download").is_displayed()
