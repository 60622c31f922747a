"""Real live recorders in append mode, over links that break: the stored audio holds the broadcast from its first
second, in order, less only the seconds the recorder was cut off.

The broadcast is a staircase of tones, 300 Hz in its first second, 400 Hz in its second, and so on, played in real
time. Decoding what the service stored and reading each quarter second's pitch tells which second of the broadcast
it is, so the test sees what was kept, what was lost, and in which order the pieces were joined. The recorders run
the examples of docs/recording.md as written there (only the source and the address changed), through `BreakingProxy`.
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support.breaking_proxy import BreakingProxy
from support.components import require
from support.event_schema import conforms
from support.paths import REPO
from support.ports import free_port
from support.records import EVENT
from support.sse import events_until
from support.waiting import wait_until

SECONDS = 14  # the broadcast's length
BASE_HZ = 300
STEP_HZ = 100
RATE = 8000  # the decoded audio's sampling rate
WINDOW = RATE // 4  # a quarter second
RESTART = 2.0  # the recorders' delay before they connect again (restart_delay, reopen_delay, the loop's sleep)
IN_FLIGHT = 1.5  # seconds of audio a break may take with it on the recorder's side (an Ogg page is about 1 s)
IDLE = 3  # --upload-idle-timeout of the service under test


def udp_bound(port: int) -> bool:
    """Whether a UDP socket of this machine is bound to `port` (a recorder listening for its feed)."""
    rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(row.split()[1].endswith(f":{port:04X}") for row in rows)


def readme_block(pattern: str) -> str:
    """The example of docs/recording.md that matches `pattern` (a regular expression; its group, if it has one)."""
    found = re.search(pattern, (REPO / "docs" / "recording.md").read_text(), re.MULTILINE)
    return found.group(found.lastindex or 0)


@pytest.fixture(scope="module")
def staircase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "staircase.wav"
    tone = f"sin(2*PI*({BASE_HZ}+{STEP_HZ}*floor(t))*t)"
    subprocess.run(
        [require("ffmpeg"), "-v", "error", "-f", "lavfi", "-i", f"aevalsrc={tone}:s=44100:d={SECONDS}", str(path)],
        check=True,
    )
    return path


def seconds_heard(audio: bytes) -> tuple[float, list[int]]:
    """The decoded length of a recording (ffmpeg must decode it without failing), and for each quarter second whose
    pitch is one of the staircase's, which second of the broadcast it is."""
    decoded = subprocess.run(
        [require("ffmpeg"), "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"],
        input=audio,
        capture_output=True,
    )
    assert decoded.returncode == 0, decoded.stderr.decode()[-2000:]
    samples = array.array("h", decoded.stdout)
    heard = []
    for at in range(0, len(samples) - WINDOW + 1, WINDOW):
        window = samples[at : at + WINDOW]
        crossings = sum(1 for a, b in zip(window, window[1:]) if (a < 0) != (b < 0))
        hertz = crossings * RATE / WINDOW / 2
        second = round((hertz - BASE_HZ) / STEP_HZ)
        if 0 <= second < SECONDS and abs(hertz - BASE_HZ - STEP_HZ * second) < 25:
            heard.append(second)
    return len(samples) / RATE, heard


def lost_bound(proxy: BreakingProxy, documented: float) -> float:
    """How many seconds of the broadcast a record through `proxy`'s breaks may lack: what the recorders' restart
    delays give (`documented`), or where the machine was slower, the seconds the recorder brought nothing after the
    breaks as the proxy measured them, plus IN_FLIGHT for each break (what was on its way when it broke, and the
    encoder's page that a restart drops)."""
    return max(documented, proxy.outage() + IN_FLIGHT * len(proxy.done))


