"""The clients of the figures: transfers with curl (an upload, a download, a tus PATCH, several at once), loads with
wrk, and the small requests made with http.client."""

from __future__ import annotations

import dataclasses
import http.client
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from harness import BenchError, Server
from table import MB


@dataclasses.dataclass(frozen=True)
class Transfer:
    """What curl reports of one transfer."""

    status: int
    size: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / MB


@dataclasses.dataclass(frozen=True)
class Pending:
    """A curl transfer under way: `size` bytes of body to send (an upload) or to receive (a download)."""

    proc: subprocess.Popen
    size: int
    download: bool


def curl(size: int, download: bool, *args: str) -> Pending:
    """Start curl on one transfer; `finished` reads its outcome."""
    proc = subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Pending(proc, size, download)


def put(url: str, path: Path) -> Pending:
    """Start a chunked upload of a file, as a recorder sends a broadcast of unknown length."""
    headers = ("-H", "Transfer-Encoding: chunked", "-H", "Content-Type: audio/ogg")
    return curl(path.stat().st_size, False, "-T", str(path), *headers, url)


def get(url: str, size: int) -> Pending:
    """Start a download of `size` bytes, discarding them."""
    return curl(size, True, url)


def finished(transfer: Pending) -> Transfer:
    """The outcome of a transfer; BenchError unless it succeeded with a 2xx (and a download had the size expected)."""
    out, err = transfer.proc.communicate()
    fields = out.split()
    if transfer.proc.returncode != 0 or len(fields) != 3 or not fields[0].startswith("2"):
        raise BenchError(f"curl {transfer.proc.args[-1]} failed: {out.strip()} {err.strip()}")
    if transfer.download and int(fields[1]) != transfer.size:
        raise BenchError(f"curl {transfer.proc.args[-1]}: {fields[1]} bytes received, expected {transfer.size}")
    return Transfer(int(fields[0]), transfer.size, float(fields[2]))


def fetch(url: str, size: int) -> Transfer:
    """Download a URL with curl and wait for it."""
    return finished(get(url, size))


def upload(url: str, path: Path) -> Transfer:
    """Upload a file with curl and wait for it."""
    return finished(put(url, path))


def at_once(put_urls: list[str], get_urls: list[str], source: Path, size: int) -> float:
    """Aggregate MB/s of uploads of `source` to `put_urls` and downloads of `size` bytes from `get_urls`, at once."""
    began = time.monotonic()
    transfers = [put(url, source) for url in put_urls] + [get(url, size) for url in get_urls]
    moved = sum(finished(transfer).size for transfer in transfers)
    return moved / (time.monotonic() - began) / MB


def tus_upload(url: str, path: Path) -> Transfer:
    """A resumable upload of a file to the record at `url`, as a tus client makes it: its creation, then one PATCH of
    the whole file (a Content-Length body) with curl; the PATCH's rate."""
    parts = urllib.parse.urlsplit(url)
    size = path.stat().st_size
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", parts.path, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
        answer = connection.getresponse()
        answer.read()
        if answer.status != 201:
            raise BenchError(f"POST {parts.path} (tus creation): {answer.status}")
        location = answer.getheader("Location", "")
    finally:
        connection.close()
    headers = ("-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
               "-H", "Content-Type: application/offset+octet-stream")  # fmt: skip
    return finished(curl(size, False, "-X", "PATCH", "-T", str(path), *headers, urllib.parse.urljoin(url, location)))


@dataclasses.dataclass(frozen=True)
class Load:
    """What wrk reports: requests per second, 99th percentile latency (s), and errors (timeouts, socket errors)."""

    rps: float
    p99: float
    errors: int


_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(url: str, threads: int, connections: int, seconds: int) -> Load:
    """Run wrk against a URL and read its summary."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    if not (p99 and rps):
        raise BenchError(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    if errors:
        print(f"  wrk {url}: {errors} errors or timeouts (10 s) besides the latencies it counts", file=sys.stderr)
    return Load(float(rps.group(1)), float(p99.group(1)) * _UNIT_SECONDS[p99.group(2)], errors)


def status_of(url: str) -> int:
    """The status of a GET (headers only; the body, if any, is not read)."""
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    conn = http.client.HTTPConnection(match.group(1), int(match.group(2)), timeout=10)
    try:
        conn.request("GET", match.group(3))
        return conn.getresponse().status
    finally:
        conn.close()


def put_small(server: Server, path: str) -> float:
    """Upload a 1 KiB record; returns the monotonic time its answer arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("PUT", path, body=b"x" * 1024, headers={"Content-Type": "audio/ogg"})
        answer = conn.getresponse()
        answer.read()
        answered = time.monotonic()
    finally:
        conn.close()
    if answer.status // 100 != 2:
        raise BenchError(f"PUT {path}: {answer.status}")
    return answered
