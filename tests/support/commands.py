"""The `tornado-records` command run as an operator runs it (check, backup, migrate...), and what it leaves in a data
directory: its files and the rows of its SQLite index."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

from support.appender import Appender
from support.rawhttp import request
from support.records import record_url
from support.service import COMMAND


def run(*args, env=None):
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})}
    )


def check(data: Path, *args: str):  # noqa: ANN201
    return run("check", "--data-dir", str(data), *args)


def listing(data: Path) -> dict[str, tuple[int, int]]:
    """Every file under the data directory, with its size and mtime (ns)."""
    return {
        str(path.relative_to(data)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(data.rglob("*"))
        if path.is_file()
    }


def index_rows(data: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(data / "records.sqlite3")) as index:
        return index.execute(sql).fetchall()


def fill(svc) -> dict[str, bytes]:  # noqa: ANN001
    """Two plain records and one appended twice (several runs); returns their contents by start."""
    contents = {"2024-01-01T00:00:00": os.urandom(300_000), "2024-01-02T00:00:00": os.urandom(1 << 20)}
    for start, content in contents.items():
        assert request(svc.url, "PUT", record_url(start=start), content)[0] == 204
    appended = b""
    for part in (os.urandom(70_000), os.urandom(90_000)):
        appender = Appender(svc.url, record_url(start="2024-01-03T00:00:00") + "?append=true")
        appender.send(part)
        assert appender.end().status == 204
        appended += part
    contents["2024-01-03T00:00:00"] = appended
    return contents
