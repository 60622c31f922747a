"""What the listening room shows of each record's sound, in a real browser (Chromium, Selenium) on a real
`tornado-records` process that analyses real audio files (ffmpeg): the duration, loudness and silences in words, the
waveform drawn from /peaks with its silences marked, a click or a drag on it that seeks the record's player, the play
position following the player, and the analysis states a person reads while there is no waveform. Files with known
content come from support/audio.py: a 1 kHz tone at -20 dBFS, silent from 4 s to 7 s.

Nothing waits a fixed time: each step waits for what a user would see (the listing saying "done", the row changing).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import requests
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.remote.webelement import WebElement

from support.audio import FORMATS, Tone, generate
from support.browser import Browser
from support.components import require

MORNING = "0f339cb0-7ab4-43fe-852d-75708232f76c"
TONE = Tone()  # 10 s, silent from 4 s to 7 s
MP3 = FORMATS[0]
ANALYSIS = 120.0  # seconds an analysis may take on a busy machine (ffmpeg runs at nice 19)


def put(url: str, start: str, body: bytes, kind: str, event: str = MORNING) -> None:
    answer = requests.put(f"{url}/records/{event}/{start}", data=body, headers={"Content-Type": kind}, timeout=30)
    assert answer.status_code == 204, answer.text


def analysed(url: str, start: str, event: str = MORNING) -> dict:
    """The record's listing item once its analysis has ended (polled: the service says when)."""
    deadline = time.monotonic() + ANALYSIS
    while True:
        records = requests.get(f"{url}/records/{event}?limit=100", timeout=10).json()["records"]
        item = next(r for r in records if r["start"] == start)
        if item["analysis"] != "pending":
            return item
        assert time.monotonic() < deadline, f"the analysis of {start} is still pending after {ANALYSIS} s"
        time.sleep(0.1)


