"""The shipped deployment files (deploy/), as nginx and systemd read them, and nginx in front of the service."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import EVENT, REPO, files_in, record_url, require


def test_nginx_accepts_the_shipped_configuration():
    result = subprocess.run(
        [require("nginx"), "-t", "-c", str(REPO / "deploy" / "nginx.conf")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_service_with_accel_redirect_answers_headers_without_body(service):
    proc = service("--accel-redirect", "/_blobs/")
    urllib.request.urlopen(urllib.request.Request(f"{proc.url}{record_url()}", data=b"abc", method="PUT"))
    status, headers, body = get(f"{proc.url}{record_url()}")
    blob = files_in(Path(proc.data_dir) / "blobs")[0]
    assert status == 200 and body == b""
    assert headers["X-Accel-Redirect"] == f"/_blobs/{blob}"
    assert headers["ETag"] and headers["Repr-Digest"]
    head = urllib.request.urlopen(urllib.request.Request(f"{proc.url}{record_url()}", method="HEAD"))
    assert "X-Accel-Redirect" not in head.headers and head.headers["Content-Length"] == "3"
    assert get(f"{proc.url}/records/{EVENT}/2020-01-01T00:00:00")[0] == 404


def test_downloads_through_nginx_with_accel_redirect_match_direct_ones(service, nginx):
    proc = service("--accel-redirect", "/_blobs/")
    front = nginx(proc)
    data = os.urandom(3 << 20)
    put = urllib.request.Request(f"{front.url}{record_url()}", data=data, method="PUT",
                                 headers={"Content-Type": "audio/ogg"})
    assert urllib.request.urlopen(put).status == 204
    time.sleep(1.1)  # so that Last-Modified is a strong validator for If-Range by date

    direct = urllib.request.urlopen(urllib.request.Request(f"{proc.url}{record_url()}", method="HEAD")).headers
    status, headers, body = get(f"{front.url}{record_url()}")
    assert status == 200 and body == data
    for name in ("ETag", "Content-Type", "Repr-Digest", "Last-Modified", "Content-Length"):
        assert headers[name] == direct[name], name
    assert "X-Accel-Redirect" not in headers

    status, headers, body = get(f"{front.url}{record_url()}", {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert headers["ETag"] == direct["ETag"]

    status, _, body = get(f"{front.url}{record_url()}", {"Range": "bytes=100-199",
                                                          "If-Range": direct["Last-Modified"]})
    assert status == 206 and body == data[100:200]

    for conditional in ({"If-None-Match": direct["ETag"]}, {"If-Modified-Since": direct["Last-Modified"]}):
        status, headers, body = get(f"{front.url}{record_url()}", conditional)
        assert status == 304 and body == b"", conditional
        assert headers["ETag"] == direct["ETag"]

    status, headers, body = get(f"{front.url}/records/{EVENT}/2020-01-01T00:00:00")
    assert status == 404 and json.loads(body)["status_code"] == 404


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def test_2gib_upload_through_nginx_keeps_service_memory_flat(service, nginx):
    require("curl")
    proc = service()
    front = nginx(proc)
    before = peak_rss_kib(proc.proc.pid)
    size = 2 << 30
    upload = subprocess.run(
        f"head -c {size} /dev/zero | curl -sf -T - -H 'Content-Type: audio/wav' "
        f"-w '%{{http_code}}' {front.url}{record_url()}",
        shell=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert upload.stdout == "204", upload.stderr
    after = peak_rss_kib(proc.proc.pid)
    listed = json.loads(urllib.request.urlopen(f"{proc.url}/records/{EVENT}").read())
    assert listed["records"][0]["size"] == size
    # A 2 GiB body moved through a service whose peak memory grew by less than 20 MiB.
    assert after - before < 20 * 1024, (before, after)


def test_upload_started_arrives_through_nginx_while_the_body_is_still_being_sent(service, nginx):
    proc = service()
    front = nginx(proc)
    events = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    events.request("GET", "/sse")
    stream = events.getresponse()
    assert stream.status == 200 and stream.getheader("Content-Type").startswith("text/event-stream")

    def next_event() -> dict:
        while True:
            line = stream.fp.readline().decode()
            if line.startswith("data:"):
                return json.loads(line[5:])

    upload = socket.create_connection(("127.0.0.1", front.port), timeout=30)
    upload.sendall(
        f"PUT {record_url()} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nfirst\r\n".encode()
    )
    started = next_event()  # neither direction is buffered: the event comes while the upload is still open
    assert started["type"] == "upload-started" and started["data"]["start"] == "2024-01-01T00:00:00"
    upload.sendall(b"6\r\nsecond\r\n0\r\n\r\n")
    assert upload.recv(4096).startswith(b"HTTP/1.1 204")
    created = next_event()
    assert created["type"] == "record-created" and created["data"]["record"]["size"] == 11
    upload.close()
    events.close()


def test_systemd_accepts_the_shipped_unit(tmp_path):
    """systemd's own check of deploy/tornado-records@.service (an instance of it: port 10701), with ExecStart pointed
    at this installation."""
    command = Path(sys.executable).with_name("tornado-records")
    unit = (REPO / "deploy" / "tornado-records@.service").read_text()
    assert "/opt/tornado-records/.venv/bin/tornado-records" in unit and "--port %i" in unit
    (tmp_path / "tornado-records@.service").write_text(
        unit.replace("/opt/tornado-records/.venv/bin/tornado-records", str(command))
    )
    result = subprocess.run(
        [require("systemd-analyze"), "verify", str(tmp_path / "tornado-records@10701.service")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_an_html_record_sent_by_nginx_is_an_attachment_with_the_services_protections(service, nginx):
    """Issue 28 behind nginx: with X-Accel-Redirect, nginx sends the bytes, and the headers that keep a stored
    script from running on the service's origin come through (deploy/nginx.conf restores those it would drop)."""
    proc = service("--accel-redirect", "/_blobs/")
    front = nginx(proc)
    page = b"<script>alert(1)</script>"
    put = urllib.request.Request(f"{front.url}{record_url()}", data=page, method="PUT",
                                 headers={"Content-Type": "text/html"})  # fmt: skip
    assert urllib.request.urlopen(put).status == 204
    status, headers, body = get(f"{front.url}{record_url()}")
    assert status == 200 and body == page
    assert headers["Content-Type"] == "application/octet-stream" and headers["Content-Disposition"] == "attachment"
    assert headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in headers["Content-Security-Policy"]
    assert headers.get_all("X-Content-Type-Options") == ["nosniff"]
