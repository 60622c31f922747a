"""Resumable uploads by hand, rule by rule: tus 1.0 (core, creation, creation-with-upload, creation-defer-length,
termination, expiration) and the IETF draft (interop versions 6 and 8), on the same upload resources."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from support.event_schema import conforms
from support.hub import Client
from support.rawhttp import Answer, exchange, open_stream, request_head, sha256_field
from support.records import files_in, record_url
from support.tus import CHUNK, PARTIAL, TUS
from support.waiting import eventually

V6 = {"Upload-Draft-Interop-Version": "6"}
V8 = {"Upload-Draft-Interop-Version": "8"}
BODY = os.urandom(300_000)


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def create(fetch: Any, headers: dict[str, str], body: bytes = b"", path: str = record_url()) -> Any:
    return await fetch(path, method="POST", body=body, headers=headers)


async def tus_upload(fetch: Any, length: int | None = len(BODY), **extra: str) -> str:
    """A new tus upload; returns its path."""
    size = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    answer = await create(fetch, {**TUS, **size, **extra})
    assert answer.code == 201, answer.body
    return answer.headers["Location"]


async def patch(fetch: Any, location: str, offset: int, body: bytes, headers: dict[str, str]) -> Any:
    return await fetch(location, method="PATCH", body=body, headers={"Upload-Offset": str(offset), **headers})


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The app's flags: a test's own (indirect parametrization); `token_file: TOKEN` writes a token file."""
    given = dict(getattr(request, "param", {}))
    if given.get("token_file") == "TOKEN":
        (tmp_path / "token").write_text("s3cret")
        given["token_file"] = str(tmp_path / "token")
    return given


# -- tus 1.0 -------------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_tus_creation_appends_and_completion_make_the_record(fetch: Any, data_dir: Path) -> None:
    answer = await create(fetch, {**TUS, "Upload-Length": str(len(BODY)), "Upload-Metadata": metadata(filetype="audio/ogg")})
    assert answer.code == 201 and answer.headers["Tus-Resumable"] == "1.0.0"
    location = answer.headers["Location"]
    assert location.startswith("/uploads/") and len(location) > 30  # an unguessable id
    assert "GMT" in answer.headers["Upload-Expires"]
    head = await fetch(location, method="HEAD", headers=TUS)
    assert head.code == 200 and head.headers["Upload-Offset"] == "0" and head.headers["Upload-Length"] == str(len(BODY))
    assert head.headers["Cache-Control"] == "no-store"
    first = await patch(fetch, location, 0, BODY[:100_000], {**TUS, **CHUNK})
    assert first.code == 204 and first.headers["Upload-Offset"] == "100000"
    assert (await fetch(record_url())).code == 404  # not a record until complete
    mismatch = await patch(fetch, location, 0, BODY[:10], {**TUS, **CHUNK})
    assert mismatch.code == 409 and mismatch.headers["Upload-Offset"] == "100000"
    assert mismatch.headers["Content-Type"] == "application/json"
    last = await patch(fetch, location, 100_000, BODY[100_000:], {**TUS, **CHUNK})
    assert last.code == 204 and last.headers["Upload-Offset"] == str(len(BODY))
    record = await fetch(record_url())
    assert record.body == BODY and record.headers["Content-Type"] == "audio/ogg"
    assert last.headers["ETag"] == record.headers["ETag"] == f'"{hashlib.sha256(BODY).hexdigest()}"'
    # the upload stays, complete, until it expires: a client that lost the last answer learns it is done
    done = await fetch(location, method="HEAD", headers=TUS)
    assert done.headers["Upload-Offset"] == done.headers["Upload-Length"] == str(len(BODY))
    assert (await patch(fetch, location, len(BODY), b"", {**TUS, **CHUNK})).code == 204
    assert files_in(data_dir / "uploads") == []


