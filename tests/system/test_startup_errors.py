"""A data directory the service cannot use stops it at start with one line saying what and where, a non-zero exit
status and no traceback: a damaged or unreadable index, a read-only file system, a directory of another user.

Tests run as root, for whom permissions do not stop reads or writes: the service is started as `nobody` (setpriv)
where a permission must refuse it, in a directory `nobody` can reach. The read-only file system is a tmpfs remounted
read-only. Root is needed (CI runs as root; RECORDS_TEST_REQUIRE_ALL turns the skip into a failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from support.components import require, require_root
from support.disk import tmpfs
from support.rawhttp import request
from support.records import record_url
from support.service import COMMAND

NOBODY = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A fresh directory that any user can reach (pytest's tmp_path is root's alone)."""
    require_root("starting the service as another user")
    path = Path(tempfile.mkdtemp(prefix="records-startup-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def populated(service, data_dir: Path) -> Path:  # noqa: ANN001
    """The data directory of a real service that stored a record, then stopped."""
    svc = service(data_dir=data_dir)
    assert request(svc.url, "PUT", record_url(), b"audio")[0] == 204
    assert svc.stop() == 0
    return data_dir


def start(data_dir: Path, as_nobody: bool = False) -> str:
    """Start the service on data_dir (as root, or as nobody) expecting it to fail; returns its one error line."""
    prefix = [require("setpriv"), *NOBODY] if as_nobody else []
    result = subprocess.run(
        [*prefix, *COMMAND, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tornado-records: error: "), result.stderr
    return lines[0]


def test_a_damaged_index_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    garbage = os.urandom(64 * 1024)
    (data / "records.sqlite3").write_bytes(garbage)
    line = start(data)
    assert f"the index {data / 'records.sqlite3'} is damaged (file is not a database)" in line
    assert (data / "records.sqlite3").read_bytes() == garbage


def test_an_index_the_service_user_cannot_read(service, reachable: Path) -> None:
    data = populated(service, reachable / "data")
    subprocess.run(["chown", "-R", "nobody:nogroup", str(data)], check=True)
    index = data / "records.sqlite3"
    os.chown(index, 0, 0)
    index.chmod(0o600)
    line = start(data, as_nobody=True)
    assert line.endswith(
        f"{index}: Permission denied ({index} is owned by root with mode 0600; the service runs as nobody)"
    )


def test_a_data_directory_of_another_user(service, reachable: Path) -> None:
    data = populated(service, reachable / "data")  # root's
    data.chmod(0o700)
    line = start(data, as_nobody=True)
    assert f"cannot use the data directory {data}: " in line
    assert line.endswith(f"Permission denied ({data} is owned by root with mode 0700; the service runs as nobody)")


def test_a_data_directory_to_create_where_the_user_may_not(reachable: Path) -> None:
    parent = reachable / "root-only"
    parent.mkdir(mode=0o755)
    data = parent / "data"
    assert start(data, as_nobody=True) == (
        f"tornado-records: error: cannot use the data directory {data}: Permission denied"
        f" ({parent} is owned by root with mode 0755; the service runs as nobody)"
    )


def test_a_data_directory_on_a_read_only_file_system(service, tmp_path: Path) -> None:
    require_root("mounting a tmpfs")
    with tmpfs(tmp_path / "disk", "size=8m") as disk:
        data = populated(service, disk / "data")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        line = start(data)
        assert line == (
            f"tornado-records: error: cannot use the data directory {data}: {data / 'records.sqlite3'}: "
            "Read-only file system"
        )
        new = disk / "new"
        assert start(new) == f"tornado-records: error: cannot use the data directory {new}: Read-only file system"
