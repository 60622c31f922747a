"""The audio analysis of a real `tornado-records` process: a restart during a pending analysis finishes it, records
stored before (by a service that analysed nothing) are analysed at start and by `tornado-records analyze` on every
engine, a live recording is analysed once its append request ends, and a service without ffmpeg starts with one
warning and leaves its records pending."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support.audio import FORMATS, Tone, children, generate
from support.components import require
from support.records import EVENT, record_url
from support.waiting import wait_until

WAV, MP3, FLAC = FORMATS[4], FORMATS[0], FORMATS[3]
COMMAND = str(Path(sys.executable).with_name("tornado-records"))


def put(base: str, start: str, path: Path, content_type: str) -> None:
    request = urllib.request.Request(base + record_url(EVENT, start), data=path.read_bytes(), method="PUT",
                                     headers={"Content-Type": content_type})  # fmt: skip
    assert urllib.request.urlopen(request, timeout=30).status == 204


def items(base: str) -> dict[str, dict]:
    with urllib.request.urlopen(f"{base}/records/{EVENT}?limit=1000", timeout=10) as response:
        return {r["start"]: r for r in json.load(response)["records"]}


def analysed(base: str, count: int, timeout: float = 90) -> dict[str, dict]:
    """The listing's items once `count` of them are no longer pending."""

    def done() -> dict[str, dict] | None:
        listed = items(base)
        return listed if sum(i["analysis"] != "pending" for i in listed.values()) >= count else None

    found = wait_until(done, timeout=timeout)
    assert found, f"not {count} analysed after {timeout} s: {items(base)}"
    return found


def ffmpeg_children(pid: int) -> list[str]:
    """The ffmpeg and ffprobe processes whose parent is `pid`."""
    return [name for _, name in children(pid)]


@pytest.mark.engines("sqlite")
def test_a_restart_during_a_pending_analysis_finishes_it(service, tmp_path):
    # twenty minutes of FLAC: its analysis takes long enough for the service to be stopped in the middle of it
    long = generate(tmp_path / "long.flac", FLAC, Tone(duration=1200.0, silence=(600.0, 660.0)))
    proc = service()
    put(proc.url, "2024-03-01T08:00:00", long, "audio/flac")
    assert wait_until(lambda: ffmpeg_children(proc.proc.pid), timeout=30), "no analysis began"
    assert items(proc.url)["2024-03-01T08:00:00"]["analysis"] == "pending"
    assert proc.stop() == 0  # SIGTERM: the analysis running is ended with the service, and stays pending
    assert "Traceback" not in proc.log
    again = service()
    item = analysed(again.url, 1, timeout=180)["2024-03-01T08:00:00"]
    assert item["analysis"] == "done" and abs(item["audio"]["duration"] - 1200.0) <= 0.1
    [silence] = item["audio"]["silences"]
    assert abs(silence["start"] - 600.0) <= 0.3 and abs(silence["end"] - 660.0) <= 0.3


