"""The storage contract: what every engine (an index: SQLite or PostgreSQL; content: files or S3 objects) does the
same, tested in-process on the real engines (PostgreSQL and SeaweedFS started once per run), through RecordStore and
the uploads that feed it, and through the commands that read a service's records (`check`, `backup`).

A new storage engine is added when these pass on it (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import random
import secrets
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from support.waiting import eventually
from tornado_records.commands.backup import backup
from tornado_records.commands.check import check
from tornado_records.commands.datadir import Source
from tornado_records.storage import catalogue
from tornado_records.storage.model import (
    ContentDamaged,
    DigestMismatch,
    PreconditionFailed,
    Record,
    RecordNotFound,
)
from tornado_records.storage.store import RecordStore
from tornado_records.uploads import replace

EVENT = uuid.UUID("0f339cb0-7ab4-43fe-852d-75708232f76c")
START = datetime.datetime(2024, 1, 1)
ENGINES = ("sqlite", "postgresql", "s3", "sqlite-s3", "sqlite-shared")  # the index, then the content's engine where
# not files; sqlite-shared: the SQLite index as the processes of --processes N share it
SHARED_ROOT = "shared-data"  # the data directory of sqlite-shared's store


@pytest.fixture(params=ENGINES)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Source:
    """Where the store under test keeps its records: a data directory and, by the engine, a PostgreSQL database (one
    of the pool with the tables made and emptied) and an S3 bucket's prefix of the test's own (the keys in the
    environment, as an operator gives them)."""
    name = request.param
    index = request.getfixturevalue("app_database_url") if name in ("postgresql", "s3") else "sqlite"
    blobs = ""
    if name.endswith("s3"):
        monkeypatch = request.getfixturevalue("monkeypatch")
        for variable, value in request.getfixturevalue("s3_env").items():
            monkeypatch.setenv(variable, value)
        blobs = f"s3://{request.getfixturevalue('shared_bucket')}/{secrets.token_hex(6)}/records"
    return Source(tmp_path / (SHARED_ROOT if name == "sqlite-shared" else "data"), index, blobs)


@pytest.fixture
def store(where: Source) -> Iterator[RecordStore]:
    store = open_store(where)
    yield store
    store.close()


def reopen(store: RecordStore, where: Source) -> RecordStore:
    """The store closed and opened again on the same engines (a restart)."""
    store.close()
    return open_store(where)


def open_store(where: Source) -> RecordStore:
    return RecordStore(where.root, where.index, where.blobs, shared=where.root.name == SHARED_ROOT)


def body(size: int, seed: str = "") -> bytes:
    return random.Random(seed or size).randbytes(size)


async def put(
    store: RecordStore, data: bytes, start: datetime.datetime = START, condition=None, expected=None, chunk=65536
) -> tuple[Record, bool]:  # noqa: ANN001
    """A plain upload of `data`, as a PUT brings it: chunk after chunk into the sink, then the commit."""
    upload = await replace.begin(store, EVENT, start, "audio/mpeg", expected)
    for at in range(0, len(data), chunk):
        lagging = upload.write(data[at : at + chunk])
        if lagging is not None:
            await lagging
    return await upload.commit(condition)


def read_all(store: RecordStore, start: datetime.datetime = START) -> bytes:
    blob = store.open(EVENT, start)
    try:
        out = io.BytesIO()
        while data := blob.file.read(1 << 20):
            out.write(data)
        return out.getvalue()
    finally:
        blob.close()


async def append(store: RecordStore, pieces: list[bytes], start: datetime.datetime = START) -> Record:
    """One append piece's file filled with `pieces`, each joined to the record as it is written (as a live
    recorder's joins every few seconds), then the piece ended."""
    name = store.joins.new_piece()
    await store.joins.note(name, str(EVENT), start.isoformat(), "audio/mpeg")
    joined = 0
    record = None
    with open(store.joins.path(name), "ab") as file:
        for piece in pieces:
            file.write(piece)
            file.flush()
            record, _ = await store.joins.join(
                name, str(EVENT), start.isoformat(), "audio/mpeg", joined, joined + len(piece), (0.0, 0.0)
            )
            joined += len(piece)
    store.joins.let_go_of(name)
    await store.joins.forget(name)
    store.joins.ended(name, str(EVENT), start.isoformat())
    await store.settle()
    return record


