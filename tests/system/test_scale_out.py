"""Several `tornado-records` processes on one PostgreSQL index (and one data directory), behind nginx, or on one SQLite
index (services of --processes 2, started by hand on one data directory, port each): what one
stores, the others list and send; every process's /sse gives every event of every process once, in one order; a
process killed with SIGKILL leaves nothing visible, and what it leaves behind is tidied by another; writers racing on
two processes leave one whole winner."""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from support.appender import Appender, body_of
from support.processes import kill_9
from support.races import race_writers
from support.rawhttp import request
from support.records import EVENT, files_in, record_url, run_on_index
from support.sse import events_of
from support.tus import CHUNK, TUS
from support.waiting import wait_until


# for tests that count the uploads' events: no record-analyzed (which comes whenever an analysis ends)
UPLOADS_EVENTS_ONLY = ("--analysis-workers", "0")


@pytest.fixture(params=["postgresql", "sqlite"])
def shared(request: pytest.FixtureRequest) -> dict[str, str]:
    """The index the processes share, as `engine` gives it: a PostgreSQL database, or the data directory's SQLite
    file (for services of --processes 2)."""
    return {"index": request.getfixturevalue("postgres_url")} if request.param == "postgresql" else {}


def processes(service, shared: dict[str, str], count: int = 2, *flags: str) -> list:  # noqa: ANN001
    """`count` services on one data directory and one index: on PostgreSQL, a process each; on SQLite, each of two
    processes (--processes 2), so that two of them are sure to answer through different processes."""
    on = ("--index", shared["index"]) if shared else ("--processes", "2")
    return [service(*on, *flags) for _ in range(count)]



def test_what_one_process_stores_the_other_lists_sends_and_deletes(service, nginx, shared) -> None:
    a, b = processes(service, shared, 2, "--accel-redirect", "/_blobs/")
    body = os.urandom(300_000)
    assert request(a.url, "PUT", record_url(), body, {"Content-Type": "audio/ogg"})[0] == 204
    status, headers, listed = request(b.url, "GET", f"/records/{EVENT}")
    assert status == 200 and [r["size"] for r in json.loads(listed)["records"]] == [len(body)]
    assert json.loads(request(b.url, "GET", "/records")[2])["events"][0]["records"] == 1
    assert request(b.url, "PUT", f"/records/{EVENT}", b'{"title": "Morning"}')[0] == 200
    assert json.loads(request(a.url, "GET", f"/records/{EVENT}")[2])["title"] == "Morning"
    # through nginx, in front of both: whichever answers, nginx sends the same bytes (X-Accel-Redirect)
    front = nginx(a, [b])
    for _ in range(4):
        status, headers, got = request(front.url, "GET", record_url())
        assert status == 200 and got == body and headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert request(b.url, "DELETE", record_url())[0] == 204
    assert request(a.url, "GET", record_url())[0] == 404


def test_every_process_streams_every_event_once_in_one_order(service, nginx, shared) -> None:
    a, b = processes(service, shared, 2, *UPLOADS_EVENTS_ONLY)
    front = nginx(a, [b])
    uploads = 6
    expected = uploads * 2 + 1  # upload-started and record-created each, then record-deleted
    seen_a: list = []
    seen_b: list = []
    readers = [events_of(a.url, expected, seen_a), events_of(b.url, expected, seen_b)]
    for n in range(uploads):  # nginx takes turns between the two
        assert request(front.url, "PUT", record_url(start=f"2024-01-01T0{n}:00:00"), b"x" * (n + 1))[0] == 204
    assert request(front.url, "DELETE", record_url(start="2024-01-01T00:00:00"))[0] == 204
    for reader in readers:
        reader.join(timeout=20)
    assert len(seen_a) == expected and seen_a == seen_b  # the same events, ids and order on both
    ids = [event_id for event_id, _ in seen_a]
    assert ids == sorted(set(ids))  # each once, in increasing order
    created = [e["data"]["record"]["start"] for _, e in seen_a if e["type"] == "record-created"]
    assert sorted(created) == [f"2024-01-01T0{n}:00:00" for n in range(uploads)]
    # Last-Event-ID on the other process replays from the shared log: nothing lost across a reconnect
    middle = ids[4]
    replay: list = []
    reader = events_of(b.url, expected - 5, replay, last_id=middle)
    reader.join(timeout=20)
    assert replay == seen_a[5:]