@pytest.mark.gen_test
async def test_tus_refusals(fetch: Any, data_dir: Path) -> None:
    version = await create(fetch, {"Tus-Resumable": "0.2.2", "Upload-Length": "5"})
    assert version.code == 412 and version.headers["Tus-Version"] == "1.0.0"
    assert (await create(fetch, {**TUS})).code == 400  # neither Upload-Length nor Upload-Defer-Length
    assert (await create(fetch, {**TUS, "Upload-Defer-Length": "2"})).code == 400
    assert (await create(fetch, {**TUS, "Upload-Length": "-1"})).code == 400
    too_big = await create(fetch, {**TUS, "Upload-Length": str(1 << 50)})
    assert too_big.code == 413
    neither = await fetch(record_url(), method="POST", body=b"")
    assert neither.code == 400 and b"Tus-Resumable" in neither.body
    location = await tus_upload(fetch, 10)
    assert (await patch(fetch, location, 0, b"x", {**TUS, "Content-Type": "audio/ogg"})).code == 415
    assert (await fetch(location, method="PATCH", body=b"x", headers={**TUS, **CHUNK})).code == 400  # no offset
    over = await patch(fetch, location, 0, b"0123456789abc", {**TUS, **CHUNK})
    assert over.code == 413  # past its length: what fit is kept, nothing more
    assert (await fetch(location, method="HEAD", headers=TUS)).headers["Upload-Offset"] == "10"
    assert (await fetch("/uploads/nosuchuploadnosuchupload", method="HEAD", headers=TUS)).code == 404
    assert (await fetch("/uploads/nosuchuploadnosuchupload", method="HEAD", headers=TUS)).headers["Content-Type"] == (
        "application/json"
    )


