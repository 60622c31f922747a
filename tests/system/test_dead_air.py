"""Live dead air (issue 25): a real recorder streams a tone, then silence, then the tone again, in real time with
`?append=true`; `dead-air` comes while it still streams, soon after the silence has lasted --dead-air seconds, with
where it began, and `dead-air-over` once the sound is back, with how long it lasted. A takeover keeps the watch (one
per record, not per request), every live format is decoded as it arrives, a type that cannot be is said in the log
and recorded all the same, `--dead-air 0` watches nothing, and a shutdown ends the watch's ffmpeg."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from support.appender import Appender, body_of, receiving
from support.audio import LIVE_FORMATS, Broadcast, children, decoded_seconds, record_live, stream_bytes
from support.event_schema import conforms
from support.records import EVENT, START, record_url
from support.sse import events_until
from support.waiting import wait_until

OPUS, MP3 = LIVE_FORMATS[0], LIVE_FORMATS[2]
URL = record_url() + "?append=true"
QUIET = ("--analysis-workers", "0")  # no analysis beside the watch: its ffmpeg is the only one


def of_type(seen: list, kind: str) -> list:
    """The events of a type seen so far (as `events_until(..., timed=True)` fills the list: time, event)."""
    return [(at, event) for at, event in list(seen) if event["type"] == kind]


def watches(svc) -> list[int]:
    """The service's ffmpeg processes (with the analysis off: its watches)."""
    return [pid for pid, _ in children(svc.proc.pid, ("ffmpeg",))]


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("fmt", [OPUS, MP3], ids=lambda f: f.name)
def test_dead_air_comes_while_a_live_recorder_still_streams_and_ends_when_the_sound_is_back(service, fmt) -> None:
    dead_air, silence = 4.0, (5.0, 13.0)
    svc = service("--dead-air", str(dead_air), *QUIET)
    stop = threading.Event()
    seen = events_until(svc.url, stop, timed=True)
    recorder, began = record_live(svc.url + URL, fmt, Broadcast(17.0, (silence,)))
    assert wait_until(lambda: of_type(seen, "dead-air"), timeout=silence[0] + dead_air + 10), svc.log
    streaming = recorder.poll() is None
    [(arrived, event)] = of_type(seen, "dead-air")
    delay = arrived - began - silence[0]  # since the silence began (the recorder sends in real time from its start)
    at = conforms(event)["data"]["at"]
    assert wait_until(lambda: of_type(seen, "dead-air-over"), timeout=20), svc.log
    [(over_arrived, over)] = of_type(seen, "dead-air-over")
    lasted = conforms(over)["data"]["lasted"]
    print(f"{fmt.name}: dead-air {delay:.2f} s after the silence began (--dead-air {dead_air:g}), at {at} "
          f"(silence from {silence[0]}); dead-air-over {over_arrived - began - silence[1]:.2f} s after the sound came "
          f"back, lasted {lasted} (silence of {silence[1] - silence[0]:g} s)")  # fmt: skip
    assert streaming, "dead-air came after the recorder had ended"
    assert dead_air <= delay <= dead_air + 3, delay
    assert abs(at - silence[0]) <= 1, at
    assert event["data"]["event"] == EVENT and event["data"]["start"] == START
    assert over_arrived - began >= silence[1] and over["data"]["at"] == at and "ended" not in over["data"]
    assert abs(lasted - (silence[1] - silence[0])) <= 1.5, lasted
    assert recorder.wait(timeout=30) == 0, recorder.stderr.read()
    assert wait_until(lambda: not watches(svc)), "the watch's ffmpeg outlived the recording"
    assert [e["type"] for _, e in seen].count("dead-air") == 1
    stop.set()