def test_kill_9_during_an_upload_leaves_nothing_and_the_others_tidy_up(service, shared) -> None:
    a, b = processes(service, shared)
    data = a.data_dir
    unfinished = Appender(a.url, record_url())  # a plain PUT this time, left unfinished
    unfinished.send(os.urandom(200_000))
    assert wait_until(lambda: sum(p.stat().st_size for p in (data / "tmp").rglob("*.part")) == 200_000)
    kill_9(a)
    assert request(b.url, "GET", record_url())[0] == 404  # nothing visible
    assert request(b.url, "PUT", record_url(start="2024-01-02T00:00:00"), b"still serving")[0] == 204
    assert files_in(data / "tmp") != []  # the killed process's upload is still there: no live process owns it
    (c,) = processes(service, shared, 1)  # a process that starts tidies what ended processes left
    assert files_in(data / "tmp") == []
    assert request(c.url, "GET", f"/records/{EVENT}")[0] == 200
    assert len(files_in(data / "blobs")) == 1  # the one record's blob; nothing leaked
    b.stop()
    c.stop()


def test_an_append_of_a_killed_process_joins_before_the_next_on_another(service, shared) -> None:
    a, b = processes(service, shared)
    first = Appender(a.url)
    first.send(b"head of the broadcast;")

    def in_its_file() -> bool:  # the piece is listed in the index, and its bytes are in its file (spool.py's lag)
        rows = run_on_index(shared, a.data_dir, "SELECT blob FROM appends")
        return len(rows) == 1 and (a.data_dir / "blobs" / rows[0][0]).stat().st_size == 22

    assert wait_until(in_its_file)
    kill_9(a)
    second = Appender(b.url)
    second.send(b" the rest.")
    assert second.end().status == 204
    assert body_of(b.url) == b"head of the broadcast; the rest."
    assert run_on_index(shared, a.data_dir, "SELECT count(*) FROM appends") == [(0,)]


def test_racing_writers_on_two_processes_leave_one_whole_winner(service, shared) -> None:
    a, b = processes(service, shared)
    bodies = [bytes([n]) * 500_000 for n in range(8)]
    statuses = race_writers(a, b, bodies)
    assert sorted(statuses) == [204] + [412] * (len(bodies) - 1), statuses
    winner = bodies[statuses.index(204)]
    assert body_of(a.url) == winner and body_of(b.url) == winner
    assert len(files_in(a.data_dir / "blobs")) == 1 and files_in(a.data_dir / "tmp") == []


def test_a_resumable_upload_goes_on_through_any_process_one_request_at_a_time(service, shared) -> None:
    a, b = processes(service, shared)
    body = os.urandom(600_000)
    status, headers, _ = request(a.url, "POST", record_url(), b"", {**TUS, "Upload-Length": str(len(body))})
    assert status == 201
    upload = headers["Location"].split("/uploads/", 1)[1]
    path = f"/uploads/{upload}"
    assert request(b.url, "PATCH", path, body[:200_000], {**TUS, **CHUNK, "Upload-Offset": "0"})[0] == 204
    # a request on one process holds the upload, and its link dies silently (the service's side stays open); the
    # client comes back through the other process: the newer request wins there within --append-takeover seconds,
    # as within one process, and the bytes the old one brought count
    holding = Appender(a.url, path, {**TUS, **CHUNK, "Upload-Offset": "200000"}, method="PATCH")
    holding.send(body[200_000:300_000])
    assert wait_until(lambda: (Path(a.data_dir) / "uploads" / upload).stat().st_size == 300_000)
    began = time.monotonic()
    status, headers, _ = request(b.url, "HEAD", path, None, TUS)
    taken = time.monotonic() - began
    print(f"the other process's request was taken over in {taken:.2f} s")
    assert status == 200 and headers["Upload-Offset"] == "300000" and taken < 5 + 1
    assert request(b.url, "PATCH", path, body[300_000:], {**TUS, **CHUNK, "Upload-Offset": "300000"})[0] == 204
    holding.drop()
    assert body_of(a.url) == body
    assert request(a.url, "HEAD", path, None, TUS)[1]["Upload-Offset"] == str(len(body))