def assert_broadcast_kept(url: str, lost_at_most: float) -> float:
    """The record holds the broadcast from its first second to its last, in order, nothing twice, and at most
    `lost_at_most` seconds short; returns how many seconds it holds."""
    with urllib.request.urlopen(url) as answer:
        audio = answer.read()
        etag, digest = answer.headers["ETag"], answer.headers["Repr-Digest"]
    assert etag == f'"{hashlib.sha256(audio).hexdigest()}"', "the validators are not those of the bytes sent"
    assert digest == f"sha-256=:{base64.b64encode(hashlib.sha256(audio).digest()).decode()}:"
    duration, heard = seconds_heard(audio)
    print(f"kept {duration:.2f} s of a {SECONDS} s broadcast ({len(audio)} bytes; it may lack {lost_at_most:.2f} s); "
          f"seconds heard: {heard}")
    assert heard, "no tone of the broadcast in the record"
    assert heard[0] == 0, f"the record does not begin with the broadcast's first second: {heard}"
    assert heard[-1] == SECONDS - 1, f"the record does not end with the broadcast's last second: {heard}"
    assert heard == sorted(heard), f"pieces joined out of order: {heard}"
    for second in set(heard):
        assert heard.count(second) <= 5, f"second {second} is in the record more than once: {heard}"
    assert SECONDS - lost_at_most <= duration <= SECONDS + 1, (duration, heard)
    return duration


# -- the recorders, as docs/recording.md shows them -------------------------------------------------------------------


