"""Clips from a real `tornado-records` process: of Ogg/Opus as Liquidsoap writes it (its own Ogg muxer and Opus
encoder), and the README's curl example run as written. What a clip must hold is support/clips.py's
`assert_clip_of`: the asked length within 0.1 s, the staircase's pitch of the asked second at its start, the source's
codec and bitrate."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import requests

from support.clips import MP3, OPUS, WAV, assert_clip_of, first_step, seconds_of, staircase, step_at, step_heard
from support.components import require
from support.paths import REPO
from support.records import EVENT

START = "2024-01-01T00:00:00"
ANALYSIS = 300.0  # seconds the analysis of three minutes may take on a busy machine (ffmpeg runs at nice 19)


def put(url: str, body: bytes, kind: str) -> None:
    answer = requests.put(f"{url}/records/{EVENT}/{START}", data=body, headers={"Content-Type": kind}, timeout=60)
    assert answer.status_code == 204, answer.text


def liquidsoap_opus(tmp_path: Path, seconds: float) -> Path:
    """The staircase encoded by Liquidsoap's own Ogg/Opus encoder (not in real time), as its `output.file` writes it
    (pages of about a second)."""
    source = staircase(tmp_path / "stairs.wav", WAV, seconds)
    path = tmp_path / "liquidsoap.opus"
    script = tmp_path / "encode.liq"
    script.write_text(
        "settings.init.allow_root.set(true)\n"  # CI runs as root; liquidsoap refuses that unless told
        # drop_metadata: Liquidsoap's Ogg encoder begins a new chained bitstream at each metadata, and the file's
        # tags come 40 ms in, leaving a first bitstream of one packet that ffmpeg 5.1 cannot read past (it refuses a
        # new bitstream before it has seen audio: "failed to create or replace stream"); docs/api.md, Clips
        f"radio = drop_metadata(once(single({json.dumps(str(source))})))\n"
        'clock.assign_new(sync="none", [radio])\n'
        f"output.file(fallible=true, on_stop=shutdown, %ogg(%opus(bitrate=96, samplerate=48000, channels=2)), "
        f"{json.dumps(str(path))}, radio)\n"
    )
    done = subprocess.run([require("liquidsoap"), str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and path.stat().st_size > 0, done.stdout[-3000:] + done.stderr[-3000:]
    return path


def test_a_clip_of_liquidsoaps_ogg_opus_is_cut_at_packets(service, tmp_path):
    proc = service()
    source = liquidsoap_opus(tmp_path, 30.0)
    put(proc.url, source.read_bytes(), OPUS.type)
    for start, end in ((12.4, 17.4), (3.55, 4.05), (20.7, 29.2)):  # inside a page of about a second, and across
        answer = requests.get(f"{proc.url}/records/{EVENT}/{START}/clip", params={"from": start, "to": end},
                              timeout=60)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "audio/ogg"
        assert answer.headers["Content-Disposition"].endswith('.opus"')
        assert_clip_of(answer.content, source, start, end - start, tmp_path)


def test_the_readme_clip_example_runs_as_written(service, tmp_path):
    proc = service()
    source = staircase(tmp_path / "stairs.opus", OPUS, 100.0)
    put(proc.url, source.read_bytes(), OPUS.type)
    [command] = re.findall(r"^curl .*/clip\?.*$", (REPO / "README.md").read_text(), re.MULTILINE)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", "-c", command.replace("localhost:10700", f"127.0.0.1:{proc.port}")], cwd=work,
                          capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [saved] = work.iterdir()
    assert saved.name == f"{EVENT} 2024-01-01T00.00.00 1m00s-1m30s.opus"
    clip = saved.read_bytes()
    assert abs(seconds_of(clip) - 30.0) <= 0.1 and first_step(clip) == step_at(60.0)


def test_a_clip_of_ten_minutes_from_an_hour_of_mp3_keeps_its_frames(service, tmp_path):
    proc = service("--analysis-workers", "0")
    short = staircase(tmp_path / "stairs.mp3", MP3, 60.0, rate=44100)
    hour = tmp_path / "hour.mp3"  # the minute repeated (a stream copy, quick to make)
    subprocess.run([require("ffmpeg"), "-v", "error", "-stream_loop", "59", "-i", str(short), "-c", "copy", str(hour)],
                   check=True)  # fmt: skip
    put(proc.url, hour.read_bytes(), MP3.type)
    answer = requests.get(f"{proc.url}/records/{EVENT}/{START}/clip", params={"from": "25:00.3", "to": "35:00.3"},
                          timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    # each minute of the hour is a little longer than 60 s (the encoder's padding, repeated): the step heard at
    # 25:00.3 is read from the hour itself, decoded from its start
    assert_clip_of(answer.content, hour, 1500.3, 600.0, tmp_path, step=step_heard(hour, 1500.3))


def test_a_clip_of_an_mp3_as_a_live_recorder_streams_it_is_cut_at_the_asked_audio(service, tmp_path):
    """An MP3 without an `Info` frame (a live recorder cannot go back to write one), whose analysis is done: the
    service seeks it by its bitrate, which the analysis shows constant, and the clip still starts at the asked
    audio (read from the file itself, decoded from its start) and lasts the asked length."""
    proc = service()
    short = staircase(tmp_path / "stairs.mp3", MP3, 60.0, rate=44100)
    live = tmp_path / "live.mp3"  # three minutes, as ffmpeg streams them: no Info frame
    subprocess.run([require("ffmpeg"), "-v", "error", "-stream_loop", "2", "-i", str(short), "-c", "copy",
                    "-write_xing", "0", str(live)], check=True)  # fmt: skip
    put(proc.url, live.read_bytes(), MP3.type)
    deadline = time.monotonic() + ANALYSIS
    while (item := requests.get(f"{proc.url}/records/{EVENT}", timeout=10).json()["records"][0])["analysis"] == "pending":
        assert time.monotonic() < deadline, f"the analysis is still pending after {ANALYSIS} s"
        time.sleep(0.2)
    assert item["analysis"] == "done" and item["audio"]["bitrate"] == 128000
    for start, end in ((100.3, 130.3), (2.6, 3.4), (150.05, 179.0)):
        answer = requests.get(f"{proc.url}/records/{EVENT}/{START}/clip", params={"from": start, "to": end},
                              timeout=60)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert_clip_of(answer.content, live, start, end - start, tmp_path, step=step_heard(live, start))
