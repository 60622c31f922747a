"""A bounded soak of a real `tornado-records` process: mixed list/upload/download/delete/ping/SSE load at a fixed
concurrency for a fixed time, with the bounds the service promises (issue 6):

- zero errors: every answer is the one expected (uploads 204, downloads 200 with the bytes uploaded, listings that
  count what this client stored, deletes 204, pings 204, event streams 200 with events), and no traceback in the log;
- the peak RSS of the last quarter of the run is within 10 % of the peak of the first quarter (the run's quarters
  are counted after a warm-up at full load, `--warm-up` seconds, while the allocator's arenas and SQLite's page
  caches fill up to their steady size; the requests of the warm-up count for errors);
- open descriptors come back to their baseline once the clients have gone.

It prints its figures and exits 1 if a bound fails. Standard library only (asyncio, raw HTTP/1.1):

    python bench/soak.py --seconds 60 --concurrency 50 --warm-up 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RSS_GROWTH_PERCENT = 10  # the last quarter's peak RSS may exceed the first quarter's by this much at most
SAMPLE_EVERY = 0.2  # seconds between RSS and descriptor samples
STARTS = [f"2024-01-{day:02d}T{hour:02d}:00:00" for day in (1, 2) for hour in (0, 6, 12, 18)]
WEIGHTS = {"list": 25, "upload": 20, "download": 25, "delete": 10, "ping": 15, "sse": 5}
UPLOAD_SIZES = (1 << 10, 256 << 10)  # bytes, smallest and largest
SSE_LISTEN = 0.5  # seconds a short-lived event-stream client listens


class Unexpected(Exception):
    """An answer that is not the one the service promises."""


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", chunked: bool = False) -> Answer:
        """Send a request and read its whole answer."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\n{framing}\r\n\r\n".encode()
        self.writer.write(head + (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked and body else b"0\r\n\r\n" if chunked else body))
        answer = await read_answer(self.reader, method)
        if answer.headers.get("connection", "").lower() == "close":
            await self.close()
        return answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers (names lowercased) of the next answer."""
    raw = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = raw.decode("latin1").rstrip("\r\n").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers


async def read_answer(reader: asyncio.StreamReader, method: str) -> Answer:
    status, headers = await read_head(reader)
    length = 0 if method == "HEAD" or status in (204, 304) else int(headers.get("content-length", "0"))
    return Answer(status, headers, await reader.readexactly(length))


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body (empty at its end)."""
    size = int((await reader.readline()).strip(), 16)
    return (await reader.readexactly(size + 2))[:-2]


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Unexpected(what)


@dataclasses.dataclass
class Tally:
    """What the load did: requests by kind, errors (with the first few messages), events seen on streams."""

    requests: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    messages: list[str] = dataclasses.field(default_factory=list)
    events: int = 0

    def error(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] += 1
        if len(self.messages) < 10:
            self.messages.append(f"{kind}: {type(exc).__name__}: {exc}")


