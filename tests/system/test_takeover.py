"""One live recorder per record (issue 22), driven by hand: a standby's bytes wait and join only from the live one's
last byte on, when the live one ends or goes silent for --append-takeover seconds; a standby that ends while the live
one streams is dropped; the parts of the record say where each request's bytes lie; a kill -9 loses nothing."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time

from support.appender import APPEND, Appender, body_of
from support.rawhttp import request
from support.records import EVENT, record_url
from support.sse import events_until
from support.waiting import wait_until

TAKEOVER = 2.0


def parts_of(url: str) -> list[dict]:
    status, _, body = request(url, "GET", record_url() + "/parts")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["event"] == EVENT
    return answer["parts"]


def wait_written(svc, count: int) -> None:
    """Until the service has received `count` bytes of append requests in flight (GET /uploads)."""
    def received() -> int:
        return sum(upload["bytes"] for upload in json.loads(request(svc.url, "GET", "/uploads")[2])["uploads"])

    assert wait_until(lambda: received() >= count), received()


def test_a_standby_joins_after_the_live_one_ends(service) -> None:
    svc = service("--append-takeover", str(TAKEOVER))
    stop = threading.Event()
    events = events_until(svc.url, stop)
    live, standby = Appender(svc.url), Appender(svc.url)
    live.send(b"live-1;")
    wait_written(svc, 7)
    standby.send(b"standby-1;")  # the same audio as live-1: never joined
    wait_written(svc, 17)
    assert wait_until(lambda: any(e["type"] == "recorder-standby" for e in events))
    live.send(b"live-2;")
    wait_written(svc, 24)
    assert live.end().status == 204
    standby.send(b"standby-2;")  # after the live one's last byte: joins
    assert wait_until(lambda: body_of(svc.url) == b"live-1;live-2;standby-2;", timeout=JOIN_WAIT)
    standby.send(b"standby-3;")
    assert standby.end().status == 204
    whole = b"live-1;live-2;standby-2;standby-3;"
    assert body_of(svc.url) == whole
    takeover = next(e["data"] for e in events if e["type"] == "recorder-takeover")
    assert takeover["reason"] == "ended" and 0 <= takeover["gap"] < 5, takeover
    parts = parts_of(svc.url)
    assert [(p["offset"], p["length"], p["ended"], p["append"]) for p in parts] == [
        (0, 14, "completed", True), (14, len(whole) - 14, "completed", True)
    ]  # fmt: skip
    assert parts[0]["last"] <= parts[1]["first"]
    stop.set()


JOIN_WAIT = 10


def test_a_silent_live_recorder_is_superseded_by_the_standby(service) -> None:
    svc = service("--append-takeover", str(TAKEOVER))
    stop = threading.Event()
    events = events_until(svc.url, stop)
    live, standby = Appender(svc.url), Appender(svc.url)
    live.send(b"live;")  # then silent: a dead link the service has not noticed
    wait_written(svc, 5)
    silent_since = time.monotonic()
    standby.send(b"early;")  # after the live one's last byte: the first the takeover joins
    wait_written(svc, 11)
    late = b""
    while not (body_of(svc.url) or b"").startswith(b"live;early;s0;") and time.monotonic() - silent_since < 15:
        piece = b"s%d;" % len(late)
        standby.send(piece)  # a recorder streams on
        late += piece
        time.sleep(0.2)
    in_record = time.monotonic() - silent_since
    print(f"the standby's bytes were in the record {in_record:.2f} s after the live one's last byte")
    assert TAKEOVER <= in_record < TAKEOVER + 1
    answer = live.answer()
    assert answer.status == 409 and "took over" in json.loads(answer.body)["detail"]
    assert standby.end().status == 204
    assert body_of(svc.url) == b"live;early;" + late  # the standby's bytes from the live one's last byte on
    assert wait_until(lambda: any(e["type"] == "recorder-takeover" for e in events))
    takeover = next(e["data"] for e in events if e["type"] == "recorder-takeover")
    assert takeover["reason"] == "silent" and takeover["gap"] > 0, takeover
    interrupted = [e["data"] for e in events if e["type"] == "upload-interrupted"]
    assert [e["reason"] for e in interrupted] == ["superseded"] and interrupted[0]["bytes"] == 5
    assert [p["ended"] for p in parts_of(svc.url)] == ["superseded", "completed"]
    stop.set()


def test_a_standby_that_ends_while_the_live_one_streams_adds_nothing(service) -> None:
    svc = service("--append-takeover", str(TAKEOVER))
    live, standby = Appender(svc.url), Appender(svc.url)
    live.send(b"live-1;")
    wait_written(svc, 7)
    standby.send(b"twice;")
    wait_written(svc, 13)
    ender = threading.Thread(target=lambda: standby.end())
    ender.start()
    for index in range(6):  # the live one streams on
        live.send(b"live-%d;" % (index + 2))
        time.sleep(0.3)
    ender.join(timeout=10)
    assert not ender.is_alive()
    assert live.end().status == 204
    assert body_of(svc.url) == b"live-1;live-2;live-3;live-4;live-5;live-6;live-7;"
    assert [p["ended"] for p in parts_of(svc.url)] == ["completed"]


def test_a_plain_upload_is_one_part_and_a_deleted_record_has_none(service) -> None:
    svc = service()
    assert request(svc.url, "PUT", record_url(), b"x" * 100, {"Content-Type": "audio/ogg"})[0] == 204
    [part] = parts_of(svc.url)
    assert part["offset"] == 0 and part["length"] == 100 and part["ended"] == "completed" and not part["append"]
    assert part["first"] <= part["last"]
    assert request(svc.url, "PUT", APPEND, b"y" * 10)[0] == 204
    assert [(p["offset"], p["length"], p["append"]) for p in parts_of(svc.url)] == [(0, 100, False), (100, 10, True)]
    assert request(svc.url, "DELETE", record_url())[0] == 204
    assert request(svc.url, "GET", record_url() + "/parts")[0] == 404
    assert request(svc.url, "PUT", record_url(), b"z")[0] == 204
    assert [(p["offset"], p["length"]) for p in parts_of(svc.url)] == [(0, 1)]


def test_kill_9_during_a_takeover_loses_nothing(service) -> None:
    svc = service("--append-takeover", "30")
    live, standby = Appender(svc.url), Appender(svc.url)
    live.send(b"live;")
    wait_written(svc, 5)
    standby.send(b"standby-1;")
    standby.send(b"standby-2;")
    wait_written(svc, 25)
    assert wait_until(lambda: sum(f.stat().st_size for f in (svc.data_dir / "blobs").iterdir()) >= 25)
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait()
    live.drop()
    standby.drop()
    again = service(data_dir=svc.data_dir)
    whole = b"live;standby-1;standby-2;"  # every byte that arrived: the standby's, unjoined, join after the live one's
    status, headers, body = request(again.url, "GET", record_url())
    assert status == 200 and body == whole and headers["ETag"] == f'"{hashlib.sha256(whole).hexdigest()}"'
    assert [(p["offset"], p["length"], p["ended"]) for p in parts_of(again.url)] == [(0, 5, "restart"),
                                                                                  (5, 20, "restart")]  # fmt: skip


def test_a_standby_keeps_a_bounded_part_of_what_the_live_one_has(service) -> None:
    """A standby that streams for long beside a live recorder gives back the disk space of its bytes from before the
    live one's last byte, but the last 16 MiB of them and its first MiB (the space of a hole punched in its file):
    48 MiB received, at most 16 + 1 MiB and what came since the last give-back (under 32 MiB) on the disk."""
    svc = service("--append-takeover", "30")
    live, standby = Appender(svc.url), Appender(svc.url)
    sent = b""
    live.send(b"live-0;")
    sent += b"live-0;"
    wait_written(svc, 7)
    block = b"s" * (64 << 10)
    for index in range(48 * 16):  # 48 MiB, the live one bringing a byte now and then
        standby.send(block)
        if index % 64 == 0:
            piece = b"live-%d;" % (index // 64 + 1)
            live.send(piece)
            sent += piece
    wait_written(svc, len(sent) + (48 << 20))
    files = sorted((svc.data_dir / "blobs").iterdir(), key=lambda path: path.stat().st_size)
    kept = lambda: files[-1].stat().st_blocks * 512  # noqa: E731 (the standby's file: the largest)
    assert files[-1].stat().st_size == 48 << 20
    assert wait_until(lambda: kept() < 33 << 20), kept()
    print(f"the standby's file: 48 MiB long, {kept() / (1 << 20):.1f} MiB on the disk")
    live.send(b"live-last;")  # after all the standby brought: none of that joins
    sent += b"live-last;"
    wait_written(svc, len(sent) + (48 << 20))
    assert live.end().status == 204
    standby.send(b"after;")
    assert standby.end().status == 204
    assert body_of(svc.url) == sent + b"after;"
