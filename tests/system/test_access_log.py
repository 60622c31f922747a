"""Who may write and who is asking, seen in a real process's log and exit: a bad token file stops the start, the
token never appears in the log, the access log names the client behind a trusted proxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.access import SECRET, bearer, request
from support.records import record_url
from support.service import COMMAND
from support.waiting import wait_until


@pytest.mark.parametrize(
    "content, says",
    [(None, "cannot read"), ("", "is empty"), ("  \n", "is empty"), ("two words\n", "Bearer token"), ("a\nb", "Bearer")],
)
def test_a_bad_token_file_fails_at_start_with_one_clear_line(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [*COMMAND, "--port", "0", "--data-dir", str(tmp_path / "data"), "--token-file", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("tornado-records: error: --token-file:") and says in lines[0]


def test_the_token_is_never_in_the_log_even_at_debug_level(service, token_file: Path) -> None:
    proc = service("--log-level", "debug", "--token-file", str(token_file))
    tried = [SECRET, "wrong-" + SECRET, SECRET[:-3]]
    for token in tried:
        for method, body in (("PUT", b"audio"), ("DELETE", None), ("GET", None)):
            request(proc.port, method, record_url() + "?token=no", body, bearer(token))
    request(proc.port, "PUT", "/records/nope/nope", b"x", bearer())
    assert wait_until(lambda: proc.log.count("tornado.access") >= 10)
    assert proc.stop() == 0
    assert " 401 " in proc.log and " 204 " in proc.log  # both kinds of answer were logged
    for token in tried:
        assert token not in proc.log
    assert SECRET[:8] not in proc.log


def access_line(proc, marker: str) -> str:  # noqa: ANN001
    line = wait_until(lambda: next((l for l in proc.lines if marker in l and "tornado.access" in l), None))
    assert line, proc.log
    return line.strip()


@pytest.mark.parametrize("trusted, shown", [("127.0.0.1", "203.0.113.9"), ("10.0.0.0/8, ::1", "127.0.0.1")])
def test_the_access_log_shows_the_client_behind_a_trusted_proxy(service, trusted: str, shown: str) -> None:
    proc = service(env={"RECORDS_TRUSTED_PROXIES": trusted})
    for marker, headers in (
        ("xff", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}),
        ("realip", {"X-Real-IP": "203.0.113.9"}),
    ):
        assert request(proc.port, "GET", f"/ping?{marker}", None, headers) == 204
        assert access_line(proc, f"/ping?{marker}").endswith(f" {shown}")
