"""A Tornado that lacks one of the private attributes the service relies on (tornado_records/http/insides.py): the
start stops with one clear line and exit status 2, before anything is made; the same command on this Tornado serves."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import tornado

from support.service import COMMAND, Service
from tornado_records.http import insides


# -- a Tornado that lacks one: the start stops --------------------------------------------------------------------

DELETE_METHOD = """
import tornado.http1connection
del tornado.http1connection.HTTP1Connection._read_fixed_body
"""
UNSET_ATTRIBUTE = """
import tornado.http1connection
_init = tornado.http1connection.HTTP1Connection.__init__
def __init__(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    del self._expected_content_remaining
tornado.http1connection.HTTP1Connection.__init__ = __init__
"""


@pytest.mark.parametrize(
    "changed, lacks, user",
    [
        (DELETE_METHOD, "HTTP1Connection._read_fixed_body", "tornado_records/http/body.py"),
        (UNSET_ATTRIBUTE, "HTTP1Connection._expected_content_remaining", "tornado_records/http/sendfile.py"),
    ],
    ids=["method", "attribute"],
)
def test_a_tornado_lacking_one_stops_the_start_with_one_line(
    tmp_path: Path, changed: str, lacks: str, user: str
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(changed))  # Python imports it before the command runs
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [*COMMAND, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.stderr == (
        f"tornado-records: error: this Tornado ({tornado.version}) lacks {lacks}, which {user} needs; "
        f"install a Tornado this release supports ({insides.SUPPORTED})\n"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # stopped before anything was made


def test_the_same_command_starts_on_this_tornado(tmp_path: Path) -> None:
    """The control: the command as above, with a sitecustomize that changes nothing, serves."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import tornado.http1connection\n")
    service = Service(tmp_path / "data", env={"PYTHONPATH": str(site)})
    assert service.stop() == 0
    assert "Traceback" not in service.log