class Worker:
    """One client that owns one event and knows what it stored there, so that every answer has one right value."""

    def __init__(self, port: int, tally: Tally, rng: random.Random) -> None:
        self.port = port
        self.tally = tally
        self.rng = rng
        self.event = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.stored: dict[str, str] = {}  # start -> sha256 of the content
        self.client = Client(port)

    async def run(self, until: float) -> None:
        kinds, weights = zip(*WEIGHTS.items())
        while time.monotonic() < until:
            kind = self.rng.choices(kinds, weights)[0]
            if kind in ("download", "delete") and not self.stored:
                kind = "upload"
            try:
                await getattr(self, kind)()
                self.tally.requests[kind] += 1
            except (Unexpected, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.tally.error(kind, exc)
                await self.client.close()
        await self.client.close()

    def _path(self, start: str) -> str:
        return f"/records/{self.event}/{start}"

    async def upload(self) -> None:
        start = self.rng.choice(STARTS)
        body = self.rng.randbytes(self.rng.randint(*UPLOAD_SIZES))
        answer = await self.client.request("PUT", self._path(start), body, chunked=self.rng.random() < 0.5)
        expect(answer.status == 204, f"PUT answered {answer.status} {answer.body[:200]!r}")
        self.stored[start] = hashlib.sha256(body).hexdigest()

    async def download(self) -> None:
        start = self.rng.choice(sorted(self.stored))
        answer = await self.client.request("GET", self._path(start))
        expect(answer.status == 200, f"GET answered {answer.status} {answer.body[:200]!r}")
        expect(hashlib.sha256(answer.body).hexdigest() == self.stored[start], "GET gave other bytes than uploaded")

    async def delete(self) -> None:
        start = self.rng.choice(sorted(self.stored))
        answer = await self.client.request("DELETE", self._path(start))
        expect(answer.status == 204, f"DELETE answered {answer.status} {answer.body[:200]!r}")
        del self.stored[start]

    async def list(self) -> None:
        answer = await self.client.request("GET", f"/records/{self.event}?limit=100")
        expect(answer.status == 200, f"list answered {answer.status}")
        expect(b'"count": %d,' % len(self.stored) in answer.body, f"list counted other than stored: {answer.body[:100]!r}")

    async def ping(self) -> None:
        answer = await self.client.request("GET", "/ping")
        expect(answer.status == 204, f"ping answered {answer.status}")

    async def sse(self) -> None:
        """A short-lived subscriber: the head, the retry line, whatever comes for a moment, then it leaves."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET /sse HTTP/1.1\r\nHost: soak\r\n\r\n")
            status, headers = await read_head(reader)
            expect(status == 200 and headers.get("content-type") == "text/event-stream", f"/sse answered {status}")
            expect((await read_chunk(reader)).startswith(b"retry:"), "/sse did not begin with retry:")
            try:
                async with asyncio.timeout(SSE_LISTEN):
                    while True:
                        self.tally.events += (await read_chunk(reader)).count(b"\ndata: ")
            except TimeoutError:
                pass
        finally:
            writer.close()


async def listen(port: int, tally: Tally, stop: asyncio.Event) -> None:
    """A subscriber for the whole run, which must keep receiving events until the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /sse HTTP/1.1\r\nHost: soak\r\n\r\n")
    try:
        status, _ = await read_head(reader)
        expect(status == 200, f"/sse answered {status}")
        while not stop.is_set():
            chunk = await asyncio.wait_for(read_chunk(reader), 30)
            expect(chunk != b"", "an event stream ended during the run")
            tally.events += chunk.count(b"\ndata: ")
    except (Unexpected, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        tally.error("sse-listener", exc)
    finally:
        writer.close()


def rss_kib(pid: int) -> int:
    """The process's resident set size, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def descriptor_targets(pid: int) -> collections.Counter:
    """What the process's descriptors point to (socket:[…], files), counted."""
    targets = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        targets["socket" if target.startswith("socket:") else target] += 1
    return targets


async def sample(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append((time.monotonic(), rss_kib(pid)))
        await asyncio.sleep(SAMPLE_EVERY)


def quarter_peaks(samples: list[tuple[float, int]], begin: float, end: float) -> list[int]:
    """The peak RSS in each quarter of [begin, end)."""
    quarter = (end - begin) / 4
    peaks = [0] * 4
    for at, rss in samples:
        index = min(3, int((at - begin) / quarter)) if at >= begin else None
        if index is not None:
            peaks[index] = max(peaks[index], rss)
    return peaks


@dataclasses.dataclass
class Figures:
    seconds: float
    warm_up: float
    concurrency: int
    tally: Tally
    rss_peaks: list[int]
    fds_before: int
    fds_after: int
    fds_left: collections.Counter
    log_errors: list[str]

    @property
    def rss_growth(self) -> float:
        return self.rss_peaks[3] / self.rss_peaks[0] - 1

    def failures(self) -> list[str]:
        """The bounds that failed (none: the soak passed)."""
        failed = []
        if self.tally.errors or self.log_errors:
            failed.append(f"{sum(self.tally.errors.values())} errors, {len(self.log_errors)} error lines in the log")
        if self.rss_peaks[3] * 100 > self.rss_peaks[0] * (100 + RSS_GROWTH_PERCENT):
            failed.append(f"peak RSS grew {self.rss_growth:.1%} from the first quarter to the last")
        if self.fds_after > self.fds_before:
            failed.append(f"descriptors {self.fds_before} before, {self.fds_after} after")
        if not self.tally.events:
            failed.append("no event reached an event stream")
        return failed

    def report(self) -> str:
        total = sum(self.tally.requests.values())
        lines = [
            f"soak: {self.seconds:.0f} s (after {self.warm_up:.0f} s of warm-up) at concurrency {self.concurrency}: "
            f"{total} requests ({total / (self.seconds + self.warm_up):.0f}/s), {sum(self.tally.errors.values())} errors",
            "requests: " + ", ".join(f"{kind} {self.tally.requests[kind]}" for kind in WEIGHTS),
            f"events received on streams: {self.tally.events}",
            "peak RSS per quarter (MiB): " + ", ".join(f"{kib / 1024:.1f}" for kib in self.rss_peaks)
            + f" (last vs first: {self.rss_growth:+.1%}, bound +{RSS_GROWTH_PERCENT}%)",
            f"descriptors: {self.fds_before} before, {self.fds_after} after"
            + (f" (left open: {dict(self.fds_left)})" if self.fds_left else ""),
        ]
        lines += [f"error: {message}" for message in self.tally.messages + self.log_errors[:10]]
        failures = self.failures()
        lines.append("FAILED: " + "; ".join(failures) if failures else "PASSED")
        return "\n".join(lines)


async def warm_up(port: int) -> None:
    """One request of each kind, so that what the service opens once and keeps (the index's WAL file, opened at
    the first write) is part of the descriptors' baseline."""
    worker = Worker(port, Tally(), random.Random(0))
    for kind in ("upload", "download", "list", "delete", "ping", "sse"):
        await getattr(worker, kind)()
    await worker.client.close()


async def soak(
    port: int, pid: int, seconds: float, concurrency: int, seed: int, warm: float
) -> tuple[Tally, list[int], int, int, collections.Counter]:
    """Run the load; return the tally, the quarter peaks of RSS, the descriptors before and after, and what the
    descriptors left over point to."""
    tally = Tally()
    await warm_up(port)
    await asyncio.sleep(1)  # the warm-up's connections are closed on the server's side too
    fds_before = descriptors(pid)
    targets_before = descriptor_targets(pid)
    stop = asyncio.Event()
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample(pid, samples, stop))
    listeners = [asyncio.create_task(listen(port, tally, stop)) for _ in range(max(1, concurrency // 10))]
    begin = time.monotonic()
    workers = [Worker(port, tally, random.Random(seed * 1000 + n)) for n in range(concurrency)]
    await asyncio.gather(*(worker.run(begin + warm + seconds) for worker in workers))
    end = time.monotonic()
    begin += warm
    stop.set()
    await asyncio.gather(sampler, *listeners)
    deadline = time.monotonic() + 10
    while descriptors(pid) > fds_before and time.monotonic() < deadline:  # closes reach the server a little later
        await asyncio.sleep(0.1)
    return tally, quarter_peaks(samples, begin, end), fds_before, descriptors(pid), descriptor_targets(pid) - targets_before


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(data_dir: Path, log: Path, port: int) -> subprocess.Popen:
    """A real tornado-records on the port, logging warnings and errors only (not one line per request)."""
    command = [sys.executable, "-m", "tornado_records", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--log-level", "warning", "--sse-keepalive", "1"]
    command += ["--analysis-workers", "0"]  # the descriptors counted are the requests'; an analysis holds 3 a while
    proc = subprocess.Popen(command, stderr=log.open("w"), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"soak: tornado-records did not start:\n{log.read_text()}")


def log_errors(log: Path) -> list[str]:
    """The log lines that tell of a fault (a traceback or an error)."""
    return [line for line in log.read_text().splitlines() if "Traceback" in line or " ERROR " in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (default 60)")
    parser.add_argument("--concurrency", type=int, default=50, help="clients at once (default 50)")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds of load before the measured run (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' random choices")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="records-soak-") as tmp:
        log, port = Path(tmp) / "service.log", free_port()
        proc = start_service(Path(tmp) / "data", log, port)
        try:
            results = asyncio.run(soak(port, proc.pid, args.seconds, args.concurrency, args.seed, args.warm_up))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        figures = Figures(args.seconds, args.warm_up, args.concurrency, *results, log_errors(log))
    print(figures.report())
    return 1 if figures.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