def liquidsoap(tmp_path: Path, output: str, staircase: Path, address: str, name: str = "record") -> subprocess.Popen:
    """Liquidsoap playing the staircase in real time into the `output` line of docs/recording.md, sent to `address`."""
    script = tmp_path / f"{name}.liq"
    script.write_text(
        "settings.init.allow_root.set(true)\n"  # CI runs as root; liquidsoap refuses that unless told
        f"radio = once(single({json.dumps(str(staircase))}))\n"
        + re.sub(r"^(output\.\w+)\(", r"\1(on_stop=shutdown, ", output).replace("localhost:10700", address)
        + "\n"
    )
    return subprocess.Popen(
        [require("liquidsoap"), str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(recorder: subprocess.Popen, timeout: float = 120) -> str:
    try:
        output, _ = recorder.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        recorder.kill()
        output, _ = recorder.communicate()
        raise AssertionError(f"the recorder did not end within {timeout} s:\n{output[-6000:]}") from None
    assert recorder.returncode == 0, output[-3000:]
    return output


OUTPUT_URL = r"^output\.url\(.*\)$"
OUTPUT_EXTERNAL = r"^output\.external\(.*reopen_on_error.*\)$"
FFMPEG_LOOP = r"(?s)^until ffmpeg .*?\ndo sleep 2; done$"
STANDBY_LOOP = r"(?s)^### A standby recorder$.*?^(until ffmpeg .*?\ndo sleep 2; done)$"  # run on both machines


def start_service(service, *flags: str):  # noqa: ANN001
    return service("--upload-idle-timeout", str(IDLE), *flags)


def record_url(proc, start: str = "2024-01-01T00:00:00") -> str:  # noqa: ANN001
    return f"{proc.url}/records/{EVENT}/{start}"


# -- Liquidsoap output.url, MP3 ----------------------------------------------------------------------------------


def test_liquidsoap_output_url_five_clean_broadcasts_are_whole(service, tmp_path, staircase):
    proc = start_service(service)
    line = readme_block(OUTPUT_URL)
    recorders = [
        liquidsoap(tmp_path, line.replace("2024-01-01T00:00:00", f"2024-01-0{day}T00:00:00"), staircase,
                   f"127.0.0.1:{proc.port}", name=f"day{day}")
        for day in range(1, 6)
    ]  # fmt: skip
    for recorder in recorders:
        finished(recorder)
    for day in range(1, 6):
        assert_broadcast_kept(record_url(proc, f"2024-01-0{day}T00:00:00"), lost_at_most=1.0)


@pytest.mark.parametrize(
    "breaks, lost_at_most",
    [
        ([(4.0, "reset")], RESTART + 2),
        ([(3.0, "reset"), (8.0, "stall")], RESTART + 2 + IDLE + RESTART + 2),
    ],
    ids=["reset-once", "reset-then-stall"],
)
def test_liquidsoap_output_url_through_breaks_keeps_all_that_arrived(service, tmp_path, staircase, breaks,
                                                                      lost_at_most):  # fmt: skip
    proc = start_service(service)
    proxy = BreakingProxy(proc.port, breaks)
    stop = threading.Event()
    events = events_until(proc.url, stop)
    try:
        output = finished(liquidsoap(tmp_path, readme_block(OUTPUT_URL), staircase, f"127.0.0.1:{proxy.port}"))
    finally:
        proxy.close()
    assert [how for _, how, hit in proxy.done if hit] == [how for _, how in breaks], (proxy.done, output[-2000:])
    assert "reconnect" in output.lower() or "restart" in output.lower(), output[-2000:]
    assert_broadcast_kept(record_url(proc), lost_bound(proxy, lost_at_most))
    # the dashboard saw each break, what was kept, the recorder coming back, and the record growing
    assert wait_until(lambda: sum(e["type"] == "upload-completed" for e in events) >= 1)
    stop.set()
    for event in events:
        conforms(event)  # as records.yaml describes them
    types = [e["type"] for e in events]
    interrupted = [e["data"] for e in events if e["type"] == "upload-interrupted"]
    assert len(interrupted) >= len(breaks), types
    assert all(e["bytes"] > 0 and e["reason"] in ("client-gone", "idle-timeout") for e in interrupted), interrupted
    if any(how == "stall" for _, how in breaks):
        assert any(e["reason"] == "idle-timeout" for e in interrupted), interrupted
    assert types.count("upload-resumed") >= len(breaks), types
    sizes = [e["data"]["record"]["size"] for e in events if e["type"] in ("record-created", "record-updated")]
    assert len(sizes) >= 4 and sizes == sorted(sizes), sizes


def test_a_dead_connection_not_yet_noticed_goes_before_the_new_one(service, tmp_path, staircase):
    """The recorder's side is reset, the service's stays open and silent: the recorder streams on a new connection
    while the old one is still open; the old piece (the head of the broadcast) must still come first."""
    proc = start_service(service)
    proxy = BreakingProxy(proc.port, [(4.0, "half-dead")])
    stop = threading.Event()
    events = events_until(proc.url, stop)
    try:
        finished(liquidsoap(tmp_path, readme_block(OUTPUT_URL), staircase, f"127.0.0.1:{proxy.port}"))
    finally:
        proxy.close()
    assert [hit for _, _, hit in proxy.done] == [1]
    assert_broadcast_kept(record_url(proc), lost_bound(proxy, RESTART + 2))
    stop.set()
    order = [(e["type"], e["data"].get("reason")) for e in events if e["type"].startswith("upload-")]
    # the new connection began before the old one was found dead (by the idle timeout)
    assert order.index(("upload-resumed", None)) < order.index(("upload-interrupted", "idle-timeout")), order


def test_liquidsoap_through_nginx_with_a_break(service, nginx, tmp_path, staircase):
    proc = start_service(service, "--accel-redirect", "/_blobs/")
    front = nginx(proc)
    proxy = BreakingProxy(front.port, [(4.0, "reset")])
    try:
        finished(liquidsoap(tmp_path, readme_block(OUTPUT_URL), staircase, f"127.0.0.1:{proxy.port}"))
    finally:
        proxy.close()
    assert [hit for _, _, hit in proxy.done] == [1]
    # read back through nginx: a record of several pieces is sent by the service itself, with its own headers
    duration = assert_broadcast_kept(f"{front.url}/records/{EVENT}/2024-01-01T00:00:00", lost_bound(proxy, RESTART + 2))
    assert duration > 0


# -- Liquidsoap output.external + curl, Ogg/Opus ------------------------------------------------------------------


def test_liquidsoap_output_external_curl_opus_through_a_break(service, tmp_path, staircase):
    proc = start_service(service)
    proxy = BreakingProxy(proc.port, [(4.0, "reset")])
    try:
        output = finished(liquidsoap(tmp_path, readme_block(OUTPUT_EXTERNAL), staircase, f"127.0.0.1:{proxy.port}"))
    finally:
        proxy.close()
    assert [hit for _, _, hit in proxy.done] == [1], output[-2000:]
    assert_broadcast_kept(record_url(proc), lost_bound(proxy, RESTART + 2))
    with urllib.request.urlopen(f"{proc.url}/records/{EVENT}") as answer:
        assert json.load(answer)["records"][0]["type"] == "audio/ogg"


# -- ffmpeg restarted by a loop -----------------------------------------------------------------------------------


def test_ffmpeg_restarted_after_a_break(service, tmp_path, staircase):
    """The loop around ffmpeg of docs/recording.md, its input a live stream (the staircase sent in real time over UDP)."""
    proc = start_service(service)
    proxy = BreakingProxy(proc.port, [(4.0, "reset")])
    port = free_port(udp=True)
    live = f"-f s16le -ar 44100 -ac 1 -i udp://127.0.0.1:{port}?timeout=3000000"
    command = readme_block(FFMPEG_LOOP).replace("-f alsa -i default", live)
    command = command.replace("localhost:10700", f"127.0.0.1:{proxy.port}")
    loop = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_until(lambda: udp_bound(port) or loop.poll() is not None)  # it listens before the feed begins
    assert loop.poll() is None, loop.communicate()[0][-3000:]
    feed = subprocess.run(
        [require("ffmpeg"), "-v", "error", "-re", "-i", str(staircase), "-f", "s16le", "-ar", "44100", "-ac", "1",
         f"udp://127.0.0.1:{port}?pkt_size=1316"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert feed.returncode == 0, feed.stderr
    try:
        output, _ = loop.communicate(timeout=30)  # its input ends: ffmpeg ends, exit 0, and the loop with it
    finally:
        proxy.close()
        if loop.poll() is None:
            loop.send_signal(signal.SIGKILL)
    assert loop.returncode == 0, output[-3000:]
    assert [hit for _, _, hit in proxy.done] == [1], output[-2000:]
    assert_broadcast_kept(record_url(proc), lost_bound(proxy, RESTART + 2))


# -- takeover: a silent dead link, and a standby recorder (issue 22) ---------------------------------------------


def tone_file(directory: Path, base: int, seconds: int) -> Path:
    """A staircase of tones from `base` Hz, `seconds` long (another recorder's feed tells itself apart by pitch)."""
    path = directory / f"staircase-{base}-{seconds}.wav"
    tone = f"sin(2*PI*({base}+{STEP_HZ}*floor(t))*t)"
    subprocess.run([require("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", f"aevalsrc={tone}:s=44100:d={seconds}",
                    str(path)], check=True)  # fmt: skip
    return path


def heard_from(audio: bytes, bases: list[int]) -> tuple[float, list[tuple[int, int]]]:
    """The decoded length, and for each quarter second whose pitch is a step of one of the staircases from `bases`,
    (which staircase, which second)."""
    decoded = subprocess.run(
        [require("ffmpeg"), "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"],
        input=audio, capture_output=True,
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr.decode()[-2000:]
    samples = array.array("h", decoded.stdout)
    heard = []
    half = WINDOW // 2

    def step(window: array.array) -> tuple[int, int] | None:
        hertz = sum(1 for a, b in zip(window, window[1:]) if (a < 0) != (b < 0)) * RATE / len(window) / 2
        for index, base in enumerate(bases):
            second = round((hertz - base) / STEP_HZ)
            if 0 <= second < 20 and abs(hertz - base - STEP_HZ * second) < 25:
                return index, second
        return None

    for at in range(0, len(samples) - WINDOW + 1, WINDOW):
        # both halves of the quarter second the same step: not a window across a join, whose mixed pitch is no step
        if (found := step(samples[at : at + half])) is not None and found == step(samples[at + half : at + WINDOW]):
            heard.append(found)
    return len(samples) / RATE, heard


def ffmpeg_loop(port: int, address: str, ends_after: float = 3.0, block: str = FFMPEG_LOOP) -> subprocess.Popen:
    """The loop around ffmpeg of docs/recording.md, its input the live stream on UDP `port` (which it takes as ended
    once nothing came for `ends_after` seconds), sending to `address`."""
    live = f"-f s16le -ar 44100 -ac 1 -i udp://127.0.0.1:{port}?timeout={int(ends_after * 1e6)}"
    command = readme_block(block).replace("-f alsa -i default", live).replace("localhost:10700", address)
    loop = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    assert wait_until(lambda: udp_bound(port) or loop.poll() is not None)  # it listens before the feed begins
    assert loop.poll() is None, loop.communicate()[0][-3000:]
    return loop


def feed(files: list[Path], ports: list[int]) -> subprocess.Popen:
    """One live broadcast per file, sent in real time and in step to the recorders on `ports`."""
    command = [require("ffmpeg"), "-v", "error"]
    for path in files:
        command += ["-re", "-i", str(path)]
    for index, port in enumerate(ports):
        command += ["-map", f"{index}:a", "-f", "s16le", "-ar", "44100", "-ac", "1",
                    f"udp://127.0.0.1:{port}?pkt_size=1316"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop_loop(loop: subprocess.Popen) -> None:
    if loop.poll() is None:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()


def parts_of(proc) -> list[dict]:  # noqa: ANN001
    try:
        with urllib.request.urlopen(record_url(proc) + "/parts") as answer:
            return json.load(answer)["parts"]
    except urllib.error.HTTPError:
        return []


def broke_at(proxy: BreakingProxy) -> float:
    """The monotonic time of the proxy's first break."""
    assert wait_until(lambda: proxy.done, timeout=30), "the link was never broken"
    return proxy._first + proxy.done[0][0]


TAKEOVER = 5.0  # the default of --append-takeover


@pytest.mark.parametrize("recorder", ["liquidsoap", "ffmpeg"])
def test_a_silent_dead_link_is_taken_over_within_the_takeover_time(service, tmp_path, staircase, recorder):
    """Default settings: the recorder's side of its link is reset, the service's left open and silent; the recorder
    comes back on a new connection, a standby of its own dead one, and its bytes are in the record within
    --append-takeover + 1 s of the break (not after --upload-idle-timeout's 60 s)."""
    proc = service()
    proxy = BreakingProxy(proc.port, [(4.0, "half-dead")])
    address = f"127.0.0.1:{proxy.port}"
    if recorder == "liquidsoap":
        running = liquidsoap(tmp_path, readme_block(OUTPUT_URL), staircase, address)
        sending = None
    else:
        port = free_port(udp=True)
        running = ffmpeg_loop(port, address)
        sending = feed([staircase], [port])
    try:
        broke = broke_at(proxy)
        assert wait_until(lambda: len(parts_of(proc)) >= 2, timeout=30), parts_of(proc)
        taken = time.monotonic() - broke
        print(f"{recorder}: the new connection's bytes were in the record {taken:.2f} s after the break")
        assert taken < TAKEOVER + 1
        if sending is not None:
            assert sending.wait(timeout=60) == 0, sending.stderr.read()
        finished(running, timeout=60)
    finally:
        proxy.close()
        if running.poll() is None:
            stop_loop(running) if recorder == "ffmpeg" else running.kill()
    first, second = parts_of(proc)[:2]
    assert first["ended"] == "superseded" and second["offset"] == first["length"], parts_of(proc)
    assert_broadcast_kept(record_url(proc), lost_bound(proxy, RESTART + 2))


def recorders_in_step(tmp_path: Path, proc, live_seconds: int, standby_seconds: int, break_at: float | None):  # noqa: ANN001, ANN201
    """Two recorders (the ffmpeg loop of docs/recording.md, twice) on one record, each fed its own staircase in step:
    the live one (low tones) through a proxy, connected first; the standby (high tones) straight. With `break_at`, the
    live one's link dies silently then, for good. Returns the stored audio, what was heard, the events, the parts."""
    low, high = tone_file(tmp_path, BASE_HZ, live_seconds), tone_file(tmp_path, 2000, standby_seconds)
    proxy = BreakingProxy(proc.port, [(break_at, "half-dead")] if break_at else [])
    stop = threading.Event()
    events = events_until(proc.url, stop)
    ports = [free_port(udp=True), free_port(udp=True)]
    live = ffmpeg_loop(ports[0], f"127.0.0.1:{proxy.port}", ends_after=0.5, block=STANDBY_LOOP)  # (ends soon after)
    standby = ffmpeg_loop(ports[1], f"127.0.0.1:{proc.port}", block=STANDBY_LOOP)
    # the live recorder is first in line: it sends a moment of silence before the broadcast begins for both, in step
    silence = subprocess.Popen([require("ffmpeg"), "-v", "error", "-re", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
                                "-t", "20", "-f", "s16le", "-ac", "1", f"udp://127.0.0.1:{ports[0]}?pkt_size=1316"])  # fmt: skip
    assert wait_until(lambda: proxy.links and proxy.links[0].sent > 4096, timeout=20)
    silence.kill()
    silence.wait()
    sending = feed([low, high], ports)
    try:
        if break_at:
            broke_at(proxy)
            proxy.refuse_new()  # the live recorder's network is down for good
        assert sending.wait(timeout=60) == 0, sending.stderr.read()
        finished(standby, timeout=30)
    finally:
        stop_loop(live)
        stop_loop(standby)
        proxy.close()
    assert wait_until(lambda: not [u for u in json.load(urllib.request.urlopen(proc.url + "/uploads"))["uploads"]
                                   if u["state"] == "receiving"], timeout=30)  # fmt: skip
    stop.set()
    with urllib.request.urlopen(record_url(proc)) as answer:
        audio = answer.read()
    duration, heard = heard_from(audio, [BASE_HZ, 2000])
    print(f"kept {duration:.2f} s; heard (recorder, second): {heard}")
    return duration, heard, events, parts_of(proc)


def assert_one_then_the_other(heard: list[tuple[int, int]], last_second: int, lost_at_most: int = 1) -> None:
    """The live recorder's tones from the broadcast's first second, then the standby's to its last: one switch, in
    order, no second of the broadcast twice, and at most `lost_at_most` seconds missing at the switch."""
    recorders = [recorder for recorder, _ in heard]
    switch = recorders.index(1)
    assert recorders == [0] * switch + [1] * (len(heard) - switch), f"interleaved: {heard}"
    seconds = [second for _, second in heard]
    assert seconds[0] == 0 and seconds[-1] == last_second, heard
    assert seconds == sorted(seconds), f"out of order: {heard}"
    for second in set(seconds):
        assert seconds.count(second) <= 5, f"second {second} twice: {heard}"
    lost = seconds[switch] - seconds[switch - 1] - 1
    assert lost <= lost_at_most, f"{lost} s lost at the switch: {heard}"


def test_two_recorders_the_standby_takes_over_when_the_live_link_dies_silently(service, tmp_path):
    proc = service()
    duration, heard, events, parts = recorders_in_step(tmp_path, proc, SECONDS, SECONDS, break_at=6.0)
    assert_one_then_the_other(heard, SECONDS - 1)
    assert SECONDS - 1.5 <= duration <= SECONDS + 3  # (and the live one's moment of silence before)
    types = [e["type"] for e in events]
    assert "recorder-standby" in types, types
    takeover = next(e["data"] for e in events if e["type"] == "recorder-takeover")
    print(f"takeover: {takeover}; parts: {parts}")
    assert takeover["reason"] == "silent" and takeover["gap"] <= 1.0, takeover
    assert [p["ended"] for p in parts] == ["superseded", "completed"], parts
    for event in events:
        conforms(event)


def test_the_live_recorder_ends_and_the_standby_streams_on(service, tmp_path):
    proc = service()
    duration, heard, events, parts = recorders_in_step(tmp_path, proc, 8, SECONDS, break_at=None)
    # the live recorder's last bytes come after its input's end is noticed (0.5 s) and its encoder is flushed: the
    # standby's audio joins from then on
    assert_one_then_the_other(heard, SECONDS - 1, lost_at_most=2)
    assert SECONDS - 1.5 <= duration <= SECONDS + 3
    takeover = next(e["data"] for e in events if e["type"] == "recorder-takeover")
    print(f"takeover: {takeover}; parts: {parts}")
    assert takeover["reason"] == "ended", takeover
    assert [p["ended"] for p in parts] == ["completed", "completed"], parts


def test_kill_9_during_a_takeover_loses_nothing_that_arrived(service, tmp_path, staircase):
    """Liquidsoap's link dies silently; while its new connection stands by (before --append-takeover), the service is
    killed; started again on the same port, it joins every piece's bytes, and the recorder streams on."""
    port = free_port()
    proc = service("--port", str(port), "--append-takeover", "30")  # a takeover that never comes before the kill
    proxy = BreakingProxy(port, [(4.0, "half-dead")])
    recorder = liquidsoap(tmp_path, readme_block(OUTPUT_URL), staircase, f"127.0.0.1:{proxy.port}")
    try:
        broke_at(proxy)
        def standing_by() -> bool:  # the dead connection's piece, and the new one's with 16 KiB or more
            uploads = json.load(urllib.request.urlopen(proc.url + "/uploads"))["uploads"]
            return len(uploads) == 2 and uploads[-1]["bytes"] > 16384

        assert wait_until(standing_by, timeout=20)
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()
        again = service("--port", str(port), data_dir=proc.data_dir)
        finished(recorder, timeout=60)
    finally:
        proxy.close()
        if recorder.poll() is None:
            recorder.kill()
    parts = parts_of(again)
    print(f"parts after the restart: {parts}")
    assert [p["ended"] for p in parts[:2]] == ["restart", "restart"], parts
    assert_broadcast_kept(record_url(again), lost_at_most=2 * (RESTART + 2))