@pytest.mark.engines("sqlite")
def test_a_takeover_keeps_the_watch_and_its_clock(service) -> None:
    """The live recorder ends in the middle of the silence (3 s of it heard, --dead-air 4) and a standby of the same
    broadcast takes over: the same watch (one ffmpeg for the record) goes on with the standby's bytes, and hears one
    silence, from where it began."""
    dead_air, silence = 4.0, (3.0, 11.0)
    svc = service("--dead-air", str(dead_air), "--append-takeover", "2", *QUIET)
    stop = threading.Event()
    seen = events_until(svc.url, stop, timed=True)
    live, began = record_live(svc.url + URL, OPUS, Broadcast(6.0, (silence,)))  # it ends at 6 s, silent since 3
    assert wait_until(lambda: receiving(svc.url)), svc.log  # its first bytes came: it is the live one
    standby, _ = record_live(svc.url + URL, OPUS, Broadcast(14.0, (silence,)))
    assert wait_until(lambda: of_type(seen, "recorder-standby"), timeout=10), svc.log
    assert len(watches(svc)) == 1  # one watch for the record, not one per request
    assert live.wait(timeout=30) == 0, live.stderr.read()
    assert wait_until(lambda: of_type(seen, "dead-air"), timeout=15), svc.log
    [(arrived, event)] = of_type(seen, "dead-air")
    assert standby.poll() is None
    # the live one brought 3 s of the silence: its 4 s were heard in the standby's bytes, after the takeover
    assert wait_until(lambda: of_type(seen, "recorder-takeover")), svc.log
    assert wait_until(lambda: of_type(seen, "dead-air-over"), timeout=20), svc.log
    [(_, over)] = of_type(seen, "dead-air-over")
    assert standby.wait(timeout=30) == 0, standby.stderr.read()
    # the takeover's cut goes by when bytes arrived, and a recorder's Ogg muxer holds its pages back a second or two:
    # the record holds that much of the broadcast twice, here in the silence
    repeated = decoded_seconds(body_of(svc.url)) - 14.0
    at, lasted = event["data"]["at"], over["data"]["lasted"]
    print(f"takeover: dead-air {arrived - began - silence[0]:.2f} s after the silence began, at {at}, lasted {lasted} "
          f"({repeated:.2f} s of the silence repeated by the takeover's cut)")  # fmt: skip
    assert abs(at - silence[0]) <= 1, at
    assert abs(lasted - (silence[1] - silence[0] + repeated)) <= 1.5, lasted
    assert [e["type"] for _, e in seen].count("dead-air") == 1
    stop.set()


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("fmt", LIVE_FORMATS, ids=lambda f: f.name)
def test_every_live_format_is_watched_in_the_time_of_its_audio(service, fmt) -> None:
    """Bytes sent faster than real time are watched all the same: the times are the audio's. A recording that ends
    while silent gets its dead-air-over then, `ended`."""
    broadcast = Broadcast(9.0, ((1.0, 4.0), (5.0, 9.0)))  # it ends silent
    data = stream_bytes(fmt, broadcast)
    svc = service("--dead-air", "2", *QUIET)
    stop = threading.Event()
    seen = events_until(svc.url, stop, timed=True)
    appender = Appender(svc.url, URL, {"Content-Type": fmt.type})
    appender.send(data)
    assert wait_until(lambda: len(of_type(seen, "dead-air")) == 2, timeout=20), (svc.log, seen)
    assert watches(svc)  # while its request is open
    assert appender.end().status == 204
    assert wait_until(lambda: len(of_type(seen, "dead-air-over")) == 2, timeout=20), (svc.log, seen)
    first, second = (conforms(e)["data"] for _, e in of_type(seen, "dead-air"))
    back, ended = (conforms(e)["data"] for _, e in of_type(seen, "dead-air-over"))
    assert abs(first["at"] - 1.0) <= 0.3 and abs(second["at"] - 5.0) <= 0.3, (first, second)
    assert abs(back["lasted"] - 3.0) <= 0.3 and "ended" not in back, back
    assert ended["ended"] is True and abs(ended["lasted"] - 4.0) <= 0.3 and ended["at"] == second["at"], ended
    assert wait_until(lambda: not watches(svc))
    assert "Traceback" not in svc.log
    stop.set()


