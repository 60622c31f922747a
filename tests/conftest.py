"""Fixtures: a real app on a real socket (pytest-tornado), and real `tornado-records` processes."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import secrets
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, NoReturn

import botocore.session
import psycopg
import pytest
import tornado.httpclient

from tornado_records.app import close_app, make_app, make_server
from tornado_records.config import build_config

# The real engines (PostgreSQL, SeaweedFS's S3) and their per-test database and bucket: tests/engines.py.
pytest_plugins = ["engines"]

EVENT = "0f339cb0-7ab4-43fe-852d-75708232f76c"
START = "2024-01-01T00:00:00"


def pytest_configure(config: pytest.Config) -> None:
    # pytest-tornado 0.8.1 still calls IOLoop.make_current/clear_current, deprecated since Tornado 6.2.
    config.addinivalue_line("filterwarnings", "ignore:make_current is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:clear_current is deprecated:DeprecationWarning")
    config.addinivalue_line("markers", "engines(*names): the engines a test of the contract runs on, where not all")
    config.addinivalue_line("markers", "system: starts processes")
    if config.option.durations is None:  # the slowest tests at the end of each run (CI's budget is 30 minutes)
        config.option.durations = 15


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings() -> dict[str, str]:
    """Flag values for the app under test; a test module may override this fixture."""
    return {}


# The engines a test of the contract runs on: the embedded default (SQLite and files), a PostgreSQL index with the
# files, and the scale-out set (PostgreSQL and objects in SeaweedFS's S3); the modules below run once on each, the
# others on the default only.
ENGINES = ("sqlite", "postgresql", "s3")
ON_EVERY_ENGINE = {
    "test_records", "test_conditional", "test_list", "test_events_list", "test_sse", "test_events", "test_append",
    "test_resumable", "test_resumable_restart", "test_ranges", "test_digest_fields", "test_eventlog", "test_live",
}  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__ in ON_EVERY_ENGINE and {"app", "service"} & set(metafunc.fixturenames):
        marker = metafunc.definition.get_closest_marker("engines")
        metafunc.parametrize("engine", marker.args if marker else ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that put the service under test on its engine (none: the embedded default); a fresh database
    for each test."""
    name = getattr(request, "param", "sqlite")
    if name == "postgresql":
        return {"index": request.getfixturevalue("postgres_url")}
    if name == "s3":  # the keys in the environment, as an operator gives them (the process started inherits them)
        monkeypatch = request.getfixturevalue("monkeypatch")
        for variable, value in request.getfixturevalue("s3_env").items():
            monkeypatch.setenv(variable, value)
        bucket = request.getfixturevalue("shared_bucket")
        prefix = f"{secrets.token_hex(6)}/records"  # the test's own
        return {"index": request.getfixturevalue("postgres_url"), "blobs": f"s3://{bucket}/{prefix}"}
    return {}


def run_on_index(engine: dict[str, str], data_dir: Path, *statements: str) -> list[tuple]:
    """Run SQL statements on the index of the service under test, behind its back (SQLite's file, or the
    PostgreSQL database of `engine`), in one transaction; the rows of the last."""
    index = psycopg.connect(engine["index"]) if "index" in engine else sqlite3.connect(data_dir / "records.sqlite3")
    try:
        for statement in statements:
            cursor = index.execute(statement)
        rows = cursor.fetchall() if cursor.description else []
        index.commit()
        return rows
    finally:
        index.close()


@pytest.fixture
def app(data_dir: Path, settings: dict[str, str], engine: dict[str, str]) -> Iterator:
    app = make_app(build_config({"data_dir": str(data_dir), **engine, **settings}, {}))
    yield app
    close_app(app)


@pytest.fixture
def http_server(request: pytest.FixtureRequest, io_loop, _unused_port, app):  # noqa: ANN001
    """pytest-tornado's server, but built as the command builds it (same limits)."""
    server = make_server(app)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)