@pytest.mark.gen_test
async def test_tus_deferred_length_and_creation_with_upload(fetch: Any) -> None:
    answer = await create(fetch, {**TUS, **CHUNK, "Upload-Defer-Length": "1"}, BODY[:1000])
    assert answer.code == 201 and answer.headers["Upload-Offset"] == "1000"
    location = answer.headers["Location"]
    head = await fetch(location, method="HEAD", headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in head.headers
    more = await patch(fetch, location, 1000, BODY[1000:2000], {**TUS, **CHUNK})
    assert more.code == 204 and (await fetch(record_url())).code == 404
    bad = await patch(fetch, location, 2000, b"", {**TUS, **CHUNK, "Upload-Length": "1500"})
    assert bad.code == 400  # less than what it already holds
    last = await patch(fetch, location, 2000, BODY[2000:], {**TUS, **CHUNK, "Upload-Length": str(len(BODY))})
    assert last.code == 204 and (await fetch(record_url())).body == BODY
    empty = await create(fetch, {**TUS, "Upload-Length": "0"}, path=record_url(start="2024-01-02T00:00:00"))
    assert empty.code == 201 and (await fetch(record_url(start="2024-01-02T00:00:00"))).body == b""


@pytest.mark.gen_test
async def test_cancel_removes_the_upload_and_its_bytes(fetch: Any, data_dir: Path, app: Any) -> None:
    events = Client(app.settings["hub"])
    location = await tus_upload(fetch)
    await patch(fetch, location, 0, BODY[:5000], {**TUS, **CHUNK})
    assert len(files_in(data_dir / "uploads")) == 1
    assert (await fetch(location, method="DELETE", headers=TUS)).code == 204
    assert (await fetch(location, method="HEAD", headers=TUS)).code == 404
    assert (await patch(fetch, location, 5000, b"x", {**TUS, **CHUNK})).code == 404
    assert files_in(data_dir / "uploads") == [] and (await fetch(record_url())).code == 404
    await app.settings["hub"].settled()
    seen = [conforms(event) for _, event in events.events()]
    assert seen[0]["type"] == "upload-started" and seen[0]["data"]["resumable"] is True
    assert seen[-1]["type"] == "upload-aborted" and seen[-1]["data"]["reason"] == "cancelled"
    assert seen[-1]["data"]["bytes"] == 5000


@pytest.mark.gen_test
async def test_options_tells_both_protocols(fetch: Any) -> None:
    assert (await fetch(record_url(start="2024-13-01"), method="OPTIONS")).code == 400
    for path in (record_url(),):
        answer = await fetch(path, method="OPTIONS")
        assert answer.code == 204
        assert answer.headers["Tus-Version"] == "1.0.0"
        assert set(answer.headers["Tus-Extension"].split(",")) >= {"creation", "creation-defer-length", "termination",
                                                                    "expiration", "creation-with-upload"}  # fmt: skip
        assert "max-size=" in answer.headers["Upload-Limit"] and answer.headers["Tus-Max-Size"].isdigit()


# -- the IETF draft ------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("version, lifetime", [(V6, "expires="), (V8, "max-age=")])
async def test_ietf_creation_offset_append_completion(fetch: Any, version: dict, lifetime: str) -> None:
    answer = await create(fetch, {**version, "Upload-Complete": "?0", "Content-Type": "audio/flac"}, BODY[:50_000])
    assert answer.code == 201 and answer.headers["Upload-Complete"] == "?0"
    assert answer.headers["Upload-Offset"] == "50000" and lifetime in answer.headers["Upload-Limit"]
    location = answer.headers["Location"]
    head = await fetch(location, method="HEAD", headers=version)
    assert head.code == 204 and head.headers["Upload-Offset"] == "50000" and head.headers["Upload-Complete"] == "?0"
    assert head.headers["Cache-Control"] == "no-store" and "Upload-Length" not in head.headers
    assert head.headers["Upload-Draft-Interop-Version"] == version["Upload-Draft-Interop-Version"]
    assert (await fetch(location, method="HEAD", headers={**version, "Upload-Offset": "0"})).code == 400
    mismatch = await patch(fetch, location, 10, b"x", {**version, **PARTIAL, "Upload-Complete": "?0"})
    assert mismatch.code == 409 and mismatch.headers["Upload-Offset"] == "50000"
    assert mismatch.headers["Upload-Complete"] == "?0"
    assert (await patch(fetch, location, 50_000, b"x", {**version, **CHUNK, "Upload-Complete": "?0"})).code == 415
    assert (await patch(fetch, location, 50_000, b"x", {**version, **PARTIAL})).code == 400  # no Upload-Complete
    middle = await patch(fetch, location, 50_000, BODY[50_000:60_000], {**version, **PARTIAL, "Upload-Complete": "?0"})
    assert middle.code == 204 and middle.headers["Upload-Complete"] == "?0"
    last = await patch(fetch, location, 60_000, BODY[60_000:], {**version, **PARTIAL, "Upload-Complete": "?1"})
    assert last.code == 204 and last.headers["Upload-Complete"] == "?1" and "ETag" in last.headers
    record = await fetch(record_url())
    assert record.body == BODY and record.headers["Content-Type"] == "audio/flac"
    done = await fetch(location, method="HEAD", headers=version)
    assert done.headers["Upload-Complete"] == "?1" and done.headers["Upload-Offset"] == str(len(BODY))


@pytest.mark.gen_test
async def test_ietf_put_with_upload_complete_is_a_put_that_can_resume(fetch: Any) -> None:
    answer = await fetch(record_url(), method="PUT", body=BODY, headers={**V8, "Upload-Complete": "?1",
                                                                         "Content-Type": "audio/ogg"})  # fmt: skip
    assert answer.code == 204 and answer.headers["Upload-Complete"] == "?1"
    assert answer.headers["ETag"] == f'"{hashlib.sha256(BODY).hexdigest()}"'
    assert (await fetch(record_url())).body == BODY
    plain = await fetch(record_url(), method="PUT", body=b"plain")  # a PUT without it is a plain PUT, as before
    assert plain.code == 204 and "Upload-Complete" not in plain.headers and "Location" not in plain.headers


@pytest.mark.gen_test
async def test_ietf_refusals(fetch: Any, data_dir: Path) -> None:
    wrong = await create(fetch, {"Upload-Draft-Interop-Version": "99", "Upload-Complete": "?0"})
    assert wrong.code == 400 and b"6, 8" in wrong.body
    assert (await create(fetch, {**V8, "Upload-Complete": "yes"})).code == 400
    assert (await create(fetch, {**V8, "Upload-Complete": "?0", "Content-Digest": sha256_field(b"x")})).code == 400
    lengths = await fetch(record_url(), method="PUT", body=b"abc",
                          headers={**V8, "Upload-Complete": "?1", "Upload-Length": "5"})  # fmt: skip
    assert lengths.code == 400
    assert files_in(data_dir / "uploads") == []


@pytest.mark.gen_test
async def test_preconditions_and_digest_are_checked_at_completion(fetch: Any, data_dir: Path) -> None:
    # If-None-Match: * holds at creation, but the record appears before the upload completes: 412, nothing stored
    answer = await create(fetch, {**V8, "Upload-Complete": "?0", "If-None-Match": "*"})
    location = answer.headers["Location"]
    assert (await fetch(record_url(), method="PUT", body=b"first")).code == 204
    late = await patch(fetch, location, 0, BODY, {**V8, **PARTIAL, "Upload-Complete": "?1"})
    assert late.code == 412 and late.headers["Upload-Complete"] == "?1"
    assert (await fetch(record_url())).body == b"first"
    assert (await fetch(location, method="HEAD", headers=V8)).code == 404
    # ... and refused at once where it does not hold at creation
    assert (await create(fetch, {**V8, "Upload-Complete": "?0", "If-None-Match": "*"})).code == 412
    # Repr-Digest of the whole record, given at creation
    wrong = await create(fetch, {**TUS, "Upload-Length": "5", "Repr-Digest": sha256_field(b"other")})
    mismatch = await patch(fetch, wrong.headers["Location"], 0, b"fives", {**TUS, **CHUNK})
    assert mismatch.code == 400 and (await fetch(record_url())).body == b"first"
    right = await create(fetch, {**TUS, "Upload-Length": "5", "Repr-Digest": sha256_field(b"fives")})
    assert (await patch(fetch, right.headers["Location"], 0, b"fives", {**TUS, **CHUNK})).code == 204
    assert (await fetch(record_url())).body == b"fives"
    assert files_in(data_dir / "uploads") == []


@pytest.mark.gen_test
async def test_104_carries_the_location_before_the_body(http_server: Any, base_url: str, fetch: Any) -> None:
    head = {**V6, "Upload-Complete": "?1", "Content-Length": "5", "Expect": "100-continue"}
    stream = await open_stream(base_url)
    await stream.write(request_head("POST", record_url(), head))
    interim = await stream.read_until(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 104 Upload Resumption Supported\r\n")
    location = Answer(interim).headers["location"]
    assert Answer(interim).headers["upload-draft-interop-version"] == "6"
    assert (await stream.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")  # 100 Continue is still sent
    await stream.write(b"hello")
    final = Answer(await stream.read_until(b"\r\n\r\n"))
    assert final.status == 204 and final.headers["upload-complete"] == "?1"
    stream.close()
    status = (await fetch(location, method="HEAD", headers=V6)).headers
    assert status["Upload-Offset"] == "5" and status["Upload-Complete"] == "?1"
    for headers in ({**V6, "X-Forwarded-For": "192.0.2.1"}, {}, TUS | {"Upload-Length": "1"}):
        answer = await exchange(base_url, "POST", record_url(start="2024-02-01T00:00:00"),
                                {"Upload-Complete": "?0", "Content-Length": "0", **headers})  # fmt: skip
        assert not answer.raw.startswith(b"HTTP/1.1 104") and answer.status == 201


@pytest.mark.gen_test
@pytest.mark.parametrize("settings", [{"token_file": "TOKEN"}], indirect=True)
async def test_the_token_guards_creation_append_offset_and_cancel(fetch: Any, tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    assert (await create(fetch, {**TUS, "Upload-Length": "3"})).code == 401
    assert (await create(fetch, {**V8, "Upload-Complete": "?0", "Authorization": "Bearer nope"})).code == 401
    location = await tus_upload(fetch, 3, Authorization="Bearer s3cret")
    assert (await fetch(location, method="HEAD", headers=TUS)).code == 401
    assert (await patch(fetch, location, 0, b"abc", {**TUS, **CHUNK})).code == 401
    assert (await fetch(location, method="DELETE", headers=TUS)).code == 401
    assert (await fetch(record_url(), method="OPTIONS")).code == 204
    assert (await patch(fetch, location, 0, b"abc", {**TUS, **CHUNK, **auth})).code == 204
    assert (await fetch(record_url())).body == b"abc"


@pytest.mark.gen_test
@pytest.mark.parametrize("settings", [{"upload_expiry": "1s"}], indirect=True)
async def test_expired_uploads_go(fetch: Any, app: Any, data_dir: Path) -> None:
    events = Client(app.settings["hub"])
    first = await tus_upload(fetch)
    assert (await fetch(first, method="HEAD", headers=TUS)).headers["Upload-Expires"]
    second = await tus_upload(fetch)
    await asyncio.sleep(2.1)  # an expiry falls on a whole second, one to two seconds after the last use
    assert (await fetch(first, method="HEAD", headers=TUS)).code == 410
    # the first goes when it is found expired, in the background: once its row is gone, a sweep finds the second
    # alone (a sweep that listed the rows while the first's removal was finishing would count it again)
    assert await eventually(lambda: len(app.settings["store"].uploads.rows()) == 1)
    assert await app.settings["resumables"].sweep() == 1  # the second; the first went when it was found expired
    assert (await fetch(second, method="HEAD", headers=TUS)).code == 404
    assert await eventually(lambda: files_in(data_dir / "uploads") == [])
    await app.settings["hub"].settled()
    reasons = [event["data"].get("reason") for _, event in events.events() if event["type"] == "upload-aborted"]
    assert reasons == ["expired", "expired"]


@pytest.mark.gen_test
@pytest.mark.parametrize("settings", [{"upload_idle_timeout": "0.5"}], indirect=True)
async def test_a_stalled_append_ends_and_keeps_its_bytes(http_server: Any, base_url: str, fetch: Any) -> None:
    location = await tus_upload(fetch)
    stream = await open_stream(base_url)
    await stream.write(request_head("PATCH", location, {**TUS, **CHUNK, "Upload-Offset": "0",
                                                        "Content-Length": str(len(BODY))}) + BODY[:7000])  # fmt: skip
    answer = Answer(await stream.read_until(b"\r\n\r\n"))
    assert answer.status == 408
    stream.close()
    assert (await fetch(location, method="HEAD", headers=TUS)).headers["Upload-Offset"] == "7000"


@pytest.mark.gen_test
async def test_a_new_request_ends_the_one_in_progress(http_server: Any, base_url: str, fetch: Any, app: Any) -> None:
    """A client whose link broke without the service noticing comes back: its offset retrieval ends the old
    request, and learns an offset that counts every byte the old one brought (made durable first)."""
    events = Client(app.settings["hub"])
    location = await tus_upload(fetch)
    old = await open_stream(base_url)
    await old.write(request_head("PATCH", location, {**TUS, **CHUNK, "Upload-Offset": "0",
                                                     "Content-Length": str(len(BODY))}) + BODY[:123_456])  # fmt: skip
    resumables = app.settings["resumables"]
    upload = resumables.get(location.rsplit("/", 1)[1])
    assert await eventually(lambda: upload.written == 123_456)
    head = await fetch(location, method="HEAD", headers=TUS)
    assert head.code == 200 and head.headers["Upload-Offset"] == "123456"
    assert await eventually(lambda: old.closed())  # the old request's connection was ended
    # the same with an append coming while one is in progress
    other = await open_stream(base_url)
    await other.write(request_head("PATCH", location, {**TUS, **CHUNK, "Upload-Offset": "123456",
                                                       "Content-Length": "1000"}) + BODY[123_456:124_000])  # fmt: skip
    assert await eventually(lambda: upload.written == 124_000)
    late = await patch(fetch, location, 123_456, b"x", {**TUS, **CHUNK})
    assert late.code == 409 and late.headers["Upload-Offset"] == "124000"
    assert await eventually(lambda: other.closed())
    rest = await patch(fetch, location, 124_000, BODY[124_000:], {**TUS, **CHUNK})
    assert rest.code == 204 and (await fetch(record_url())).body == BODY
    await app.settings["hub"].settled()
    seen = [conforms(event)["type"] for _, event in events.events()]
    assert seen[0] == "upload-started" and seen[-1] == "record-created" and "upload-aborted" not in seen
