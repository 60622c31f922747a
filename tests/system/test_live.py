"""GET /uploads (the uploads in flight) and GET /records/{event}/{start}/live (listening while it records), against
a real `tornado-records` process with uploads sent by hand over raw sockets: what a listener receives is exactly
what the recorder sent, including what arrived after the listener began, and it ends when the upload ends."""

from __future__ import annotations

import json
import socket
import threading
import time

from support.appender import Appender
from support.rawhttp import connect, read_until, request, request_head
from support.records import EVENT, START, record_url
from support.waiting import wait_until

LIVE = record_url() + "/live"


def uploads(url: str) -> list[dict]:
    status, headers, body = request(url, "GET", "/uploads")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    return json.loads(body)["uploads"]


class Listener:
    """A GET of the live route whose body is read in a thread as it comes, as a player reads it."""

    def __init__(self, url: str, path: str = LIVE) -> None:
        self.sock = connect(url)
        self.sock.sendall(request_head("GET", path, {}))
        raw = read_until(self.sock, b"\r\n\r\n")
        head, _, self.raw = raw.partition(b"\r\n\r\n")
        self.head = head.decode()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        self.sock.settimeout(60)
        try:
            while data := self.sock.recv(65536):
                self.raw += data
                if self.raw.endswith(b"0\r\n\r\n"):
                    break
        except OSError:  # the test closed the socket: the listener left
            pass
        self.ended.set()

    @property
    def body(self) -> bytes:
        """The chunked body received so far, unframed."""
        body, rest = b"", self.raw
        while b"\r\n" in rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0 or len(rest) < size + 2:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        return body


def test_uploads_in_flight_are_listed_with_their_size_and_leave_when_they_end(service) -> None:
    svc = service()
    assert uploads(svc.url) == []
    plain = Appender(svc.url, record_url(), {"Content-Type": "audio/mpeg"})
    plain.send(b"a" * 1000)
    live = Appender(svc.url, record_url(EVENT, "2024-01-02T00:00:00") + "?append=true")
    live.send(b"b" * 300)
    by_mode = lambda: {u["mode"]: u for u in uploads(svc.url)}  # noqa: E731
    assert wait_until(lambda: {m: u["bytes"] for m, u in by_mode().items()} == {"put": 1000, "append": 300})
    first, second = by_mode()["put"], by_mode()["append"]
    assert first == {
        "event": EVENT, "start": START, "type": "audio/mpeg", "mode": "put", "state": "receiving", "bytes": 1000,
        "size": None, "started": first["started"],
    }  # fmt: skip
    assert second["mode"] == "append" and second["start"] == "2024-01-02T00:00:00"
    plain.send(b"a" * 500)
    assert wait_until(lambda: by_mode()["put"]["bytes"] == 1500)
    assert plain.end().status == 204
    assert [u["mode"] for u in uploads(svc.url)] == ["append"]
    # A recorder whose link breaks: listed as interrupted with the record's size, until it comes back.
    live.drop(reset=True)
    assert wait_until(lambda: uploads(svc.url) and uploads(svc.url)[0]["state"] == "interrupted")
    (broken,) = uploads(svc.url)
    assert broken["bytes"] == 300 and broken["size"] == 300 and broken["reason"] and broken["ended"]
    back = Appender(svc.url, record_url(EVENT, "2024-01-02T00:00:00") + "?append=true")
    back.send(b"c" * 10)
    assert wait_until(lambda: [u["state"] for u in uploads(svc.url)] == ["receiving"])
    assert back.end().status == 204
    assert uploads(svc.url) == []
    # Interrupted again, then deleted: gone from the list.
    again = Appender(svc.url, record_url(EVENT, "2024-01-02T00:00:00") + "?append=true")
    again.send(b"d")
    assert wait_until(lambda: [u["bytes"] for u in uploads(svc.url)] == [1])
    again.drop(reset=True)
    assert wait_until(lambda: [u["state"] for u in uploads(svc.url)] == ["interrupted"])
    assert request(svc.url, "DELETE", record_url(EVENT, "2024-01-02T00:00:00"))[0] == 204
    assert uploads(svc.url) == []