def test_connections_to_the_index_that_are_lost_are_made_again(service, postgres_url) -> None:
    engine = {"index": postgres_url}
    a, b = processes(service, engine, 2, *UPLOADS_EVENTS_ONLY)
    seen: list = []
    reader = events_of(b.url, 4, seen)
    # PostgreSQL ends every connection of the processes (as a restart of the server or a failover would)
    ended = run_on_index(engine, a.data_dir, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()")  # fmt: skip
    assert ended[0][0] >= 6  # each process: a writer, a reader, the event log's two, the metrics and retention reader
    assert request(a.url, "PUT", record_url(), b"after the break", {"Content-Type": "audio/ogg"})[0] == 204
    assert request(b.url, "PUT", record_url(start="2024-01-02T00:00:00"), b"on b too")[0] == 204
    assert body_of(b.url) == b"after the break"
    assert json.loads(request(b.url, "GET", f"/records/{EVENT}")[2])["count"] == 2
    reader.join(timeout=20)
    assert [e["type"] for _, e in seen] == ["upload-started", "record-created"] * 2  # the events still reach /sse
    # each process holds its name again (what it leaves if it ends is found by the others)
    held = run_on_index(engine, a.data_dir, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND classid = 1953723252 AND granted")  # fmt: skip
    assert held == [(2,)]


def test_a_change_and_its_event_are_kept_in_one_transaction(service, shared) -> None:
    """With a shared index, a record's change writes its event in the change's own transaction: once the change
    is answered its event is in the table (a crash cannot keep one without the other), after the upload's own."""
    (svc,) = processes(service, shared, 1)
    for n in range(10):
        path = record_url(start=f"2024-01-01T00:00:{n:02d}")
        status, headers, _ = request(svc.url, "PUT", path, b"take %d" % n)
        assert status == 204
        last = changes(shared, svc.data_dir)[-2:]
        assert [e["type"] for e in last] == ["upload-started", "record-created"]
        assert last[1]["data"]["record"]["etag"] == headers["ETag"]
    assert request(svc.url, "DELETE", path)[0] == 204
    assert changes(shared, svc.data_dir)[-1]["type"] == "record-deleted"


def changes(shared: dict[str, str], data_dir: Path) -> list[dict]:
    """The events in the index's table, in order, but for the analyses' (which come whenever an analysis ends)."""
    rows = run_on_index(shared, data_dir, "SELECT wire FROM events ORDER BY id")
    events = [json.loads(bytes(wire).split(b"data: ")[1]) for (wire,) in rows]
    return [e for e in events if e["type"] != "record-analyzed"]


def test_a_long_listing_on_one_process_shows_at_once_what_another_created_or_deleted(service, shared) -> None:
    """Over 1,000 records, an event's starts are kept in each process's memory for pages between bounds or deep in
    the middle (starts.SqlStarts), the others are read from the nearer end: a record that another process creates or
    deletes is in the next page all the same, either way."""
    a, b = processes(service, shared)
    first = datetime.datetime(2024, 1, 1)
    starts = [first + datetime.timedelta(minutes=2 * n) for n in range(1001)]
    conn = http.client.HTTPConnection(*urllib.parse.urlsplit(a.url).netloc.split(":"), timeout=30)
    for start in starts:
        conn.request("PUT", record_url(EVENT, start.isoformat()), body=b"x")
        answer = conn.getresponse()
        assert answer.read() == b"" and answer.status == 204
    conn.close()

    def page_is_the_models(query: dict[str, str]) -> None:
        after, before = query.get("after"), query.get("before")
        expected = sorted(s.isoformat() for s in starts)
        expected = [s for s in expected if (not after or s > after) and (not before or s < before)]
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 10))
        expected_page = (expected[::-1] if query.get("order") == "desc" else expected)[offset : offset + limit]
        body = json.loads(request(b.url, "GET", f"/records/{EVENT}?{urllib.parse.urlencode(query)}")[2])
        assert body["count"] == len(expected) and [r["start"] for r in body["records"]] == expected_page, query

    middle = {"offset": "500", "limit": "10", "order": "desc"}
    kept = {**middle, "after": "2023-12-31T00:00:00"}  # bounds that leave them all, but take the kept starts
    pages = (middle, kept, {"offset": "3"}, {"offset": "995", "order": "desc"})
    for query in pages:
        page_is_the_models(query)
    created = first + datetime.timedelta(minutes=999)  # between two of them, in the middle pages' stretch
    assert request(a.url, "PUT", record_url(EVENT, created.isoformat()), b"y")[0] == 204
    starts.append(created)
    for query in pages:
        page_is_the_models(query)
    for gone, through in ((starts[498], a), (starts[502], b), (starts[0], a)):
        assert request(through.url, "DELETE", record_url(EVENT, gone.isoformat()))[0] == 204
        starts.remove(gone)
        for query in pages:
            page_is_the_models(query)
    page_is_the_models({"after": starts[300].isoformat(), "before": starts[700].isoformat(), "offset": "150"})
    page_is_the_models({"offset": "990", "limit": "20"})
