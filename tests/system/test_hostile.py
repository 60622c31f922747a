"""Hostile clients (issue 28): each finding of the security review, as the probe that showed it, against a real
`tornado-records` process. Scripts in stored records, secrets in answers and logs, stalled connections, piled-up
streams and connections, control characters in paths, and what the log writes of a request."""

from __future__ import annotations

import base64
import http.server
import json
import re
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
from selenium import webdriver

from support.breaking_proxy import BreakingProxy
from support.browser import headless_chromium
from support.components import require
from support.rawhttp import Answer, chunk, read_until, request, request_head
from support.rawsocket import send
from support.records import EVENT, files_in
from support.waiting import wait_until

SCRIPT_PAGE = b"<html><body><script>fetch('/ping?script-ran').then(() => {}, () => {})</script>hello</body></html>"


def record_path(start: str) -> str:
    return f"/records/{EVENT}/{start}"


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


# -- stored scripts ----------------------------------------------------------------------------------------------


@pytest.fixture
def chromium(tmp_path: Path):
    chromium, *flags = headless_chromium(tmp_path / "profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*flags, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads")})
    driver = webdriver.Chrome(service=webdriver.ChromeService(require("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def script_ran(svc) -> bool:
    """Whether a page's script reached the service (its beacon is in the access log)."""
    return wait_until(lambda: "/ping?script-ran" in svc.log, timeout=3)


def test_the_check_sees_a_script_that_runs(service, chromium) -> None:
    """The probe below can fail: the same page, served as HTML from another origin, runs its script, whose beacon
    reaches the service."""
    svc = service()
    page = SCRIPT_PAGE.replace(b"'/ping", f"'{svc.url}/ping".encode())

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        chromium.get(f"http://127.0.0.1:{server.server_address[1]}/")
        assert script_ran(svc)
    finally:
        server.shutdown()


@pytest.mark.parametrize("stored", ["text/html", "", "application/xhtml+xml", "image/svg+xml", "text/x-nonsense"])
def test_a_record_with_a_script_never_runs_it_on_the_services_origin(service, chromium, stored) -> None:
    svc = service()
    path = record_path("2026-01-01T00:00:00")
    headers = {"Content-Type": stored} if stored else {"Content-Type": ""}
    assert request(svc.url, "PUT", path, SCRIPT_PAGE, headers)[0] == 204
    status, answer, body = request(svc.url, "GET", path)
    assert status == 200 and body == SCRIPT_PAGE
    assert answer["Content-Type"] == "application/octet-stream"
    assert answer["Content-Disposition"] == "attachment"
    assert answer["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in answer["Content-Security-Policy"]
    try:
        chromium.get(svc.url + path)
    except Exception:  # noqa: BLE001 (a download is not a page: the driver may say the navigation was aborted)
        pass
    assert not script_ran(svc)
    assert json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["records"][0]["type"] == (
        stored or "application/octet-stream"
    )  # stored as given: the listing says what was sent


def test_an_audio_record_keeps_its_type_with_a_sandbox(service) -> None:
    svc = service()
    path = record_path("2026-01-01T00:00:00")
    assert request(svc.url, "PUT", path, b"OggS", {"Content-Type": "audio/ogg; codecs=opus"})[0] == 204
    for method in ("GET", "HEAD"):
        status, answer, _ = request(svc.url, method, path)
        assert status == 200 and answer["Content-Type"] == "audio/ogg; codecs=opus"
        assert "Content-Disposition" not in answer and "sandbox" in answer["Content-Security-Policy"]


def test_a_live_recording_of_html_is_served_as_an_attachment(service) -> None:
    svc = service()
    path = record_path("2026-01-01T00:00:00")
    sock = socket.create_connection(("127.0.0.1", svc.port))
    head = {"Content-Type": "text/html", "Transfer-Encoding": "chunked"}
    sock.sendall(request_head("PUT", path, head) + chunk(SCRIPT_PAGE))
    try:
        assert wait_until(lambda: request(svc.url, "GET", "/uploads")[2].count(b"2026-01-01T00:00:00") == 1)
        live = socket.create_connection(("127.0.0.1", svc.port))
        live.sendall(request_head("GET", path + "/live", {}))
        answer = Answer(read_until(live, b"</html>"))
        live.close()
        assert answer.status == 200 and answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"] == "attachment"
        assert "sandbox" in answer.headers["content-security-policy"]
    finally:
        sock.close()


def test_a_type_that_is_not_a_media_type_is_refused_and_never_stored(service) -> None:
    svc = service()
    bad = "audio/ogg\u20ac"  # as a tus filetype it reaches the service as UTF-8
    path = record_path("2026-01-01T00:00:00")
    reply = send(svc.port, request_head("PUT", path, {"Content-Length": "1"}).replace(
        b"Content-Length", "Content-Type: audio/ogg\xe2\x82\xac\r\nContent-Length".encode("latin1")) + b"x")
    assert reply.status == 400 and "media type" in json.loads(reply.body)["detail"]
    for text in ("../../etc/passwd", "audio", "audio/ogg; codecs", "audio/ogg, text/html"):
        status, _, body = request(svc.url, "PUT", path, b"x", {"Content-Type": text})
        assert status == 400 and "media type" in json.loads(body)["detail"], text
    metadata = "filetype " + base64.b64encode(bad.encode()).decode()
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "4", "Upload-Metadata": metadata}
    status, _, body = request(svc.url, "POST", path, b"", tus)
    assert status == 400 and "media type" in json.loads(body)["detail"]
    ietf = {"Upload-Complete": "?0", "Upload-Draft-Interop-Version": "6", "Content-Type": "text/html;;=="}
    status, _, body = request(svc.url, "POST", path, b"", ietf)
    assert status == 400 and "media type" in json.loads(body)["detail"]
    assert json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["count"] == 0
    assert request(svc.url, "GET", "/uploads")[2] == b'{"uploads": []}'
    assert files_in(svc.data_dir / "tmp") == [] and files_in(svc.data_dir / "blobs") == []


# -- secrets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["query", "userinfo"])
def test_the_index_password_reaches_neither_a_client_nor_the_log(service, postgres, postgres_url, form) -> None:
    password = "Sekr3t-Passw0rd"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS hostile_tester")
        admin.execute("CREATE ROLE hostile_tester SUPERUSER LOGIN")
    port = int(re.search(r":(\d+)/", postgres_url).group(1))
    database = postgres_url.rsplit("/", 1)[1]
    link = BreakingProxy(port)
    if form == "query":
        url = f"postgresql://hostile_tester@127.0.0.1:{link.port}/{database}?password={password}&sslmode=disable"
    else:
        url = f"postgresql://hostile_tester:{password}@127.0.0.1:{link.port}/{database}"
    svc = service("--index", url, env={"PGCONNECT_TIMEOUT": "2"})
    assert request(svc.url, "PUT", record_path("2026-01-01T00:00:00"), b"x", {"Content-Type": "audio/ogg"})[0] == 204
    link.close()
    for method, path in [("GET", f"/records/{EVENT}"), ("PUT", record_path("2026-01-02T00:00:00"))]:
        status, _, body = request(svc.url, method, path, b"y" if method == "PUT" else None)
        assert status == 503, body
        detail = json.loads(body)["detail"]
        assert detail == "The index (PostgreSQL) cannot be reached: try again shortly"
        for secret in (password, "hostile_tester", "127.0.0.1", str(link.port), database):
            assert secret not in body.decode()
    assert wait_until(lambda: "503" in svc.log)
    svc.stop()
    assert password not in svc.log and "hostile_tester" in svc.log  # the user may be named; the password never


# -- stalled connections -----------------------------------------------------------------------------------------


def test_stalled_bodies_and_headers_are_closed_within_their_bounds_and_free_their_memory(service) -> None:
    svc = service("--upload-idle-timeout", "2", "--header-timeout", "2")
    pid = svc.proc.pid
    for _ in range(3):  # warm up: the first requests make what every later one reuses
        assert request(svc.url, "GET", "/ping")[0] == 204
    before = rss_kib(pid)
    stalled_bodies, stalled_heads = [], []
    started = time.monotonic()
    for index in range(200):
        sock = socket.create_connection(("127.0.0.1", svc.port))
        if index % 2:  # a body announced and never sent
            sock.sendall(request_head("POST", "/ping", {"Content-Length": "1048576"}))
        else:  # a chunked upload that never sends a chunk
            sock.sendall(request_head("PUT", record_path(f"2026-01-01T00:00:{index % 60:02d}"),
                                      {"Transfer-Encoding": "chunked", "Content-Type": "audio/ogg"}))  # fmt: skip
        stalled_bodies.append(sock)
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", svc.port))
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n")  # the head never ends
        stalled_heads.append(sock)
    during = rss_kib(pid)

    def closed_at(sock: socket.socket) -> tuple[float, bytes]:
        sock.settimeout(30)
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except OSError:
            pass
        return time.monotonic() - started, received

    heads = [closed_at(sock) for sock in stalled_heads]
    bodies = [closed_at(sock) for sock in stalled_bodies]
    assert max(at for at, _ in heads) < 2 + 5, heads  # the header bound, and slack for a loaded machine
    assert max(at for at, _ in bodies) < 2 + 1 + 5, bodies  # the idle bound (+1 s past an upload's own)
    for _, received in bodies:
        answer = Answer(received)
        assert answer.status == 408 and json.loads(answer.body)["status_code"] == 408, received
    for sock in stalled_bodies + stalled_heads:
        sock.close()
    assert wait_until(lambda: rss_kib(pid) - before < 10 * 1024, timeout=10), (before, during, rss_kib(pid))
    assert request(svc.url, "GET", "/ping")[0] == 204
    assert json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["count"] == 0


def test_a_kept_alive_connection_left_idle_is_closed_at_the_header_bound_and_a_busy_one_is_not(service) -> None:
    svc = service("--header-timeout", "1")
    idle, busy = (socket.create_connection(("127.0.0.1", svc.port)) for _ in range(2))
    started = time.monotonic()
    for sock in (idle, busy):
        sock.sendall(request_head("GET", "/ping", {}))
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 204")
    idle.setblocking(False)
    with pytest.raises(BlockingIOError):  # still open, nothing to read
        idle.recv(1)
    deadline = started + 1 + 0.1 + 2  # the bound, a tenth of it, and slack for a loaded machine
    while time.monotonic() < started + 1.5:  # the busy one asks again and again, each head well within the bound
        busy.sendall(request_head("GET", "/ping", {}))
        assert read_until(busy, b"\r\n\r\n").startswith(b"HTTP/1.1 204")
        time.sleep(0.2)  # the client's own pace
    idle.settimeout(deadline - time.monotonic())
    assert idle.recv(1) == b""  # closed by the server, within the deadline (a timeout would raise)
    busy.sendall(request_head("GET", "/ping", {}))
    assert read_until(busy, b"\r\n\r\n").startswith(b"HTTP/1.1 204")
    idle.close()
    busy.close()


# -- caps --------------------------------------------------------------------------------------------------------


def test_connections_past_the_cap_are_answered_503_and_closed(service) -> None:
    svc = service("--max-connections", "20")
    held = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(20)]
    try:
        assert wait_until(lambda: send(svc.port, request_head("GET", "/ping", {})).status == 503, timeout=5)
        reply = send(svc.port, request_head("GET", "/ping", {}))
        assert reply.status == 503 and reply.headers["retry-after"] == "1"
        assert json.loads(reply.body)["status_code"] == 503
    finally:
        for sock in held[:5]:
            sock.close()
    assert wait_until(lambda: send(svc.port, request_head("GET", "/ping", {})).status == 204, timeout=5)
    for sock in held[5:]:
        sock.close()


def test_one_client_holds_at_most_its_cap_of_live_and_event_streams(service) -> None:
    svc = service("--trusted-proxies", "127.0.0.1")  # default cap: 100 per client
    path = record_path("2026-01-01T00:00:00")
    recorder = socket.create_connection(("127.0.0.1", svc.port))
    recorder.sendall(request_head("PUT", path, {"Content-Type": "audio/ogg", "Transfer-Encoding": "chunked"}))
    recorder.sendall(chunk(b"OggS" * 100))
    assert wait_until(lambda: b"2026-01-01T00:00:00" in request(svc.url, "GET", "/uploads")[2])
    listeners, statuses = [], []
    try:
        for index in range(200):
            sock = socket.create_connection(("127.0.0.1", svc.port))
            sock.settimeout(10)
            target = path + "/live" if index % 2 else "/sse"
            sock.sendall(request_head("GET", target, {}))
            answer = Answer(read_until(sock, b"\r\n\r\n"))
            statuses.append(answer.status)
            listeners.append(sock)
        assert statuses.count(200) == 100 and statuses.count(429) == 100, statuses
        assert all(status == 429 for status in statuses[100:])
        # another client (behind the trusted proxy) has places of its own
        other = socket.create_connection(("127.0.0.1", svc.port))
        other.sendall(request_head("GET", "/sse", {"X-Forwarded-For": "192.0.2.7"}))
        assert Answer(read_until(other, b"\r\n\r\n")).status == 200
        other.close()
        for sock in listeners[:10]:  # a client that leaves frees its places
            sock.close()
        assert wait_until(lambda: _stream_status(svc.port) == 200, timeout=5)
    finally:
        for sock in listeners:
            sock.close()
        recorder.close()


def _stream_status(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head("GET", "/sse", {}))
        return Answer(read_until(sock, b"\r\n\r\n")).status


# -- paths, headers and logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/room/room.js%00.css", "/room/%0a", "/records/%00", f"/records/{EVENT}/2024-01-01T00:00%1f", "/%7f"]
)
def test_a_control_character_in_a_path_is_a_400(service, path) -> None:
    svc = service()
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, headers, body = request(svc.url, method, path, b"x" if method == "PUT" else None)
        assert status == 400 and headers["Content-Type"] == "application/json", (method, status)
        if method != "HEAD":
            assert json.loads(body)["status_code"] == 400
    assert "Traceback" not in svc.log


def test_every_answer_says_nosniff_and_the_api_page_cannot_be_framed(service) -> None:
    svc = service()
    for method, path in [("GET", "/ping"), ("GET", f"/records/{EVENT}"), ("GET", "/nowhere"), ("GET", "/"),
                         ("GET", "/openapi/openapi.json"), ("GET", "/metrics"), ("POST", "/ping")]:  # fmt: skip
        assert request(svc.url, method, path)[1]["X-Content-Type-Options"] == "nosniff", path
    reply = send(svc.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")  # the server's own refusal
    assert reply.status == 400 and reply.headers["x-content-type-options"] == "nosniff"
    _, headers, _ = request(svc.url, "GET", "/openapi")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"


def test_the_log_writes_the_parsed_client_and_escapes_what_the_request_sent(service) -> None:
    svc = service("--trusted-proxies", "127.0.0.1")
    assert request(svc.url, "GET", "/ping", headers={"X-Forwarded-For": "  ::ffff:192.0.2.9 "})[0] == 204
    assert request(svc.url, "GET", "/ping", headers={"X-Forwarded-For": "evil</a>, 192.0.2.10"})[0] == 204
    send(svc.port, b"GET /ping?\xe9\xa0a\\b HTTP/1.1\r\nHost: x\r\n\r\n")  # bytes no log line should carry
    assert wait_until(lambda: svc.log.count("GET /ping") >= 3)
    lines = [line for line in svc.lines if "GET /ping" in line]
    assert lines[0].rstrip().endswith(" 192.0.2.9"), lines[0]
    assert lines[1].rstrip().endswith(" 192.0.2.10"), lines[1]
    assert "\xe9" not in svc.log and "GET /ping?\\xe9\\xa0a\\x5cb 204" in lines[2], lines[2]
