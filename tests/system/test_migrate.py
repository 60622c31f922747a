"""`tornado-records migrate`: a data directory's records copied into an object store (SeaweedFS) and a PostgreSQL
index, each copy's SHA-256 checked; stopped half way, it goes on where it stopped; a record it cannot copy is said
and the rest are copied."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psycopg

from support.appender import Appender
from support.rawhttp import request
from support.records import EVENT, files_in, record_url
from support.s3 import PREFIX, objects
from support.service import COMMAND
from support.waiting import wait_until

OTHER = "6d7a1e44-0b5f-4c55-9a3e-2f1d8c0b9e11"


def fill(service, count: int) -> tuple[dict[str, bytes], Path, dict[str, dict]]:  # noqa: ANN001
    """A data directory with `count` records of EVENT, one of OTHER appended in two pieces, and a title; stopped.
    The content of each record by its path, the directory, and EVENT's listing by start."""
    svc = service()
    stored = {}
    for n in range(count):
        path = record_url(EVENT, f"2026-03-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}")
        stored[path] = os.urandom(1000 + n * 37)
        assert request(svc.url, "PUT", path, stored[path], {"Content-Type": "audio/ogg"})[0] == 204
    stored[record_url(OTHER)] = b""
    for piece in (b"first piece, ", b"second piece"):
        appender = Appender(svc.url, record_url(OTHER) + "?append=true")
        appender.send(piece)
        assert appender.end().status == 204
        stored[record_url(OTHER)] += piece
    assert request(svc.url, "PUT", f"/records/{EVENT}", b'{"title": "Morning show"}')[0] == 200

    def analysed() -> bool:  # some analyses are done (the rest are still pending): both are carried over as they are
        listing = json.loads(request(svc.url, "GET", f"/records/{EVENT}?limit=1000")[2])["records"]
        return any(record["analysis"] != "pending" for record in listing)

    assert wait_until(analysed, timeout=60)
    assert svc.stop() == 0
    still = service("--analysis-workers", "0", data_dir=svc.data_dir)  # the listing as it stays
    listed = json.loads(request(still.url, "GET", f"/records/{EVENT}?limit=1000")[2])["records"]
    assert still.stop() == 0
    return stored, svc.data_dir, {record["start"]: record for record in listed}


def run_migrate(data_dir, postgres_url: str, bucket: str, s3_env: dict[str, str]) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen(
        [*COMMAND, "migrate", "--data-dir", str(data_dir), "--index", postgres_url, "--blobs", f"s3://{bucket}/{PREFIX}"],
        env={**os.environ, **s3_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def copied(postgres_url: str) -> int:
    try:
        with psycopg.connect(postgres_url) as conn:
            return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return 0


def test_a_migration_stopped_half_way_goes_on_and_copies_every_record_whole(
    service, postgres_url, bucket, s3_env, seaweedfs, tmp_path
) -> None:
    stored, source, listed = fill(service, 300)
    first = run_migrate(source, postgres_url, bucket, s3_env)
    assert wait_until(lambda: copied(postgres_url) >= 100 or first.poll() is not None, timeout=120)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130 and "tornado-records migrate: interrupted" in err, (out, err)
    half = copied(postgres_url)
    assert 100 <= half < len(stored)
    assert len(objects(seaweedfs, bucket)) == half  # the object it was copying when stopped is not left behind

    again = run_migrate(source, postgres_url, bucket, s3_env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, (out, err)
    assert f"{len(stored) - half} record(s) copied" in out and f"{half} already there" in out and "0 not copied" in out

    # the service on the engines serves every record as the embedded one did: same bytes, ETag and Last-Modified,
    # and the analyses that were done (this service analyses nothing: what it shows was carried over)
    svc = service(
        "--index", postgres_url, "--blobs", f"s3://{bucket}/{PREFIX}", "--analysis-workers", "0",
        data_dir=tmp_path / "new", env=s3_env,
    )  # fmt: skip
    listing = json.loads(request(svc.url, "GET", f"/records/{EVENT}?limit=1000")[2])
    assert listing["count"] == len(stored) - 1 and listing["title"] == "Morning show"
    assert {r["analysis"] for r in listing["records"]} & {"unsupported"}  # random bytes, some analysed before
    for record in listing["records"]:
        assert record == listed[record["start"]] and record["type"] == "audio/ogg"
    for path, content in stored.items():
        status, _, body = request(svc.url, "GET", path)
        assert status == 200 and body == content, path
    assert len(objects(seaweedfs, bucket)) == len(stored)  # one object a record, nothing else
    assert files_in(tmp_path / "new" / "tmp") == []


def test_a_record_it_cannot_copy_is_said_and_the_rest_are_copied(service, postgres_url, bucket, s3_env) -> None:
    stored, source, listed = fill(service, 3)
    damaged = sorted(listed)[1]
    content = stored[record_url(EVENT, damaged)]
    [name] = [n for n in files_in(source / "blobs") if (source / "blobs" / n).read_bytes() == content]
    (source / "blobs" / name).write_bytes(content[:-1] + b"!")  # the same size, another byte at the end
    run = run_migrate(source, postgres_url, bucket, s3_env)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1
    assert f"{record_url(EVENT, damaged)}: the copy's SHA-256 is not the index's" in err and "Traceback" not in err
    assert "3 record(s) copied" in out and "1 not copied" in out
    assert copied(postgres_url) == 3