def show(path: Path, seconds: float, silence: tuple[float, float] | None) -> Path:
    """An MP3 that looks like a programme on a waveform: a voice-like tone and noise whose level rises and falls,
    silent (dead air) from `silence[0]` to `silence[1]` s."""
    level = "(0.04+0.5*abs(sin(PI*t*0.061))*(0.6+0.4*sin(PI*t*0.37))*abs(sin(PI*t*1.3+2*sin(PI*t*0.17))))"
    sound = f"{level}*(0.6*sin(2*PI*220*t)+0.4*(2*random(0)-1))"
    if silence:
        sound = f"if(between(t,{silence[0]},{silence[1]}),0,{sound})"
    source = f"aevalsrc={sound.replace(',', chr(92) + ',')}:s=44100:d={seconds}"
    subprocess.run(
        [require("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", source, "-ac", "2",
         "-c:a", "libmp3lame", "-b:a", "128k", str(path)],
        check=True,
    )  # fmt: skip
    return path


def row(browser: Browser, start: str) -> WebElement:
    return browser.find(f"#records-list li[data-key='{MORNING} {start}']")


def player(browser: Browser, start: str, expression: str) -> object:
    """The value of `expression` on the row's <audio> (`audio`)."""
    return browser.js(f"const audio = arguments[0].querySelector('audio'); return {expression}", row(browser, start))


def drawn_columns(browser: Browser, wave: WebElement, fractions: list[float]) -> list[int]:
    """How many pixels of the waveform's canvas are painted in the column at each fraction of its width."""
    return browser.js(
        """const canvas = arguments[0].querySelector('canvas')
        const context = canvas.getContext('2d')
        return arguments[1].map((fraction) => {
          const pixels = context.getImageData(Math.floor(fraction * canvas.width), 0, 1, canvas.height).data
          let painted = 0
          for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1
          return painted
        })""",
        wave,
        fractions,
    )


def assert_nothing_refused(browser: Browser) -> None:
    """Nothing the page did was refused by its Content-Security-Policy (Chrome says so in the console)."""
    assert not [line for line in browser.console() if "Content Security Policy" in line]


def click_at(browser: Browser, element: WebElement, fraction: float) -> None:
    """A real mouse click at `fraction` of the element's width, halfway down (offsets are from its middle)."""
    offset = round((fraction - 0.5) * element.rect["width"])
    ActionChains(browser.driver).move_to_element_with_offset(element, offset, 0).click().perform()


def test_the_waveform_shows_the_sound_and_a_click_on_it_seeks_the_player(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    start = "2024-05-01T06:00:00"
    put(proc.url, start, generate(tmp_path / "tone.mp3", MP3, TONE).read_bytes(), MP3.type)
    item = analysed(proc.url, start)
    assert item["analysis"] == "done", item
    facts = item["audio"]
    [silence] = facts["silences"]
    browser = browsers(proc)
    browser.open(f"/#event/{MORNING}")
    browser.wait(lambda: row(browser, start), what="the record's row")

    # Its facts in words: the duration first, the bytes second, then the loudness and the silence.
    meta = row(browser, start).find_element("css selector", ".meta")
    assert meta.text.startswith(f"0:10 · {item['size'] / 1000:.1f} kB · {facts['loudness']:.1f} LUFS · ")
    assert abs(facts["loudness"] - -20) < 1.5  # a -20 dBFS sine in two channels: about -20 LUFS
    assert "silence at 0:04–0:07" in meta.text and "audio/mpeg" in meta.text
    assert not row(browser, start).find_element("css selector", ".analysis").is_displayed()

    # The waveform: drawn where the tone is, a hairline in the silence, which is marked over it.
    wave = row(browser, start).find_element("css selector", ".wave")
    browser.wait(lambda: wave.get_attribute("data-drawn") == item["etag"], what="the waveform drawn")
    height = browser.js("return arguments[0].querySelector('canvas').height", wave)
    tone = drawn_columns(browser, wave, [0.05, 0.2, 0.35, 0.75, 0.95])
    quiet = drawn_columns(browser, wave, [0.45, 0.55, 0.65])
    assert min(tone) >= 0.8 * height and max(quiet) <= 3, (height, tone, quiet)
    box = wave.rect
    [mark] = wave.find_elements("css selector", ".silence")
    assert mark.is_displayed()
    assert abs(mark.rect["x"] - box["x"] - silence["start"] / facts["duration"] * box["width"]) <= 2
    assert abs(mark.rect["width"] - (silence["end"] - silence["start"]) / facts["duration"] * box["width"]) <= 2
    assert abs(silence["start"] - 4) < 0.3 and abs(silence["end"] - 7) < 0.3
    assert "silence at 0:04–0:07" in wave.get_attribute("aria-label")

    # A click at 3/4 of its width seeks the player there (it has loaded nothing yet: it will start there)...
    assert player(browser, start, "audio.paused && audio.currentTime === 0")
    click_at(browser, wave, 0.75)
    browser.wait(lambda: abs(player(browser, start, "audio.currentTime") - 0.75 * facts["duration"]) < 0.5,
                 what="the player at 3/4")  # fmt: skip
    assert player(browser, start, "audio.paused")  # a seek, not a play: the player's own button plays
    # ...and it plays from there (Chrome's `played` ranges begin at 0 after such a seek: read its clock instead), and
    # the play position follows on the waveform.
    first = player(browser, start, "audio.play().then(() => audio.currentTime)")
    assert abs(first - 0.75 * facts["duration"]) < 0.5, first
    browser.wait(lambda: player(browser, start, "audio.currentTime") > first + 0.5, timeout=20, what="playing on")
    shown, heard = browser.js(
        """const head = arguments[0].querySelector('.head'), audio = arguments[1]
        const box = arguments[0].getBoundingClientRect()
        return [(head.getBoundingClientRect().left + 1 - box.left) / box.width, audio.currentTime]""",
        wave,
        row(browser, start).find_element("css selector", "audio"),
    )
    assert abs(shown - heard / facts["duration"]) < 0.05, (shown, heard)

    # A drag from 1/5 to 1/2 leaves the player at 1/2.
    player(browser, start, "audio.pause()")
    width = wave.rect["width"]
    (ActionChains(browser.driver).move_to_element_with_offset(wave, round(-0.3 * width), 0).click_and_hold()
     .move_by_offset(round(0.15 * width), 0).move_by_offset(round(0.15 * width), 0).release().perform())  # fmt: skip
    browser.wait(lambda: abs(player(browser, start, "audio.currentTime") - 0.5 * facts["duration"]) < 0.5,
                 what="the player at 1/2 after the drag")  # fmt: skip
    played = browser.js("return parseFloat(arguments[0].querySelector('.played').style.width)", wave)  # per cent
    assert abs(played - 100 * player(browser, start, "audio.currentTime") / facts["duration"]) < 1, played

    # At a phone's width the waveform fits the screen and is drawn again at its new width.
    browser.driver.set_window_size(390, 844)
    browser.wait(lambda: browser.js("const c = arguments[0].querySelector('canvas');"
                                    "return c.width === Math.round(c.clientWidth * devicePixelRatio)", wave),
                 what="the waveform drawn at the phone's width")  # fmt: skip
    assert browser.js("return document.documentElement.scrollWidth <= window.innerWidth")
    assert min(drawn_columns(browser, wave, [0.05, 0.35, 0.95])) >= 0.8 * browser.js(
        "return arguments[0].querySelector('canvas').height", wave)
    # A finger's tap at 1/4 seeks there too.
    browser.js("arguments[0].scrollIntoView({block: 'center'})", wave)
    box = browser.js("const b = arguments[0].getBoundingClientRect(); return [b.left, b.top, b.width, b.height]", wave)
    point = {"x": box[0] + 0.25 * box[2], "y": box[1] + box[3] / 2}
    for kind, points in (("touchStart", [point]), ("touchEnd", [])):
        browser.driver.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    browser.wait(lambda: abs(player(browser, start, "audio.currentTime") - 0.25 * facts["duration"]) < 0.5,
                 what="the player at 1/4 after a tap")  # fmt: skip

    # The peaks came once, from the listing's version, and a reload revalidates them with its ETag.
    peaks = f"{proc.url}/records/{MORNING}/{start}/peaks"
    assert [r["method"] for r in browser.collect() if r["url"] == peaks] == ["GET"]
    browser.driver.refresh()
    browser.wait(lambda: row(browser, start).find_element("css selector", ".wave").get_attribute("data-drawn"),
                 what="the waveform drawn after a reload")  # fmt: skip
    again = [r for r in browser.collect() if r["url"] == peaks]
    assert len(again) == 2 and again[1]["headers"].get("if-none-match") == item["etag"], again
    assert f"GET /records/{MORNING}/{start}/peaks 304" in proc.log
    assert_nothing_refused(browser)


def test_analyses_show_as_they_end_with_durations_and_states(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service()
    assert requests.put(f"{proc.url}/records/{MORNING}", json={"title": "Morning show"}, timeout=10).ok
    browser = browsers(proc, width=1280, height=1500)
    browser.open(f"/#event/{MORNING}")
    browser.wait(lambda: browser.find("#records-empty").is_displayed(), what="the empty event")
    browser.js("window.sameDocument = true")

    uploads = {
        "2024-05-03T06:00:00": (show(tmp_path / "news.mp3", 95, (40, 52)).read_bytes(), "audio/mpeg"),
        "2024-05-02T06:00:00": (show(tmp_path / "show.mp3", 185, None).read_bytes(), "audio/mpeg"),
        "2024-05-01T06:00:00": (generate(tmp_path / "tone.wav", FORMATS[4], TONE).read_bytes(), "audio/wav"),
        "2024-04-30T06:00:00": (os.urandom(200_000), "audio/mpeg"),  # not audio
    }
    for start, (body, kind) in uploads.items():
        put(proc.url, start, body, kind)
    durations = {"2024-05-03T06:00:00": "1:35", "2024-05-02T06:00:00": "3:05", "2024-05-01T06:00:00": "0:10"}
    for start, duration in durations.items():  # from record-analyzed on /sse: nothing reloads
        browser.wait(lambda: row(browser, start).find_element("css selector", ".duration").text == duration,
                     timeout=ANALYSIS, what=f"the duration of {start}")  # fmt: skip
        etag = row(browser, start).get_attribute("data-etag")
        browser.wait(lambda: row(browser, start).find_element("css selector", ".wave").get_attribute("data-drawn")
                     == etag, what=f"the waveform of {start}")  # fmt: skip
    not_audio = row(browser, "2024-04-30T06:00:00")
    browser.wait(lambda: not_audio.get_attribute("data-analysis") == "unsupported", timeout=ANALYSIS,
                 what="the analysis of the bytes that are not audio")  # fmt: skip
    assert "not audio the service can read" in not_audio.find_element("css selector", ".analysis").text
    assert not not_audio.find_element("css selector", ".wave").is_displayed()
    assert not_audio.find_element("css selector", ".meta").text.startswith("200.0 kB · audio/mpeg")
    assert "silence at 0:40–0:52" in row(browser, "2024-05-03T06:00:00").text
    assert browser.js("return window.sameDocument") is True

    # One of them playing from a third of the way, for the picture (docs/room-audio.png).
    news = row(browser, "2024-05-03T06:00:00")
    click_at(browser, news.find_element("css selector", ".wave"), 0.3)
    assert player(browser, "2024-05-03T06:00:00", "audio.play().then(() => true)")
    browser.wait(lambda: player(browser, "2024-05-03T06:00:00", "audio.currentTime") > 30, what="the news playing")
    browser.screenshot("room-audio.png")  # docs/room-audio.png
    player(browser, "2024-05-03T06:00:00", "audio.pause()")

    browser.driver.set_window_size(390, 844)
    browser.js("arguments[0].scrollIntoView()", browser.find("#records-list"))
    browser.wait(lambda: browser.js("return [...document.querySelectorAll('.wave:not([hidden]) canvas')].every((c) =>"
                                    " c.width === Math.round(c.clientWidth * devicePixelRatio))"),
                 what="the waveforms drawn at the phone's width")  # fmt: skip
    assert browser.js("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.screenshot("room-audio-phone.png")  # docs/room-audio-phone.png

    # The events list gives the event's total duration (what the analyses found: 95 + 185 + 10 s).
    browser.driver.set_window_size(1280, 1500)
    browser.find("#back").click()
    browser.wait(lambda: browser.find("#events-body .duration").text == "4:50", what="the event's total duration")
    browser.driver.set_window_size(390, 844)
    assert browser.js("return document.documentElement.scrollWidth <= window.innerWidth")
    assert_nothing_refused(browser)


def test_records_not_analysed_yet_say_so(service, browsers, tmp_path: Path) -> None:  # noqa: ANN001
    proc = service("--analysis-workers", "0")  # nothing is analysed: every record stays pending
    start = "2024-05-01T06:00:00"
    wav = generate(tmp_path / "tone.wav", FORMATS[4], TONE).read_bytes()
    put(proc.url, start, wav, "audio/wav")
    browser = browsers(proc)
    browser.open("/")
    browser.wait(lambda: browser.find("#events-body .duration").text == "—", what="the event without a duration")
    browser.open(f"/#event/{MORNING}")
    browser.wait(lambda: row(browser, start), what="the record's row")
    item = row(browser, start)
    assert "Measuring the audio" in item.find_element("css selector", ".analysis").text
    assert not item.find_element("css selector", ".wave").is_displayed()
    assert not item.find_elements("css selector", ".meta .duration")
    assert item.find_element("css selector", ".meta").text.startswith(f"{len(wav) / 1000:.1f} kB · audio/wav")
    assert not [r for r in browser.collect() if r["url"].endswith("/peaks")]  # no waveform asked for