# -- one version ---------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_committed_upload_is_the_record_with_its_bytes_and_hash(store: RecordStore) -> None:
    data = body(3 << 20)
    record, created = await put(store, data)
    assert created
    assert (record.size, record.type, record.sha256) == (len(data), "audio/mpeg", hashlib.sha256(data).hexdigest())
    assert store.get(EVENT, START) == record
    assert read_all(store) == data
    assert record.blob in store.content.names()
    assert list(store.tmp.iterdir()) == []  # nothing left in flight


@pytest.mark.gen_test
async def test_an_empty_upload_is_an_empty_record(store: RecordStore) -> None:
    record, _ = await put(store, b"")
    assert (record.size, record.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert read_all(store) == b""


@pytest.mark.gen_test
async def test_a_replacement_removes_the_old_content_and_is_not_new(store: RecordStore) -> None:
    old, _ = await put(store, body(1000, "old"))
    new, created = await put(store, body(2000, "new"))
    assert not created and new.blob != old.blob
    assert read_all(store) == body(2000, "new")
    names = store.content.names()
    assert new.blob in names and old.blob not in names


@pytest.mark.gen_test
async def test_a_condition_that_fails_changes_nothing_and_leaves_no_blob(store: RecordStore) -> None:
    first, _ = await put(store, body(500, "first"))
    before = set(store.content.names())
    with pytest.raises(PreconditionFailed):
        await put(store, body(700, "second"), condition=lambda current: current is None)
    assert store.get(EVENT, START) == first and read_all(store) == body(500, "first")
    assert set(store.content.names()) == before and list(store.tmp.iterdir()) == []


@pytest.mark.gen_test
async def test_content_without_its_announced_digest_is_refused_and_leaves_nothing(store: RecordStore) -> None:
    with pytest.raises(DigestMismatch):
        await put(store, body(1000), expected={"sha256": hashlib.sha256(b"other").digest()})
    with pytest.raises(RecordNotFound):
        store.get(EVENT, START)
    assert store.content.names() == [] and list(store.tmp.iterdir()) == []


@pytest.mark.gen_test
async def test_a_delete_removes_the_record_and_its_content(store: RecordStore) -> None:
    record, _ = await put(store, body(1000))
    removed = await store.delete(EVENT, START)
    assert removed == record
    with pytest.raises(RecordNotFound):
        store.get(EVENT, START)
    with pytest.raises(RecordNotFound):
        await store.delete(EVENT, START)
    assert record.blob not in store.content.names()


@pytest.mark.gen_test
async def test_a_blob_gone_behind_the_store_s_back_is_damage_not_a_crash(store: RecordStore) -> None:
    record, _ = await put(store, body(1000))
    store.content.remove(record.blob)
    with pytest.raises((ContentDamaged, FileNotFoundError)):  # files: at the open; objects: at the first read
        read_all(store)


@pytest.mark.gen_test
async def test_a_reader_keeps_the_version_it_opened_while_it_is_replaced(store: RecordStore) -> None:
    await put(store, body(4000, "old"))
    blob = store.open(EVENT, START)
    try:
        first = blob.file.read(1000)
        await put(store, body(4000, "new"))
        rest = b""
        while data := blob.file.read(1 << 20):
            rest += data
    except FileNotFoundError:  # an object store may cut a reader off whose object was removed (docs/scale-out.md)
        assert store.content.unit == "objects"
        return
    finally:
        blob.close()
    assert first + rest == body(4000, "old")
    assert read_all(store) == body(4000, "new")


@pytest.mark.gen_test
async def test_only_a_whole_file_is_handed_to_sendfile(store: RecordStore) -> None:
    record, _ = await put(store, body(1000))
    name = store.sealed_file(record)
    assert name == (record.blob if store.content.unit == "files" else None)
    if name is not None:
        assert (store.blobs / name).read_bytes() == body(1000)


@pytest.mark.gen_test
async def test_the_content_hash_is_the_record_s_after_a_restart(store: RecordStore, where: Source) -> None:
    record, _ = await put(store, body(5000))
    store = reopen(store, where)
    try:
        assert store.content_hash(record).hexdigest() == record.sha256
    finally:
        store.close()


# -- listings and titles ---------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_listing_pages_by_start_in_both_orders(store: RecordStore) -> None:
    starts = [START + datetime.timedelta(hours=hour) for hour in range(12)]
    for start in starts:
        await put(store, body(10, start.isoformat()), start)
    page = await store.list(EVENT, limit=5, offset=3)
    assert page.count == 12 and [r.start for r in page.records] == [s.isoformat() for s in starts[3:8]]
    page = await store.list(EVENT, limit=4, descending=True)
    assert [r.start for r in page.records] == [s.isoformat() for s in reversed(starts[-4:])]
    page = await store.list(EVENT, after=starts[2], before=starts[6], limit=100)
    assert page.count == 3 and [r.start for r in page.records] == [s.isoformat() for s in starts[3:6]]
    await store.delete(EVENT, starts[4])
    page = await store.list(EVENT, after=starts[2], before=starts[6], limit=100)
    assert page.count == 2
    assert (await store.list(uuid.uuid4())).count == 0


@pytest.mark.gen_test
async def test_events_have_titles_and_counts(store: RecordStore) -> None:
    await put(store, body(10))
    await put(store, body(20), START + datetime.timedelta(days=1))
    await store.set_details(EVENT, {"title": "Morning show", "timezone": "Europe/Berlin"})
    assert store.details(EVENT).title == "Morning show"
    count, events = store.events(search="morning")
    assert count == 1 and events[0].to_json()["records"] == 2
    assert store.events(search="evening")[0] == 0
    # a change of some details keeps the others; None takes one away
    assert (await store.set_details(EVENT, {"title": None})).to_json() == {
        "title": None, "description": None, "author": None, "image": None, "timezone": "Europe/Berlin"
    }  # fmt: skip
    assert store.details(EVENT).title is None and store.details(EVENT).timezone == "Europe/Berlin"


@pytest.mark.gen_test
async def test_an_event_keeps_its_details_without_records_until_they_are_all_taken_away(store: RecordStore) -> None:
    other = uuid.uuid4()
    await store.set_details(other, {"author": "Station", "image": "https://radio.example/show.png"})
    assert store.details(other).author == "Station" and store.details(other).changed > 0
    await store.set_details(other, {"author": None})
    assert store.details(other).image == "https://radio.example/show.png"
    await store.set_details(other, {"image": None})
    assert store.details(other) == catalogue.EventDetails()  # the row is gone


# -- appends -------------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_joins_extend_the_record_and_its_hash(store: RecordStore) -> None:
    first, _ = await put(store, body(1000, "put"))
    pieces = [body(3000, "a"), body(5000, "b"), body(7, "c")]
    record = await append(store, pieces)
    whole = body(1000, "put") + b"".join(pieces)
    assert record.size == len(whole) and record.sha256 == hashlib.sha256(whole).hexdigest()
    assert read_all(store) == whole
    parts = store.joins.parts_of(EVENT, START)
    assert [(p["offset"], p["length"], p["append"]) for p in parts] == [(0, 1000, False), (1000, 8007, True)]
    assert store.sealed_file(store.get(EVENT, START)) is None  # runs of two blobs: no one file is the content
    assert not store.joins.writing


@pytest.mark.gen_test
async def test_an_ended_piece_leaves_one_blob_and_no_file_in_flight(store: RecordStore) -> None:
    await append(store, [body(4000, "x"), body(4000, "y"), body(4000, "z")])
    record = store.get(EVENT, START)
    assert len(record.segments) == 1  # its joins are one run (files: the piece's file; objects: merged)
    assert set(store.content.names()) == {record.segments[0].name}
    assert read_all(store) == body(4000, "x") + body(4000, "y") + body(4000, "z")
    if store.content.unit == "objects":
        assert list(store.blobs.iterdir()) == []  # the piece's file went once its bytes were objects


@pytest.mark.gen_test
async def test_bytes_an_append_received_join_at_the_next_start(store: RecordStore, where: Source) -> None:
    await put(store, body(100, "put"))
    name = store.joins.new_piece()
    await store.joins.note(name, str(EVENT), START.isoformat(), "audio/mpeg")
    store.joins.path(name).write_bytes(body(2500, "lost"))  # received, never joined: the process was killed
    store = reopen(store, where)
    try:
        assert read_all(store) == body(100, "put") + body(2500, "lost")
        assert [part["ended"] for part in store.joins.parts_of(EVENT, START)][-1] == "restart"
    finally:
        store.close()


@pytest.mark.gen_test
async def test_a_start_removes_uploads_in_flight_and_orphan_blobs(store: RecordStore, where: Source) -> None:
    record, _ = await put(store, body(100))
    (store.tmp / "left.part").write_bytes(b"half an upload")
    (store.blobs / "0123456789abcdef0123456789abcdef").write_bytes(b"named by nothing")
    tmp = store.tmp
    store = reopen(store, where)
    try:
        assert not (tmp / "left.part").exists() or store.shared  # one process alone removes all of tmp/
        if not store.shared:
            assert not (store.blobs / "0123456789abcdef0123456789abcdef").exists()
        assert read_all(store) == body(100)
        assert store.get(EVENT, START) == record
    finally:
        store.close()


# -- the commands, through the same interface ------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_check_finds_a_healthy_store_healthy(store: RecordStore, where: Source) -> None:
    await put(store, body(3000))
    await append(store, [body(100, "a"), body(200, "b")], START + datetime.timedelta(hours=1))
    out = io.StringIO()
    assert check(where, 0, out) == 0
    assert out.getvalue().rstrip().endswith(": healthy"), out.getvalue()
    assert "checked 2 records" in out.getvalue()


@pytest.mark.gen_test
async def test_check_names_the_record_of_a_missing_blob_and_fails(store: RecordStore, where: Source) -> None:
    record, _ = await put(store, body(3000))
    store.content.remove(record.blob)
    out = io.StringIO()
    assert check(where, 0, out) == 1
    lines = out.getvalue().splitlines()
    assert f"missing: /records/{EVENT}/{START.isoformat()}: {store.content.describe(record.blob)} does not exist" in lines


@pytest.mark.gen_test
async def test_check_names_the_record_of_damaged_content(store: RecordStore, where: Source) -> None:
    record, _ = await put(store, body(3000))
    damaged = Record(record.event, record.start, record.type, record.size, "0" * 64, record.modified, record.blob)
    await store.in_writer(lambda conn: conn.execute("UPDATE records SET sha256 = ?", (damaged.sha256,)))
    out = io.StringIO()
    assert check(where, 0, out) == 1
    assert f"damaged: /records/{EVENT}/{START.isoformat()}: its content's SHA-256 is {record.sha256}" in out.getvalue()


@pytest.mark.gen_test
async def test_a_backup_is_a_data_directory_with_every_record(store: RecordStore, where: Source, tmp_path: Path) -> None:
    await put(store, body(3000, "one"))
    await append(store, [body(100, "a"), body(200, "b")], START + datetime.timedelta(hours=1))
    await store.set_details(EVENT, {"title": "Evening news", "description": "Daily", "author": "Newsroom",
                                    "image": "https://radio.example/news.jpg", "timezone": "America/New_York"})
    out = io.StringIO()
    assert backup(where, tmp_path / "copy", 0, out) == 0, out.getvalue()
    copy = RecordStore(tmp_path / "copy")  # what `tornado-records --data-dir DEST` serves
    try:
        assert read_all(copy) == body(3000, "one")
        assert read_all(copy, START + datetime.timedelta(hours=1)) == body(100, "a") + body(200, "b")
        assert copy.details(EVENT).to_json() == store.details(EVENT).to_json()  # every detail carried over
        assert [r.sha256 for r in (await copy.list(EVENT)).records] == [r.sha256 for r in (await store.list(EVENT)).records]
    finally:
        copy.close()
    index = sqlite3.connect(tmp_path / "copy" / "records.sqlite3")
    assert index.execute("SELECT count(*) FROM records").fetchone() == (2,)
    index.close()


@pytest.mark.gen_test
async def test_uploads_at_once_to_many_records_are_all_kept(store: RecordStore) -> None:
    starts = [START + datetime.timedelta(minutes=m) for m in range(8)]
    await asyncio.gather(*(put(store, body(200_000, s.isoformat()), s, chunk=4096) for s in starts))
    for start in starts:
        assert read_all(store, start) == body(200_000, start.isoformat())


# -- commits that end together -------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_commits_that_end_together_share_a_turn_and_each_keeps_its_own_outcome(store: RecordStore) -> None:
    existing = START + datetime.timedelta(hours=1)
    taken, _ = await put(store, body(300, "taken"), existing)
    writer_free = threading.Event()
    store.writer.submit(writer_free.wait)  # the writer busy, as with another line: the commits wait together
    try:
        fresh = [START + datetime.timedelta(minutes=m) for m in range(6)]
        uploads = [put(store, body(100_000, s.isoformat()), s) for s in fresh]
        # two that want the same new record: one is refused; one whose record exists already: refused
        only_if_new = lambda current: current is None  # noqa: E731
        contested = START + datetime.timedelta(hours=2)
        uploads += [put(store, body(500, f"contested {n}"), contested, condition=only_if_new) for n in range(2)]
        uploads.append(put(store, body(700, "late"), existing, condition=only_if_new))
        outcomes = asyncio.gather(*uploads, return_exceptions=True)
        assert await eventually(lambda: store.commits.waiting == len(uploads)), "the commits did not all wait"
    finally:
        writer_free.set()
    results = await outcomes
    for start, result in zip(fresh, results[:6]):
        assert result == (store.get(EVENT, start), True) and read_all(store, start) == body(100_000, start.isoformat())
    contest = results[6:8]
    assert sorted(type(r).__name__ for r in contest) == ["PreconditionFailed", "tuple"]
    winner = next(n for n, r in enumerate(contest) if isinstance(r, tuple))
    assert read_all(store, contested) == body(500, f"contested {winner}")
    assert isinstance(results[8], PreconditionFailed) and store.get(EVENT, existing) == taken
    named = {record.blob for record in (await store.list(EVENT, limit=100)).records}
    assert set(store.content.names()) == named and list(store.tmp.iterdir()) == []  # no blob of a refused one


@pytest.mark.gen_test
async def test_commits_of_one_record_that_end_together_leave_the_last_one(store: RecordStore) -> None:
    writer_free = threading.Event()
    store.writer.submit(writer_free.wait)
    try:
        versions = [body(1000 + n, f"version {n}") for n in range(4)]
        outcomes = []
        for number, data in enumerate(versions):  # one after the other into the line: their order is known
            outcomes.append(asyncio.ensure_future(put(store, data)))
            assert await eventually(lambda: store.commits.waiting == number + 1)
    finally:
        writer_free.set()
    results = await asyncio.gather(*outcomes)
    assert [created for _, created in results] == [True, False, False, False]
    assert store.get(EVENT, START) == results[-1][0] and read_all(store) == versions[-1]
    assert store.content.names() == [results[-1][0].blob]