def test_after_a_break_the_times_go_on_from_the_records_audio(service) -> None:
    """A recorder back after its request ended sends a new stream; its silence's `at` counts the record's audio
    before it (the previous watch's clock). On every engine: the watch reads the pieces' files wherever the
    recordings are kept."""
    svc = service("--dead-air", "2", *QUIET)
    stop = threading.Event()
    seen = events_until(svc.url, stop, timed=True)
    before = Appender(svc.url, URL, {"Content-Type": OPUS.type})
    before.send(stream_bytes(OPUS, Broadcast(3.0)))
    assert before.end().status == 204
    # the record's audio before the break is known once its watch has decoded all of it and ended: on a busy
    # machine the new stream could otherwise begin while the first watch's clock is still behind
    assert wait_until(lambda: not watches(svc), timeout=30), svc.log
    after = Appender(svc.url, URL, {"Content-Type": OPUS.type})
    after.send(stream_bytes(OPUS, Broadcast(6.0, ((1.0, 4.0),))))
    assert wait_until(lambda: of_type(seen, "dead-air-over"), timeout=20), (svc.log, seen)
    [(_, event)] = of_type(seen, "dead-air")
    assert abs(event["data"]["at"] - 4.0) <= 0.3, event  # 3 s before, then 1 s into the new stream
    assert after.end().status == 204
    stop.set()


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("dead_air", ["2", "0"])
def test_a_type_that_cannot_be_decoded_live_and_dead_air_0_are_not_watched(service, dead_air) -> None:
    svc = service("--dead-air", dead_air, *QUIET)
    unwatched = Appender(svc.url, URL, {"Content-Type": "audio/mp4"})
    unwatched.send(b"\0\0\0\x20ftypM4A " + b"\0" * 4000)
    watched = Appender(svc.url, record_url(start="2024-01-01T01:00:00") + "?append=true",
                       {"Content-Type": OPUS.type})  # fmt: skip
    data = stream_bytes(OPUS, Broadcast(3.0, ((0.0, 3.0),)))
    watched.send(data)
    # both arrived: a watch begins at an append's first byte
    assert wait_until(lambda: sorted(receiving(svc.url)) == sorted([4012, len(data)]))
    assert len(watches(svc)) == (0 if dead_air == "0" else 1), svc.log  # the Opus recording's only
    assert unwatched.end().status == 204 and watched.end().status == 204
    lines = [line for line in svc.lines if "not watched for dead air" in line]
    if dead_air == "0":
        assert lines == []
    else:
        [line] = lines
        assert "audio/mp4" in line and "MP4/M4A cannot be" in line and EVENT in line
    assert "Traceback" not in svc.log


@pytest.mark.engines("sqlite")
def test_at_most_16_live_recordings_are_watched_at_once(service) -> None:
    svc = service("--dead-air", "2", *QUIET)
    data = stream_bytes(OPUS, Broadcast(1.0))
    appenders = [Appender(svc.url, record_url(start=f"2024-01-01T{hour:02d}:00:00") + "?append=true",
                          {"Content-Type": OPUS.type}) for hour in range(17)]  # fmt: skip
    for appender in appenders:
        appender.send(data)
    assert wait_until(lambda: receiving(svc.url) == [len(data)] * 17), svc.log
    assert len(watches(svc)) == 16
    assert wait_until(lambda: "not watched for dead air" in svc.log), svc.log
    [line] = [line for line in svc.lines if "not watched for dead air" in line]
    assert "16 are watched already" in line
    assert all(appender.end().status == 204 for appender in appenders)
    assert wait_until(lambda: not watches(svc))


@pytest.mark.engines("sqlite")
def test_a_stalled_ffmpeg_never_holds_the_recording_back(service) -> None:
    """The watch's ffmpeg stopped (SIGSTOP) while a minute of WAV arrives: the recording goes on at its own speed,
    nothing waits for the watch, and once ffmpeg goes on, what it could not take is dropped, and said."""
    wav = LIVE_FORMATS[5]
    data = stream_bytes(wav, Broadcast(60.0))  # 48 kHz, 2 x 16 bits: 11.5 MB, twice what 30 s of it are
    svc = service("--dead-air", "2", *QUIET)
    appender = Appender(svc.url, URL, {"Content-Type": wav.type})
    appender.send(data[:100_000])
    found = wait_until(lambda: watches(svc))
    assert found, svc.log
    os.kill(found[0], signal.SIGSTOP)
    try:
        appender.send(data[100_000:])
        assert appender.end().status == 204  # all of it in the record, while the watch's ffmpeg stands still
        assert body_of(svc.url) == data
    finally:
        os.kill(found[0], signal.SIGCONT)
    assert wait_until(lambda: "bytes dropped" in svc.log, timeout=20), svc.log
    assert wait_until(lambda: not watches(svc), timeout=20)
    assert "Traceback" not in svc.log


@pytest.mark.engines("sqlite")
def test_a_shutdown_during_a_watch_ends_its_ffmpeg(service) -> None:
    svc = service("--dead-air", "2", *QUIET)
    appender = Appender(svc.url, URL, {"Content-Type": OPUS.type})
    appender.send(stream_bytes(OPUS, Broadcast(2.0)))
    found = wait_until(lambda: watches(svc))
    assert found, svc.log
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in found), "the watch's ffmpeg outlived the service"
    assert "Traceback" not in svc.log and "no longer watched" not in svc.log
    appender.drop()


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
