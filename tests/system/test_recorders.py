"""A real live encoder records into the service: ffmpeg streams Opus with chunked PUT, directly and through nginx."""

import json
import re
import subprocess

import pytest

from support.components import require
from support.paths import REPO
from support.records import EVENT, START, files_in
from support.waiting import wait_until

SECONDS = 4


def record_with_ffmpeg(base_url: str, data_dir) -> None:
    """ffmpeg encodes a sine as Opus in real time (-re) and PUTs it chunked; while it runs, the upload is on disk."""
    ffmpeg = subprocess.Popen(
        [
            require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}",
            "-c:a", "libopus", "-f", "ogg",
            "-method", "PUT", "-chunked_post", "1", "-content_type", "audio/ogg",
            f"{base_url}/records/{EVENT}/{START}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # Streamed as it is recorded: part of it is already in tmp/ while ffmpeg is still encoding.
    growing = wait_until(lambda: any((data_dir / "tmp" / name).stat().st_size for name in files_in(data_dir / "tmp")))
    assert growing and ffmpeg.poll() is None, "the recording did not reach the service while it was being made"
    assert ffmpeg.wait(timeout=60) == 0, ffmpeg.stderr.read()


def probe(url: str, tmp_path) -> dict:
    path = tmp_path / "downloaded.ogg"
    subprocess.run(["curl", "-sf", "-o", str(path), url], check=True)
    result = subprocess.run(
        [require("ffprobe"), "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("through_nginx", [False, True], ids=["direct", "nginx"])
def test_ffmpeg_records_live_opus(service, nginx, tmp_path, through_nginx):
    require("curl")
    proc = service()
    base_url = nginx(proc).url if through_nginx else proc.url
    record_with_ffmpeg(base_url, tmp_path / "data")
    info = probe(f"{proc.url}/records/{EVENT}/{START}", tmp_path)
    assert [stream["codec_name"] for stream in info["streams"]] == ["opus"]
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.1
    listed = json.loads(subprocess.run(["curl", "-sf", f"{proc.url}/records/{EVENT}"], capture_output=True).stdout)
    assert listed["records"][0]["type"] == "audio/ogg"


def test_liquidsoap_records_through_curl_as_the_readme_shows(service, tmp_path):
    require("curl")
    proc = service()
    readme = (REPO / "docs" / "recording.md").read_text()  # where the README sends recorders
    output = re.search(r"^output\.external\(.*\)$", readme, re.MULTILINE).group(0)
    script = tmp_path / "record.liq"
    script.write_text(
        "settings.init.allow_root.set(true)\n"  # CI runs as root; liquidsoap refuses that unless told
        f"radio = once(sine(duration={float(SECONDS)}, 440.))\n"
        "clock.assign_new(sync='none', [radio])\n"
        + output.replace("localhost:10700", f"127.0.0.1:{proc.port}").replace(
            "output.external(", "output.external(on_stop=shutdown, "
        )
        + "\n"
    )
    result = subprocess.run([require("liquidsoap"), str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    info = probe(f"{proc.url}/records/{EVENT}/{START}", tmp_path)
    assert [stream["codec_name"] for stream in info["streams"]] == ["opus"]
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.1
