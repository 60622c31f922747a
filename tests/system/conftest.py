"""The system tier: tests that start processes (the service, a browser, a recorder, nginx, curl, ffmpeg, node
clients, the docs' recipes, pip); each is marked `system`. Their fixtures: `service` (real `tornado-records`
processes) and `nginx` in front of them, `browsers` (Chromium on a service), and `small_disk`."""

from __future__ import annotations

import contextlib
import secrets

from pathlib import Path
from typing import Iterator

import pytest

from support.browser import Browser
from support.components import require
from support.disk import tmpfs
from support.nginx import Nginx
from support.service import Service


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.system)


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


@pytest.fixture(scope="module")
def shared_service(request: pytest.FixtureRequest, shared_engine: str, tmp_path_factory: pytest.TempPathFactory):
    """One real process on `shared_engine` (sqlite, postgresql or s3, as `engine` sets them up) for the tests of a
    module that read, or write nothing another of them reads: started once an engine, killed at the module's end.
    Quicker than a process a test for tests parametrized many times."""
    flags, env = [], {}
    with contextlib.ExitStack() as stack:
        if shared_engine in ("postgresql", "s3"):
            flags.append("--index=" + stack.enter_context(request.getfixturevalue("postgres").new_database()))
        if shared_engine == "s3":
            env = request.getfixturevalue("seaweedfs").env()
            flags.append(f"--blobs=s3://{request.getfixturevalue('shared_bucket')}/{secrets.token_hex(6)}/records")
        proc = Service(tmp_path_factory.mktemp("shared") / "data", *flags, env=env)
        try:
            yield proc
        finally:
            proc.proc.kill()
            proc.proc.wait()


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


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator:
    """`browsers(service)` opens a Chromium on the service (`width=`, `height=`: its window); at the end, each asserts
    that nothing left the machine."""
    opened: list[Browser] = []

    def open_browser(proc, **size: int) -> Browser:  # noqa: ANN001
        require("chromium")
        opened.append(Browser(proc.url, tmp_path / f"profile{len(opened)}", **size))
        return opened[-1]

    yield open_browser
    try:
        for browser in opened:
            assert browser.outside_requests() == []
            assert len(browser.requests) > 0  # the log was read: the check above can fail
    finally:
        for browser in opened:
            browser.quit()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted under tmp_path (root only), unmounted at the end."""
    with tmpfs(tmp_path / "disk", "size=8m") as mount:
        yield mount
