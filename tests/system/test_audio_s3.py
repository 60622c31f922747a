"""The analysis of a record in S3 by a real `tornado-records` process (SeaweedFS, real ffprobe and ffmpeg): the
programs read the object through the analysis's relay on the loopback, and nothing on their command lines (which
every user of the machine can read) names the object, its store or a credential; the relay answers no one without
the secret of the programs' environment (which only the service's user can read), and is gone with the analysis."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from support.audio import FORMATS, Tone, children, generate
from support.records import EVENT, record_url
from support.waiting import wait_until

FLAC = FORMATS[3]
START = "2024-03-01T08:00:00"


def analysis_of(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/records/{EVENT}?limit=10", timeout=10) as response:
        return next(r for r in json.load(response)["records"] if r["start"] == START)


def environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def ask(port: int, credentials: str | None) -> bytes:
    """What the relay at `port` answers a GET of its first 16 bytes through it as a proxy, with these credentials."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        basic = base64.b64encode((credentials or "").encode()).decode()
        auth = f"Proxy-Authorization: Basic {basic}\r\n" if credentials else ""
        sock.sendall(f"GET http://content.invalid/analysis HTTP/1.1\r\nHost: content.invalid\r\nRange: bytes=0-15\r\n"
                     f"{auth}\r\n".encode())  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("engine", ["s3"], indirect=True)
def test_no_command_line_of_the_analysis_names_the_object_and_its_relay_answers_only_its_programs(
    service, engine, s3_env, tmp_path
):
    # ten minutes of FLAC: its decode takes long enough to catch each program the analysis runs
    path = generate(tmp_path / "long.flac", FLAC, Tone(duration=600.0, silence=(300.0, 330.0)))
    svc = service()
    request = urllib.request.Request(svc.url + record_url(EVENT, START), data=path.read_bytes(), method="PUT",
                                     headers={"Content-Type": FLAC.type})  # fmt: skip
    assert urllib.request.urlopen(request, timeout=60).status == 204
    seen: dict[int, tuple[str, list[str], dict[str, str], int]] = {}

    def look() -> bool:
        """Each ffprobe and ffmpeg of the service, as it runs: its arguments, environment and that's mode."""
        for pid, name in children(svc.proc.pid):
            if pid not in seen:
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                    seen[pid] = (name, argv, environ(pid), os.stat(f"/proc/{pid}/environ").st_mode)
                except (OSError, ValueError):
                    pass  # it ended meanwhile
        return "ffmpeg" in {name for name, *_ in seen.values()}

    assert wait_until(look, timeout=60), f"no ffmpeg caught: {seen}"
    ffmpeg = next(pid for pid, (name, *_) in seen.items() if name == "ffmpeg")
    proxy = urllib.parse.urlsplit(seen[ffmpeg][2]["http_proxy"])
    # while the decode runs: a local user without the relay's secret is refused, its programs are answered
    assert ask(proxy.port, None).startswith(b"HTTP/1.1 407 ")
    assert ask(proxy.port, "records:guessed").startswith(b"HTTP/1.1 407 ")
    answer = ask(proxy.port, f"{proxy.username}:{proxy.password}")
    assert answer.startswith(b"HTTP/1.1 206 ") and answer.endswith(path.read_bytes()[:16])
    assert wait_until(lambda: (look() and analysis_of(svc.url)["analysis"] != "pending"), timeout=120)

    bucket, prefix = engine["blobs"].removeprefix("s3://").split("/", 1)
    endpoint = urllib.parse.urlsplit(s3_env["AWS_ENDPOINT_URL"]).netloc
    store_keys = [s3_env["AWS_ACCESS_KEY_ID"], s3_env["AWS_SECRET_ACCESS_KEY"]]
    for name, argv, env, mode in seen.values():
        line = " ".join(argv)
        for named in ("X-Amz", "Signature", "Credential", bucket, prefix, endpoint, proxy.password, *store_keys):
            assert named not in line, (name, named, argv)
        assert "http://content.invalid/analysis" in argv
        assert stat.S_IMODE(mode) == 0o400 and env["http_proxy"].startswith("http://records:")  # its user's alone
        assert not set(store_keys) & set(env.values())
    item = analysis_of(svc.url)
    assert item["analysis"] == "done" and abs(item["audio"]["duration"] - 600.0) <= 0.1, item
    assert item["audio"]["format"] == "flac"
    [silence] = item["audio"]["silences"]
    assert abs(silence["start"] - 300.0) <= 0.3 and abs(silence["end"] - 330.0) <= 0.3
    with pytest.raises(ConnectionRefusedError):  # the relay ended with the analysis
        ask(proxy.port, f"{proxy.username}:{proxy.password}")
    assert "Traceback" not in svc.log
