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

import pytest

from support.components import require
from support.nginx import make_certificate, nginx_conf
from support.paths import REPO
from support.ports import free_port
from support.records import EVENT, files_in, record_url


def test_nginx_accepts_the_shipped_configuration(tmp_path):
    """`nginx -t` of deploy/nginx.conf with the test's paths, ports and certificate: HTTPS with a certificate to fill
    in, plain HTTP only sending clients to it."""
    shipped = (REPO / "deploy" / "nginx.conf").read_text()
    assert "listen 443 ssl;" in shipped and "ssl_certificate /etc/tornado-records/tls/fullchain.pem;" in shipped
    assert "return 301 https://$host$request_uri;" in shipped
    certificate, key = make_certificate(tmp_path / "tls")
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(shipped, upstream_ports=[10700], data_dir=tmp_path / "data", workdir=tmp_path,
                               port=free_port(), http_port=free_port(), tls=True, certificate=certificate, key=key))
    (tmp_path / "logs").mkdir()
    result = subprocess.run([require("nginx"), "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
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
    for name in ("ETag", "Content-Type", "Repr-Digest", "Last-Modified", "Content-Length", "Cache-Control"):
        assert headers[name] == direct[name], name
    assert "X-Accel-Redirect" not in headers
    assert headers.get_all("Cache-Control") == ["no-cache"]  # nginx keeps it after the redirect, once (api.md, Caching)

    status, headers, body = get(f"{front.url}{record_url()}", {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert headers["ETag"] == direct["ETag"] and headers.get_all("Cache-Control") == ["no-cache"]

    status, _, body = get(f"{front.url}{record_url()}", {"Range": "bytes=100-199",
                                                          "If-Range": direct["Last-Modified"]})
    assert status == 206 and body == data[100:200]

    for conditional in ({"If-None-Match": direct["ETag"]}, {"If-Modified-Since": direct["Last-Modified"]}):
        status, headers, body = get(f"{front.url}{record_url()}", conditional)
        assert status == 304 and body == b"", conditional
        assert headers["ETag"] == direct["ETag"] and headers["Cache-Control"] == "no-cache"

    status, headers, body = get(f"{front.url}/records/{EVENT}/2020-01-01T00:00:00")
    assert status == 404 and json.loads(body)["status_code"] == 404 and headers["Cache-Control"] == "no-store"


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


@pytest.mark.parametrize("unit, instance", [
    ("tornado-records@.service", "tornado-records@10701.service"),
    ("tornado-records-nginx.service", "tornado-records-nginx.service"),
    ("tornado-records-recorder.service", "tornado-records-recorder.service"),
    ("seaweedfs.service", "seaweedfs.service"),
])  # fmt: skip
def test_systemd_accepts_the_shipped_units(tmp_path, unit, instance):
    """systemd's own check of each unit of deploy/ (the service's as an instance of it: port 10701), with ExecStart
    pointed at this installation."""
    command = Path(sys.executable).with_name("tornado-records")
    text = (REPO / "deploy" / unit).read_text()
    if unit == "tornado-records@.service":
        assert "/opt/tornado-records/.venv/bin/tornado-records" in text and "--port %i" in text
        assert "LoadCredential=token:/etc/tornado-records/token" in text and "--token-file %d/token" in text
    text = text.replace("/opt/tornado-records/.venv/bin/tornado-records", str(command))
    (tmp_path / unit).write_text(text.replace("/opt/seaweedfs/bin/weed", str(command.with_name("weed"))))
    result = subprocess.run(
        [require("systemd-analyze"), "verify", str(tmp_path / instance)],
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


def test_ranges_through_nginx_follow_docs_api_md_where_nginx_can_and_the_differences_are_as_documented(
    service, nginx, tmp_path
):
    """Behind nginx with --accel-redirect, nginx applies Range: docs/api.md's rules where nginx's configuration can
    hold them (several ranges, another unit or a malformed range: the whole file, 200; a range past the end: 416 in
    JSON with Content-Range), and the differences docs/running.md lists ("Ranges behind nginx"). No header twice."""
    proc = service("--accel-redirect", "/_blobs/")
    front = nginx(proc)
    reference = service(data_dir=tmp_path / "reference")  # the service's own answers
    data = bytes(range(10))
    for url in (front.url, reference.url):
        put = urllib.request.Request(f"{url}{record_url()}", data=data, method="PUT", headers={"Content-Type": "audio/ogg"})
        assert urllib.request.urlopen(put).status == 204
    same = {None: 200, "bytes=2-4": 206, "bytes=-3": 206, "bytes=0-1,5-6": 200, "items=0-1": 200, "bytes=abc": 200,
            "bytes=1-2-3": 200, "bytes=20-": 416, "bytes=-0": 416}  # fmt: skip
    different = {"bytes=0-": (206, 200), "bytes=0-9": (206, 200), "bytes=9-5": (416, 200)}  # (nginx, the service)

    def get(port: int, ranges: str | None) -> tuple[int, dict, list[str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", record_url(), headers={"Range": ranges} if ranges else {})
            response = conn.getresponse()
            body = response.read()
            return response.status, response.headers, [name.lower() for name, _ in response.getheaders()], body
        finally:
            conn.close()

    for ranges in [*same, *different]:
        status, headers, names, body = get(front.port, ranges)
        own_status, own_headers, _, own_body = get(reference.port, ranges)
        assert sorted(set(names)) == sorted(names), (ranges, names)  # no header twice
        if ranges in same:
            assert status == own_status == same[ranges], ranges
        else:
            assert (status, own_status) == different[ranges], ranges
        if status == 416:
            assert headers["Content-Range"] == "bytes */10" and headers["Content-Type"] == "application/json"
            assert json.loads(body)["status_code"] == 416
        else:
            assert headers["Accept-Ranges"] == "bytes" and headers["Repr-Digest"] == own_headers["Repr-Digest"]
            assert headers["ETag"] == own_headers["ETag"]
            if status == own_status:
                assert body == own_body and headers.get("Content-Range") == own_headers.get("Content-Range"), ranges
            else:
                assert body == data and headers["Content-Range"] == "bytes 0-9/10", ranges


def test_https_in_front_and_plain_http_sends_clients_there(service, nginx):
    proc = service()
    front = nginx(proc, tls=True)
    done = subprocess.run(
        [require("curl"), "-sS", "--cacert", str(front.certificate), "-o", "/dev/null", "-w", "%{http_code}",
         f"{front.url}/ping"], capture_output=True, text=True,
    )  # fmt: skip
    assert done.stdout == "204", done.stderr
    plain = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=30)
    plain.request("GET", "/records?limit=1", headers={"Host": "records.example.org"})
    moved = plain.getresponse()
    assert moved.status == 301 and moved.getheader("Location") == "https://records.example.org/records?limit=1"
