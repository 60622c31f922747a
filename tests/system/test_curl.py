"""curl as its users use it, against a real `tornado-records` process: partial and resumed downloads, `-z`,
If-None-Match, uploads with and without `Expect: 100-continue`, and a chunked upload over the body limit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.components import require
from support.records import files_in, record_url

BODY = os.urandom(3 << 20)  # over 1 MiB, so that curl sends `Expect: 100-continue` with it


def curl(*args: str) -> subprocess.CompletedProcess:
    """Run curl (silent, errors shown, -v on stderr); its stdout is what `-w` writes."""
    return subprocess.run([require("curl"), "-sS", "-v", *args], capture_output=True, text=True, timeout=60)


def status(result: subprocess.CompletedProcess) -> int:
    return int(result.stdout.strip()[-3:])


@pytest.fixture
def served(service, tmp_path: Path):  # noqa: ANN201
    """A running service holding BODY as the record; its URL."""
    svc = service()
    source = tmp_path / "source.ogg"
    source.write_bytes(BODY)
    result = curl("-T", str(source), "-H", "Content-Type: audio/ogg", "-w", "%{http_code}", svc.url + record_url())
    assert status(result) == 204, result.stderr
    return svc.url + record_url()


def test_curl_range(served: str, tmp_path: Path) -> None:
    out = tmp_path / "part"
    result = curl("-r", "100-199", "-o", str(out), "-w", "%{http_code}", served)
    assert status(result) == 206
    assert out.read_bytes() == BODY[100:200]


def test_curl_resumes_a_partial_download(served: str, tmp_path: Path) -> None:
    out = tmp_path / "download.ogg"
    out.write_bytes(BODY[:123_457])  # what an interrupted download left
    result = curl("-C", "-", "-o", str(out), "-w", "%{http_code}", served)
    assert status(result) == 206, result.stderr
    assert "Range: bytes=123457-" in result.stderr
    assert out.read_bytes() == BODY


def test_curl_z_does_not_download_when_the_local_file_is_newer(served: str, tmp_path: Path) -> None:
    local = tmp_path / "local.ogg"
    local.write_bytes(b"my copy")
    future = os.path.getmtime(local) + 3600
    os.utime(local, (future, future))
    out = tmp_path / "out.ogg"
    result = curl("-z", str(local), "-o", str(out), "-w", "%{http_code}", served)
    assert "If-Modified-Since:" in result.stderr
    assert status(result) == 304
    assert not out.exists() or out.read_bytes() == b""
    # An older local file is replaced by a download.
    os.utime(local, (1_000_000_000, 1_000_000_000))
    result = curl("-z", str(local), "-o", str(out), "-w", "%{http_code}", served)
    assert status(result) == 200
    assert out.read_bytes() == BODY


def test_second_curl_with_if_none_match_gets_304(served: str, tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    out = tmp_path / "out.ogg"
    assert status(curl("-D", str(headers), "-o", str(out), "-w", "%{http_code}", served)) == 200
    etag = next(line[5:].strip() for line in headers.read_text().splitlines() if line.lower().startswith("etag:"))
    again = tmp_path / "again.ogg"
    result = curl("-H", f"If-None-Match: {etag}", "-o", str(again), "-w", "%{http_code}", served)
    assert status(result) == 304
    assert not again.exists() or again.read_bytes() == b""


@pytest.mark.parametrize("expect", [True, False])
def test_curl_upload_with_and_without_expect(service, tmp_path: Path, expect: bool) -> None:
    svc = service()
    source = tmp_path / "source.ogg"
    source.write_bytes(BODY)
    extra = [] if expect else ["-H", "Expect:"]
    result = curl("-T", str(source), *extra, "-w", "%{http_code}", svc.url + record_url())
    assert status(result) == 204, result.stderr
    assert ("Expect: 100-continue" in result.stderr) == expect
    assert ("HTTP/1.1 100" in result.stderr) == expect
    out = tmp_path / "out.ogg"
    assert status(curl("-o", str(out), "-w", "%{http_code}", svc.url + record_url())) == 200
    assert out.read_bytes() == BODY


def test_curl_chunked_upload_over_the_limit_is_413(service, tmp_path: Path) -> None:
    svc = service("--max-body-size", "100k")
    source = tmp_path / "source.ogg"
    source.write_bytes(BODY)
    result = curl("-T", str(source), "-H", "Transfer-Encoding: chunked", "-w", "%{http_code}", svc.url + record_url())
    assert "Transfer-Encoding: chunked" in result.stderr
    assert status(result) == 413, result.stderr[-2000:]
    assert status(curl("-o", os.devnull, "-w", "%{http_code}", svc.url + record_url())) == 404
    assert files_in(tmp_path / "data" / "tmp") == []
    assert files_in(tmp_path / "data" / "blobs") == []