def test_records_stored_before_are_analysed_by_the_command_and_at_start(service, engine, tmp_path):
    wav = generate(tmp_path / "tone.wav", WAV, Tone(duration=5.0, silence=(1.0, 3.5)))
    mp3 = generate(tmp_path / "tone.mp3", MP3, Tone(duration=4.0, silence=(10.0, 11.0)))
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(100_000))
    before = service("--analysis-workers", "0")  # as a service from before the analysis: it analyses nothing
    put(before.url, "2024-03-01T08:00:00", wav, "audio/wav")
    put(before.url, "2024-03-01T09:00:00", mp3, "audio/mpeg")
    put(before.url, "2024-03-01T10:00:00", noise, "audio/mpeg")
    put(before.url, "2024-03-01T11:00:00", wav, "audio/wav")
    assert {i["analysis"] for i in items(before.url).values()} == {"pending"}
    # the command, beside the live service, with the service's settings (its environment, as an operator runs it)
    on_engine = [f"--{name.replace('_', '-')}={value}" for name, value in engine.items()]
    result = subprocess.run([COMMAND, "analyze", "--data-dir", str(tmp_path / "data"), *on_engine],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("analysed 4 record(s)") and "3 done, 1 unsupported, 0 failed" in lines[-1]
    assert any("2024-03-01T09:00:00: done: mp3/mp3, 0:04.0" in line for line in lines), lines
    listed = items(before.url)  # the live service shows what the command found
    assert listed["2024-03-01T08:00:00"]["audio"]["silences"] == [{"start": 1.0, "end": 3.5}]
    assert listed["2024-03-01T10:00:00"]["analysis"] == "unsupported"
    # nothing left to do: a second run analyses nothing; --again all of them
    assert "analysed 0 record(s)" in subprocess.run([COMMAND, "analyze", "--data-dir", str(tmp_path / "data"),
                                                     *on_engine], capture_output=True, text=True).stdout  # fmt: skip
    # a record replaced while nothing analyses is pending again, and a start of a service that analyses does it
    put(before.url, "2024-03-01T11:00:00", mp3, "audio/mpeg")
    assert items(before.url)["2024-03-01T11:00:00"]["analysis"] == "pending"
    before.stop()
    after = service()
    item = wait_until(lambda: (i := items(after.url)["2024-03-01T11:00:00"])["analysis"] == "done" and i, timeout=60)
    assert item and item["audio"]["codec"] == "mp3"


@pytest.mark.engines("sqlite", "s3")  # on S3, its runs are objects that ffmpeg reads through the relay, not a copy
def test_a_live_recording_is_analysed_once_its_append_request_ends(service):
    proc = service()
    start = "2024-03-01T12:00:00"
    ffmpeg = subprocess.Popen(
        [
            require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "aevalsrc=if(between(t\\,1\\,3.5)\\,0\\,0.1*sin(2*PI*1000*t)):s=48000:d=5",
            "-c:a", "libopus", "-f", "ogg", "-method", "PUT", "-chunked_post", "1", "-content_type", "audio/ogg",
            f"{proc.url}{record_url(EVENT, start)}?append=true",
        ],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # while it streams, the record grows (joined every few seconds) and its analysis waits for the end
    assert wait_until(lambda: start in items(proc.url), timeout=20), "no join while streaming"
    assert ffmpeg.poll() is None and items(proc.url)[start]["analysis"] == "pending"
    assert ffmpeg.wait(timeout=60) == 0, ffmpeg.stderr.read()
    item = analysed(proc.url, 1)[start]
    assert item["analysis"] == "done" and item["audio"]["codec"] == "opus"
    assert abs(item["audio"]["duration"] - 5.0) <= 0.1
    [silence] = item["audio"]["silences"]
    assert abs(silence["start"] - 1.0) <= 0.3 and abs(silence["end"] - 3.5) <= 0.3


@pytest.mark.engines("sqlite")
def test_without_ffmpeg_the_service_starts_with_one_warning_and_records_stay_pending(service, tmp_path):
    wav = generate(tmp_path / "tone.wav", WAV, Tone(duration=2.0))
    bare = tmp_path / "bin"  # a PATH without ffmpeg and ffprobe
    bare.mkdir()
    proc = service(env={"PATH": str(bare)})
    put(proc.url, "2024-03-01T08:00:00", wav, "audio/wav")
    put(proc.url, "2024-03-01T09:00:00", wav, "audio/wav")
    assert wait_until(lambda: "not found" in proc.log, timeout=10)
    warnings = [line for line in proc.lines if "not found" in line]
    assert len(warnings) == 1 and "ffmpeg and ffprobe not found" in warnings[0] and "pending" in warnings[0]
    assert {i["analysis"] for i in items(proc.url).values()} == {"pending"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(proc.url + record_url(EVENT, "2024-03-01T08:00:00") + "/peaks", timeout=10)
    assert refused.value.code == 404 and "not analysed yet" in json.load(refused.value)["detail"]
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=30) == 0
    # once ffmpeg is there, the next start analyses them
    again = service()
    assert {i["analysis"] for i in analysed(again.url, 2).values()} == {"done"}