def test_a_listener_hears_a_plain_upload_from_its_start_and_what_comes_after(service) -> None:
    svc = service()
    upload = Appender(svc.url, record_url(), {"Content-Type": "audio/ogg"})
    upload.send(b"before the listener;")
    assert wait_until(lambda: uploads(svc.url) and uploads(svc.url)[0]["bytes"] == 20)
    listener = Listener(svc.url)
    assert listener.head.startswith("HTTP/1.1 200")
    assert "Content-Type: audio/ogg" in listener.head and "Cache-Control: no-store" in listener.head
    assert wait_until(lambda: listener.body == b"before the listener;")
    for n in range(5):
        upload.send(f" part {n};".encode())
        time.sleep(0.2)
    assert wait_until(lambda: listener.body == upload.sent)
    assert not listener.ended.is_set()  # it follows the upload while the upload goes on
    assert upload.end().status == 204
    assert listener.ended.wait(10)
    assert listener.body == upload.sent == request(svc.url, "GET", record_url())[2]


def test_a_listener_follows_an_append_mode_recording_through_its_joins_and_breaks(service) -> None:
    join = 0.5  # --append-join-interval (3 s by default)
    svc = service("--append-join-interval", str(join))
    recorder = Appender(svc.url)
    recorder.send(b"A" * 1000)
    assert wait_until(lambda: uploads(svc.url) and uploads(svc.url)[0]["bytes"] == 1000)
    listener = Listener(svc.url)
    deadline = time.monotonic() + 2.7 * join  # past two joins
    n = 0
    while time.monotonic() < deadline:
        recorder.send(bytes([66 + n % 20]) * 500)
        n += 1
        time.sleep(0.1)
    assert wait_until(lambda: listener.body == recorder.sent)  # live: it does not wait for the joins
    assert recorder.end().status == 204
    assert listener.ended.wait(10)
    assert listener.body == recorder.sent == request(svc.url, "GET", record_url())[2]
    # A listener of a record with no upload in flight is sent to the record itself.
    status, headers, _ = request(svc.url, "GET", LIVE)
    assert status == 307 and headers["Location"] == record_url()
    # A listener who comes while the recorder appends to a long record hears the record from its beginning.
    before = request(svc.url, "GET", record_url())[2]
    recorder = Appender(svc.url)
    recorder.send(b"Z" * 70000)
    assert wait_until(lambda: uploads(svc.url) and uploads(svc.url)[0]["bytes"] == 70000)
    listener = Listener(svc.url)
    assert wait_until(lambda: listener.body == before + b"Z" * 70000)
    recorder.send(b"Y" * 10)
    assert recorder.end().status == 204
    assert listener.ended.wait(10)
    assert listener.body == before + b"Z" * 70000 + b"Y" * 10 == request(svc.url, "GET", record_url())[2]


def test_live_of_a_record_that_is_neither_stored_nor_in_flight_is_404(service) -> None:
    svc = service()
    status, headers, body = request(svc.url, "GET", LIVE)
    assert status == 404 and headers["Content-Type"].startswith("application/json") and json.loads(body)["detail"]
    assert request(svc.url, "GET", "/records/not-a-uuid/2024-01-01T00:00:00/live")[0] == 400
    assert request(svc.url, "GET", record_url(EVENT, "yesterday") + "/live")[0] == 400


def test_a_listener_that_leaves_does_not_disturb_the_upload(service) -> None:
    svc = service()
    upload = Appender(svc.url, record_url())
    upload.send(b"x" * 100_000)
    assert wait_until(lambda: uploads(svc.url) and uploads(svc.url)[0]["bytes"] == 100_000)
    listener = Listener(svc.url)
    assert wait_until(lambda: len(listener.body) == 100_000)
    listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    listener.sock.close()
    upload.send(b"y" * 100_000)
    assert upload.end().status == 204
    assert request(svc.url, "GET", record_url())[2] == upload.sent
    assert "Traceback" not in svc.log
