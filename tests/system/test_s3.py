"""Recordings in an S3-compatible object store (`--blobs s3://bucket/prefix`, SeaweedFS here), with the index in
PostgreSQL: an upload goes to the bucket in parts while it arrives and is visible only once whole; one that breaks
off, or whose process is killed, leaves nothing in the bucket; appended bytes go up once; a bucket the service cannot
use stops the start with one clear line. The contract's own tests run on this pair too (tests/conftest.py, ENGINES)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

from support.appender import Appender, receiving
from support.breaking_proxy import BreakingProxy
from support.races import race_writers
from support.rawhttp import chunk, connect, request, request_head
from support.records import EVENT, files_in, record_url
from support.s3 import PREFIX, objects
from support.service import COMMAND
from support.sse import events_of
from support.waiting import wait_until

MB = 1 << 20


def unfinished(seaweedfs, bucket: str) -> list[tuple[str, int]]:  # noqa: ANN001
    """The multipart uploads begun and neither completed nor aborted, and the parts each has."""
    client = seaweedfs.client
    found = []
    for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=PREFIX + "/").get("Uploads", []):
        try:
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])
        except client.exceptions.NoSuchUpload:
            continue  # completed or aborted since it was listed
        found.append((upload["Key"], len(parts)))
    return found


def on_s3(service, postgres_url: str, bucket: str, s3_env: dict[str, str], *flags: str, data_dir=None):  # noqa: ANN001, ANN201
    return service("--index", postgres_url, "--blobs", f"s3://{bucket}/{PREFIX}", *flags, env=s3_env, data_dir=data_dir)


def start_chunked_upload(url: str, megabytes: int):  # noqa: ANN201
    """A chunked PUT of `megabytes` random MiB, sent but not ended; the socket and the bytes."""
    sock = connect(url)
    sock.sendall(request_head("PUT", record_url(), {"Transfer-Encoding": "chunked", "Content-Type": "audio/wav"}))
    data = os.urandom(megabytes * MB)
    for at in range(0, len(data), MB):
        sock.sendall(chunk(data[at : at + MB]))
    return sock, data


def length_of(url: str) -> int:
    """The size of the record, as a HEAD says (0 while there is none)."""
    status, headers, _ = request(url, "HEAD", record_url())
    return int(headers["Content-Length"]) if status == 200 else 0


def test_an_upload_goes_up_in_parts_as_it_arrives_and_is_visible_only_once_whole(
    service, postgres_url, bucket, s3_env, seaweedfs
) -> None:
    svc = on_s3(service, postgres_url, bucket, s3_env)
    sock, data = start_chunked_upload(svc.url, 20)
    # 20 MiB received: two parts of 8 MiB are in the bucket already, as an unfinished upload, and nothing is visible
    assert wait_until(lambda: unfinished(seaweedfs, bucket) and unfinished(seaweedfs, bucket)[0][1] == 2)
    assert objects(seaweedfs, bucket) == {}
    assert request(svc.url, "GET", record_url())[0] == 404
    more = os.urandom(3 * MB + 5)
    sock.sendall(chunk(more) + b"0\r\n\r\n")
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 204")
    stored = objects(seaweedfs, bucket)
    assert list(stored.values()) == [data + more] and unfinished(seaweedfs, bucket) == []
    status, headers, body = request(svc.url, "GET", record_url(), headers={"Range": f"bytes={10 * MB}-"})
    assert status == 206 and body == (data + more)[10 * MB :]
    assert headers["ETag"] == f'"{hashlib.sha256(data + more).hexdigest()}"'


def test_an_upload_that_breaks_off_leaves_nothing_in_the_bucket(
    service, postgres_url, bucket, s3_env, seaweedfs
) -> None:
    svc = on_s3(service, postgres_url, bucket, s3_env)
    assert request(svc.url, "PUT", record_url(), b"the version before")[0] == 204
    [before] = objects(seaweedfs, bucket)
    sock, _ = start_chunked_upload(svc.url, 20)
    assert wait_until(lambda: [parts for _, parts in unfinished(seaweedfs, bucket)] == [2])
    sock.close()
    assert wait_until(lambda: unfinished(seaweedfs, bucket) == [])
    assert list(objects(seaweedfs, bucket)) == [before]
    assert request(svc.url, "GET", record_url())[2] == b"the version before"


def test_a_killed_process_leaves_no_visible_record_and_its_parts_are_aborted(
    service, postgres_url, bucket, s3_env, seaweedfs
) -> None:
    svc = on_s3(service, postgres_url, bucket, s3_env)
    sock, _ = start_chunked_upload(svc.url, 20)
    assert wait_until(lambda: [parts for _, parts in unfinished(seaweedfs, bucket)] == [2])
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait()
    sock.close()
    after = on_s3(service, postgres_url, bucket, s3_env)
    assert request(after.url, "GET", record_url())[0] == 404
    # the next start (or its periodic look for what ended processes left) aborts the killed one's upload
    assert wait_until(lambda: unfinished(seaweedfs, bucket) == [], timeout=30)
    assert objects(seaweedfs, bucket) == {}
    assert wait_until(lambda: any("aborted 1 unfinished upload(s)" in line for line in after.lines))


def test_appended_bytes_go_up_once(service, postgres_url, bucket, s3_env, seaweedfs) -> None:
    svc = on_s3(service, postgres_url, bucket, s3_env)
    pieces = [os.urandom(300_000) for _ in range(3)]
    for piece in pieces:
        appender = Appender(svc.url)
        appender.send(piece[:100_000])
        appender.send(piece[100_000:])
        assert appender.end().status == 204
    whole = b"".join(pieces)
    assert request(svc.url, "GET", record_url())[2] == whole
    stored = objects(seaweedfs, bucket)
    # each byte sent to the bucket once: the objects, in the order the record names them, are the content
    assert sum(len(content) for content in stored.values()) == len(whole)
    assert len(stored) == 3 and b"".join(sorted(stored.values(), key=whole.index)) == whole
    assert not list((svc.data_dir / "blobs").iterdir())  # the pieces' files, in flight only, are gone


def test_a_pieces_joins_are_merged_into_one_object_when_it_ends_and_a_download_under_way_goes_on(
    service, postgres_url, bucket, s3_env, seaweedfs
) -> None:
    join = 0.2  # --append-join-interval
    svc = on_s3(service, postgres_url, bucket, s3_env, "--append-join-interval", str(join))
    keys = lambda: seaweedfs.keys(bucket, PREFIX + "/")  # noqa: E731
    appender = Appender(svc.url)
    for sent in range(5):  # the first bytes to arrive `join` seconds after a join set off the next
        appender.send(os.urandom(4 * MB))
        # each join an object of its own: the one that this send's first bytes set off is in the record (it holds
        # all the sends before), and all of this send has arrived, before the next send's bytes can set off another
        assert wait_until(lambda: length_of(svc.url) >= sent * 4 * MB, timeout=30)
        assert wait_until(lambda: receiving(svc.url) == [len(appender.sent)], timeout=30)
        time.sleep(join * 1.5)
    whole = appender.sent
    # while the piece lasts, each join is an object of its own: once the last join is in, the objects in the order
    # of their bytes are the record, each byte sent once (the tail that arrived since joins when the piece ends)
    size = lambda: int(request(svc.url, "HEAD", record_url())[1]["Content-Length"])  # noqa: E731
    runs = lambda: sorted(objects(seaweedfs, bucket).values(), key=whole.index)  # noqa: E731
    assert wait_until(lambda: b"".join(runs()) == whole[: size()])
    joined = size()
    assert len(runs()) >= 3 and joined >= 12 * MB
    # a slow listener: the service has read at most the socket's buffers ahead (4 MiB here) when the piece ends
    listener = connect(svc.url, receive_buffer=4096)
    listener.sendall(request_head("GET", record_url(), {}))
    heard = listener.recv(4096)
    answer = appender.end()
    assert answer.status == 204 and answer.headers["etag"] == f'"{hashlib.sha256(whole).hexdigest()}"'
    assert wait_until(lambda: len(keys()) == 1)
    stored = objects(seaweedfs, bucket)
    assert list(stored.values()) == [whole] and list(stored)[0].endswith(".merged")
    assert not list((svc.data_dir / "blobs").iterdir())
    # the listener had most of the version it asked for to go: what the service reads for it now comes from the
    # merged object
    while len(heard) < heard.find(b"\r\n\r\n") + 4 + joined and (data := listener.recv(1 << 20)):
        heard += data
    listener.close()
    assert heard.startswith(b"HTTP/1.1 200") and f"Content-Length: {joined}\r\n".encode() in heard
    assert heard.endswith(b"\r\n\r\n" + whole[:joined])
    status, headers, body = request(svc.url, "GET", record_url())
    assert status == 200 and body == whole and headers["ETag"] == answer.headers["etag"]
    print("".join(svc.lines))


def test_a_bucket_it_cannot_use_stops_the_start_with_one_line(postgres_url, bucket, s3_env, tmp_path) -> None:
    for blobs, env, reason in [
        ("s3://no-such-bucket/records", s3_env, "the object store refused: NoSuchBucket"),
        (f"s3://{bucket}/records", {**s3_env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "the object store refused: "
         "SignatureDoesNotMatch"),
        (f"s3://{bucket}/records", {**s3_env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"},
         "the object store is out of reach: Could not connect"),
    ]:
        started = time.monotonic()
        ran = subprocess.run(
            [*COMMAND, "--port", "0", "--data-dir", str(tmp_path / "data"), "--index", postgres_url, "--blobs", blobs],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ran.returncode == 1, ran.stderr
        assert ran.stderr.startswith(f"tornado-records: error: cannot keep recordings in {blobs}: {reason}"), ran.stderr
        assert "Traceback" not in ran.stderr and env["AWS_SECRET_ACCESS_KEY"] not in ran.stderr
        assert time.monotonic() - started < 30


def test_the_log_names_the_bucket_but_no_secret(service, postgres_url, bucket, s3_env) -> None:
    svc = on_s3(service, postgres_url, bucket, s3_env)
    assert request(svc.url, "PUT", f"/records/{EVENT}/2026-01-01T00:00:00", b"x")[0] == 204
    svc.stop()
    text = "".join(svc.lines)
    assert f"recordings in s3://{bucket}/{PREFIX}" in text
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in text


def test_an_object_store_out_of_reach_is_a_503_that_says_so_and_stores_nothing(
    service, postgres_url, bucket, seaweedfs, s3_env
) -> None:
    link = BreakingProxy(seaweedfs.ports["s3"][0])  # the service reaches the object store through it
    svc = on_s3(service, postgres_url, bucket, {**s3_env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{link.port}"})
    assert request(svc.url, "PUT", record_url(), b"kept")[0] == 204
    link.close()
    status, headers, body = request(svc.url, "PUT", record_url(), b"x" * 1000, {"Content-Type": "audio/ogg"})
    assert status == 503 and headers["Content-Type"] == "application/json"
    detail = json.loads(body)["detail"]  # the engine and the failure, no endpoint (issue 28)
    assert detail == "The object store cannot be reached: try again shortly" and "127.0.0.1" not in detail
    assert json.loads(request(svc.url, "GET", f"/records/{EVENT}")[2])["records"][0]["size"] == len(b"kept")
    assert request(svc.url, "GET", record_url())[0] == 503
    assert list(objects(seaweedfs, bucket).values()) == [b"kept"]
    assert files_in(svc.data_dir / "tmp") == []
    assert "Traceback" not in "".join(svc.lines)


def test_two_processes_on_s3_behind_nginx_share_records_events_and_races(
    service, nginx, postgres_url, bucket, s3_env, seaweedfs, tmp_path
) -> None:
    """Two processes, each with a data directory of its own (as on two machines), on one bucket and one index."""
    # the events counted are the uploads' (no record-analyzed, which comes whenever an analysis ends)
    a, b = (on_s3(service, postgres_url, bucket, s3_env, "--analysis-workers", "0", data_dir=tmp_path / name)
            for name in ("a", "b"))  # fmt: skip
    front = nginx(a, [b])
    seen_a: list = []
    seen_b: list = []
    # 4 uploads (started, created), a delete, then the race's: each writer's upload-started, the winner's
    # record-created and each loser's upload-aborted (race_writers has every upload begun before any ends)
    expected = 4 * 2 + 1 + 8 + 1 + 7
    readers = [events_of(a.url, expected, seen_a), events_of(b.url, expected, seen_b)]
    bodies = {n: os.urandom(100_000 + n) for n in range(4)}
    for n, body in bodies.items():  # nginx takes turns between the two
        assert request(front.url, "PUT", record_url(start=f"2024-01-01T0{n}:00:00"), body)[0] == 204
    for n, body in bodies.items():  # each sent by both, whichever stored it
        for server in (a, b):
            assert request(server.url, "GET", record_url(start=f"2024-01-01T0{n}:00:00"))[2] == body
    assert json.loads(request(b.url, "GET", f"/records/{EVENT}")[2])["count"] == 4
    assert request(a.url, "DELETE", record_url(start="2024-01-01T00:00:00"))[0] == 204
    assert request(b.url, "GET", record_url(start="2024-01-01T00:00:00"))[0] == 404
    racing = [bytes([n]) * 300_000 for n in range(8)]
    statuses = race_writers(a, b, racing)
    assert sorted(statuses) == [204] + [412] * 7
    winner = racing[statuses.index(204)]
    assert request(a.url, "GET", record_url())[2] == request(b.url, "GET", record_url())[2] == winner
    for reader in readers:
        reader.join(timeout=30)
    assert len(seen_a) == expected and seen_a == seen_b  # every event once, in one order, on both
    ids = [event_id for event_id, _ in seen_a]
    assert ids == sorted(set(ids))
    # one object a record, nothing else, and no upload left unfinished
    assert wait_until(lambda: len(objects(seaweedfs, bucket)) == 4 and unfinished(seaweedfs, bucket) == [])
    assert sorted(objects(seaweedfs, bucket).values()) == sorted([bodies[1], bodies[2], bodies[3], winner])


def test_kill_9_of_one_process_on_s3_the_other_serves_and_aborts_what_it_left(
    service, postgres_url, bucket, s3_env, seaweedfs, tmp_path
) -> None:
    a, b = (on_s3(service, postgres_url, bucket, s3_env, data_dir=tmp_path / name) for name in ("a", "b"))
    assert request(b.url, "PUT", record_url(start="2024-01-02T00:00:00"), b"kept")[0] == 204
    sock, _ = start_chunked_upload(a.url, 20)
    assert wait_until(lambda: [parts for _, parts in unfinished(seaweedfs, bucket)] == [2])
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    sock.close()
    assert request(b.url, "GET", record_url())[0] == 404  # nothing visible
    assert request(b.url, "PUT", record_url(start="2024-01-03T00:00:00"), b"still serving")[0] == 204
    # the other's periodic look for what ended processes left (every 10 s) aborts the killed one's parts
    assert wait_until(lambda: unfinished(seaweedfs, bucket) == [], timeout=40)
    assert sorted(objects(seaweedfs, bucket).values()) == [b"kept", b"still serving"]  # nothing leaked
    # the line comes after the abort, from the process's stderr as it is read: wait for it too
    assert wait_until(lambda: any("aborted 1 unfinished upload(s)" in line for line in b.lines))