@pytest.fixture
def fetch(http_client: tornado.httpclient.AsyncHTTPClient, base_url: str):
    """`await fetch(path, **kwargs)`: a request to the app under test that returns error responses too."""

    async def fetch(path: str, **kwargs) -> tornado.httpclient.HTTPResponse:  # noqa: ANN003
        kwargs.setdefault("raise_error", False)
        kwargs.setdefault("request_timeout", 60)
        if kwargs.get("method") == "PUT" and "body" not in kwargs and "body_producer" not in kwargs:
            kwargs["body"] = b""
        return await http_client.fetch(base_url + path, **kwargs)

    return fetch


def record_url(event: str = EVENT, start: str = START) -> str:
    return f"/records/{event}/{start}"


def files_in(directory: Path) -> list[str]:
    """The files in a directory and its subdirectories (processes sharing an index keep their uploads in flight in
    tmp/<process>/), by name."""
    return sorted(p.name for p in directory.rglob("*") if not p.is_dir()) if directory.exists() else []


def stored_blobs(engine: dict[str, str], data_dir: Path) -> dict[str, bytes]:
    """The blobs the service under test keeps, by name, with their bytes: the files in data_dir/blobs, or the objects
    under the S3 prefix of `engine` (read with the keys in the environment, as the service reads them)."""
    if "blobs" not in engine:
        return {name: (data_dir / "blobs" / name).read_bytes() for name in files_in(data_dir / "blobs")}
    bucket, _, prefix = engine["blobs"].removeprefix("s3://").partition("/")
    client = botocore.session.get_session().create_client("s3")
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []))
        return {key[len(prefix) + 1 :]: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
    finally:
        client.close()


@pytest.fixture
def blobs(engine: dict[str, str], data_dir: Path):
    """`blobs()`: the blobs of the app under test, by name, with their bytes (see stored_blobs)."""
    return lambda: stored_blobs(engine, data_dir)


def wait_until(condition, timeout: float = 10.0) -> bool:  # noqa: ANN001
    """Poll `condition()` until it is true or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def headless_chromium(profile: Path) -> list[str]:
    """The command line start of a headless Chromium as root on a machine with no internet: a fresh profile, and
    none of the background connections that a closed network refuses."""
    return [
        require("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


def missing(message: str) -> NoReturn:
    """Skip the test for a missing real component, but fail it when RECORDS_TEST_REQUIRE_ALL is set (as .ci/run
    sets it), so CI never skips one silently."""
    if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
        pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
    pytest.skip(message)


def require(program: str) -> str:
    """The path of a real component (curl, nginx, ffmpeg, chromium); skips the test where it is missing, but
    fails it when RECORDS_TEST_REQUIRE_ALL is set (see `missing`)."""
    path = shutil.which(program)
    if path is None:
        missing(f"{program} is not installed")
    return path


def require_root(why: str) -> None:
    """Skip the test unless it runs as root (CI does); fail it instead when RECORDS_TEST_REQUIRE_ALL is set."""
    if os.geteuid() != 0:
        missing(f"{why} needs root")


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on the new directory `mount` with mount `options` (such as "size=8m"), unmounted at the end;
    root only."""
    require_root("mounting a tmpfs")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


async def eventually(condition, timeout: float = 10.0):  # noqa: ANN001
    """Like wait_until, for async tests: polls while the event loop keeps serving."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return value


# -- real processes ----------------------------------------------------------------------------------------------

COMMAND = [str(Path(sys.executable).with_name("tornado-records"))]


class Service:
    """A running `tornado-records` process on a free port; its log lines are collected as they come."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        command: list[str] = COMMAND,
    ) -> None:
        self.lines: list[str] = []
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir), *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        line = wait_until(lambda: next((l for l in self.lines if "serving on" in l), None), timeout=20)
        if not line:
            self.proc.kill()
            raise RuntimeError("tornado-records did not start:\n" + "".join(self.lines))
        self.port = int(re.search(r"serving on http://[^:]+:(\d+)", line).group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=60)


@pytest.fixture
def service(tmp_path: Path, engine: dict[str, str]) -> Iterator:
    """`service(*flags)` starts a real process on `tmp_path/data`, or on `data_dir=` (each call a new process), on
    the test's engine; all stop at the end."""
    started: list[Service] = []
    on_engine = [f"--{name.replace('_', '-')}={value}" for name, value in engine.items()]

    def start(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, data_dir: Path | None = None
    ) -> Service:
        started.append(Service(data_dir or tmp_path / "data", *on_engine, *args, env=env, cwd=cwd))
        return started[-1]

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


