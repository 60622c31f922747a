"""The `tornado-records` command as an operator runs it: flags, environment, errors, restarts, logs, signals."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from support.commands import run
from support.records import EVENT, START, files_in, record_url
from support.waiting import wait_until
from tornado_records import __version__
from tornado_records.config import SETTINGS


def request(service, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_help_names_every_flag_and_variable():
    result = run("--help")
    assert result.returncode == 0
    for setting in SETTINGS:
        assert setting.flag in result.stdout and setting.env_var in result.stdout


def test_version_and_module_entry_point():
    assert run("--version").stdout.strip() == f"tornado-records {__version__}"
    module = subprocess.run([sys.executable, "-m", "tornado_records", "--version"], capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout.strip() == f"tornado-records {__version__}"


@pytest.mark.parametrize(
    "args, env, mentions",
    [
        (["--port", "http"], {}, "--port"),
        (["--port", "70000"], {}, "--port"),
        (["--max-body-size", "20X"], {}, "--max-body-size"),
        (["--log-level", "loud"], {}, "--log-level"),
        ([], {"RECORDS_PORT": "ten"}, "RECORDS_PORT"),
        ([], {"RECORDS_MAX_BODY_SIZE": "-1"}, "RECORDS_MAX_BODY_SIZE"),
        ([], {"RECORDS_DEBUG": "maybe"}, "RECORDS_DEBUG"),
        (["--shutdown-grace", "0"], {}, "--shutdown-grace"),
        ([], {"RECORDS_SHUTDOWN_GRACE": "soon"}, "RECORDS_SHUTDOWN_GRACE"),
        (["--no-such-flag"], {}, "--no-such-flag"),
    ],
)
def test_bad_value_fails_with_one_clear_line(args, env, mentions):
    result = run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tornado-records: error:") and mentions in lines[0]
    assert "Traceback" not in result.stderr


def test_flag_wins_over_environment(service, tmp_path):
    proc = service("--max-body-size", "1K", env={"RECORDS_MAX_BODY_SIZE": "1G", "RECORDS_PORT": "1"})
    assert proc.port != 1  # RECORDS_PORT lost to the fixture's --port 0 as well
    status, _, _ = request(proc, "PUT", record_url(), body=b"x" * 2048)
    assert status >= 400
    status, _, _ = request(proc, "PUT", record_url(), body=b"x" * 1024)
    assert status == 204


def test_busy_port_fails_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("--host", "127.0.0.1", "--port", str(busy.getsockname()[1]), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0]


def test_unusable_data_dir_fails_with_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = run("--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "file" / "data"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data directory" in lines[0]


def test_records_survive_a_restart(service, tmp_path):
    data = os.urandom(300_000)
    first = service()
    assert request(first, "PUT", record_url(), data, {"Content-Type": "audio/ogg"})[0] == 204
    assert first.stop() == 0
    second = service()
    status, headers, body = request(second, "GET", record_url())
    assert status == 200 and body == data and headers["Content-Type"] == "audio/ogg"
    listed = json.loads(request(second, "GET", f"/records/{EVENT}")[2])
    assert listed["count"] == 1


def test_start_removes_unfinished_uploads_and_orphan_blobs(service, tmp_path):
    first = service()
    request(first, "PUT", record_url(), b"kept")
    first.stop()
    data = tmp_path / "data"
    (data / "tmp" / "c0ffee.part").write_bytes(b"half an upload")
    (data / "blobs" / "0123456789abcdef").write_bytes(b"a blob no record points to")
    [kept] = [name for name in files_in(data / "blobs") if name != "0123456789abcdef"]

    second = service()
    assert files_in(data / "tmp") == []
    assert files_in(data / "blobs") == [kept]
    assert request(second, "GET", record_url())[2] == b"kept"
    assert "removed 1 unfinished upload(s) and 1 orphan blob(s)" in second.log


def test_access_log_has_method_path_status_bytes_duration_client(service):
    proc = service()
    request(proc, "GET", "/records/nope?limit=1")
    line = wait_until(lambda: next((l for l in proc.lines if "/records/nope" in l), None))
    assert re.search(r"GET /records/nope\?limit=1 400 \d+B [\d.]+ms 127\.0\.0\.1$", line.strip()), line


def test_openapi_is_found_from_any_working_directory(service, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = service(cwd=elsewhere)
    status, _, body = request(proc, "GET", "/openapi/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.1")
    assert request(proc, "GET", "/openapi")[0] == 200


def test_sigterm_lets_an_upload_in_flight_finish_then_exits_0(service):
    proc = service()
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
    conn.putrequest("PUT", record_url())
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"5\r\nhello\r\n")
    in_flight = lambda: [u["bytes"] for u in json.loads(request(proc, "GET", "/uploads")[2])["uploads"]]  # noqa: E731
    assert wait_until(lambda: in_flight() == [5])  # the upload is in flight
    proc.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "SIGTERM: shutting down" in proc.log)
    # No new connections once stopping...
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proc.port), timeout=2).close()
    # ...but the upload in flight completes.
    conn.send(b"6\r\n world\r\n0\r\n\r\n")
    assert conn.getresponse().status == 204
    assert proc.proc.wait(timeout=20) == 0
    assert "stopped" in proc.log


def test_sigint_exits_0_and_the_upload_was_kept(service):
    proc = service()
    assert request(proc, "PUT", record_url(), b"kept")[0] == 204
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(timeout=20) == 0
    again = service()
    assert request(again, "GET", f"/records/{EVENT}/{START}")[2] == b"kept"


