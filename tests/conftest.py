"""Fixtures: a real app on a real socket (pytest-tornado), and real `tornado-records` processes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import tornado.httpclient

from tornado_records.app import make_app, make_server
from tornado_records.config import build_config

EVENT = "0f339cb0-7ab4-43fe-852d-75708232f76c"
START = "2024-01-01T00:00:00"


def pytest_configure(config: pytest.Config) -> None:
    # pytest-tornado 0.8.1 still calls IOLoop.make_current/clear_current, deprecated since Tornado 6.2.
    config.addinivalue_line("filterwarnings", "ignore:make_current is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:clear_current is deprecated:DeprecationWarning")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings() -> dict[str, str]:
    """Flag values for the app under test; a test module may override this fixture."""
    return {}


@pytest.fixture
def app(data_dir: Path, settings: dict[str, str]) -> Iterator:
    app = make_app(build_config({"data_dir": str(data_dir), **settings}, {}))
    yield app
    app.settings["store"].close()


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
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def wait_until(condition, timeout: float = 10.0) -> bool:  # noqa: ANN001
    """Poll `condition()` until it is true or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def require(program: str) -> str:
    """The path of a real component (curl, nginx, ffmpeg, chromium); skips the test where it is missing, but
    fails it when RECORDS_TEST_REQUIRE_ALL is set (as .ci/run sets it), so CI never skips one silently."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed"
        if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
            pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
        pytest.skip(message)
    return path


# -- real processes ----------------------------------------------------------------------------------------------

COMMAND = [str(Path(sys.executable).with_name("tornado-records"))]


class Service:
    """A running `tornado-records` process on a free port; its log lines are collected as they come."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*COMMAND, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir), *args],
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
def service(tmp_path: Path) -> Iterator:
    """`service(*flags)` starts a real process on `tmp_path/data`, or on `data_dir=` (each call a new process); all
    stop at the end."""
    started: list[Service] = []

    def start(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, data_dir: Path | None = None
    ) -> Service:
        started.append(Service(data_dir or tmp_path / "data", *args, env=env, cwd=cwd))
        return started[-1]

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