# -- nginx in front ----------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Nginx:
    """A real nginx running deploy/nginx.conf, with only its addresses and paths changed for the test: its HTTPS
    server on a free port of 127.0.0.1, plain HTTP there unless `tls` (the certificate is a test one, made with
    openssl; `url` is then https://localhost:PORT), and its HTTP server, which sends clients to HTTPS, on `http_port`."""

    def __init__(self, workdir: Path, upstream_ports: list[int], data_dir: Path, tls: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        self.tls = tls
        self.certificate, key = make_certificate(workdir / "tls")
        self.error_log = workdir / "logs" / "nginx-error.log"
        for _ in range(5):  # a port found free may be taken before nginx binds it (by any process): then others
            self.port = free_port()
            self.http_port = free_port()
            self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
            self.conf = workdir / "nginx.conf"
            self.conf.write_text(nginx_conf(
                (REPO / "deploy" / "nginx.conf").read_text(),
                upstream_ports=upstream_ports, data_dir=data_dir, workdir=workdir, port=self.port,
                http_port=self.http_port, tls=tls, certificate=self.certificate, key=key,
            ))  # fmt: skip
            self.proc = subprocess.Popen(
                [require("nginx"), "-p", str(workdir), "-c", str(self.conf), "-g", "daemon off;"],
                stderr=subprocess.PIPE,
                text=True,
            )
            if not wait_until(self._answering, timeout=30):
                self.proc.kill()
                raise RuntimeError("nginx did not answer on its port")
            if self.proc.poll() is None:
                return
            error = self.proc.stderr.read()
            if "Address already in use" not in error:
                raise RuntimeError("nginx did not start: " + error)
        raise RuntimeError("nginx found no free port: " + error)

    def _answering(self) -> bool:
        """Whether nginx itself answers on its port (its internal location /_blobs/: 404, from no upstream), or it
        has exited (as it does after a while when the port is taken)."""
        if self.proc.poll() is not None:
            return True
        if self.tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=5, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("HEAD", "/_blobs/")
            return conn.getresponse().getheader("Server", "").startswith("nginx")
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def nginx_conf(
    conf: str,
    *,
    upstream_ports: list[int],
    data_dir: Path,
    workdir: Path,
    port: int,
    http_port: int,
    tls: bool,
    certificate: Path,
    key: Path,
) -> str:
    """deploy/nginx.conf's text with the test's addresses and paths (each place asserted to be there)."""
    for old, new in [
        ("server 127.0.0.1:10700;", " ".join(f"server 127.0.0.1:{port};" for port in upstream_ports)),
        ("/var/lib/tornado-records", str(data_dir)),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port}{' ssl' if tls else ''};"),
        ("listen [::]:443 ssl;", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("/etc/tornado-records/tls/fullchain.pem", str(certificate)),
        ("/etc/tornado-records/tls/privkey.pem", str(key)),
        ("user www-data;", "user root;" if os.geteuid() == 0 else ""),
        ("/run/tornado-records-nginx.pid", str(workdir / "nginx.pid")),
        ("/var/log/tornado-records/", str(workdir / "logs") + "/"),
        ("/var/www/html", str(workdir / "acme")),
        ("http {", "http {\n" + "".join(f"    {kind}_temp_path {workdir / kind};\n" for kind in TEMP_PATHS)),
    ]:
        assert old in conf, old
        conf = conf.replace(old, new)
    return conf


def make_certificate(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `name` (and 127.0.0.1) and its key, made with openssl in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return certificate, key


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator:
    """`nginx(service)` puts a real nginx with deploy/nginx.conf in front of a running service (`nginx(service,
    others)`: of several, one upstream server line each, as docs/scale-out.md says)."""
    started: list[Nginx] = []

    def start(upstream: Service, others: list[Service] = (), tls: bool = False) -> Nginx:
        ports = [upstream.port, *(other.port for other in others)]
        started.append(Nginx(tmp_path / f"nginx{len(started)}", ports, upstream.data_dir, tls))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()
