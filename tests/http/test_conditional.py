"""Conditional requests over real HTTP (RFC 9110 §13): 304 on GET/HEAD, 412 on PUT/DELETE, checked before the body
is read and again at commit."""

from __future__ import annotations

import asyncio
import email.utils
import json
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from support.rawhttp import exchange, upload
from support.records import files_in, record_url

BODY = b"first version " * 100


async def stored(fetch, body: bytes = BODY) -> dict[str, str]:  # noqa: ANN001
    """Upload the body; the answer's headers."""
    response = await upload(fetch, record_url(), body)
    assert response.code == 204
    return dict(response.headers)


async def content(fetch) -> bytes | None:  # noqa: ANN001
    """The record's current content, or None if there is none."""
    response = await fetch(record_url())
    return response.body if response.code == 200 else None


def shifted(http_date: str, seconds: int) -> str:
    """The HTTP-date `seconds` after (or before) another."""
    return email.utils.formatdate(email.utils.parsedate_to_datetime(http_date).timestamp() + seconds, usegmt=True)


# -- GET and HEAD: 304 -------------------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("if_none_match", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_if_none_match_matching_is_304_with_validators(fetch, method: str, if_none_match: str) -> None:
    headers = await stored(fetch)
    if_none_match = if_none_match.format(etag=headers["Etag"])
    response = await fetch(record_url(), method=method, headers={"If-None-Match": if_none_match})
    assert response.code == 304
    assert response.body == b""
    assert response.headers["ETag"] == headers["Etag"]
    assert response.headers["Last-Modified"] == headers["Last-Modified"]


@pytest.mark.gen_test
async def test_if_none_match_not_matching_is_200(fetch) -> None:
    await stored(fetch)
    response = await fetch(record_url(), headers={"If-None-Match": '"something-else"'})
    assert response.code == 200
    assert response.body == BODY


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_modified_since(fetch, method: str) -> None:
    last_modified = (await stored(fetch))["Last-Modified"]
    for date, status in [(last_modified, 304), (shifted(last_modified, 3600), 304), (shifted(last_modified, -1), 200),
                         ("not a date", 200)]:
        response = await fetch(record_url(), method=method, headers={"If-Modified-Since": date})
        assert response.code == status, date
        assert response.headers["ETag"]


@pytest.mark.gen_test
async def test_if_none_match_wins_over_if_modified_since(fetch) -> None:
    # RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    last_modified = (await stored(fetch))["Last-Modified"]
    response = await fetch(record_url(), headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified})
    assert response.code == 200
    assert response.body == BODY


@pytest.mark.gen_test
async def test_get_with_if_match_not_matching_is_412(fetch) -> None:
    await stored(fetch)
    response = await fetch(record_url(), headers={"If-Match": '"other"'})
    assert response.code == 412
    assert json.loads(response.body)["status_code"] == 412


# -- PUT: 412 ----------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_create_only_upload(fetch, data_dir: Path) -> None:
    assert (await upload(fetch, record_url(), BODY, If_None_Match="*")).code == 204
    response = await upload(fetch, record_url(), b"second", If_None_Match="*")
    assert response.code == 412
    assert json.loads(response.body)["status_code"] == 412
    assert await content(fetch) == BODY
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_put_if_match(blobs, fetch, data_dir: Path) -> None:
    etag = (await stored(fetch))["Etag"]
    assert (await upload(fetch, record_url(), b"other", If_Match='"stale"')).code == 412
    assert await content(fetch) == BODY
    response = await upload(fetch, record_url(), b"second", If_Match=etag)
    assert response.code == 204
    assert await content(fetch) == b"second"
    # The etag names the first version only.
    assert (await upload(fetch, record_url(), b"third", If_Match=etag)).code == 412
    assert await content(fetch) == b"second"
    assert len(list(blobs())) == 1


@pytest.mark.gen_test
@pytest.mark.parametrize("if_match", ["*", '"abc"'])
async def test_put_if_match_on_a_missing_record_is_412(blobs, fetch, data_dir: Path, if_match: str) -> None:
    assert (await upload(fetch, record_url(), BODY, If_Match=if_match)).code == 412
    assert await content(fetch) is None
    assert list(blobs()) == []


@pytest.mark.gen_test
async def test_put_if_none_match_with_etags(fetch) -> None:
    etag = (await stored(fetch))["Etag"]
    assert (await upload(fetch, record_url(), b"x", If_None_Match=f'W/{etag}')).code == 412
    assert (await upload(fetch, record_url(), b"x", If_None_Match='"other"')).code == 204
    assert await content(fetch) == b"x"


@pytest.mark.gen_test
async def test_put_if_unmodified_since(fetch) -> None:
    last_modified = (await stored(fetch))["Last-Modified"]
    assert (await upload(fetch, record_url(), b"x", If_Unmodified_Since=shifted(last_modified, -60))).code == 412
    assert await content(fetch) == BODY
    assert (await upload(fetch, record_url(), b"x", If_Unmodified_Since=last_modified)).code == 204
    assert await content(fetch) == b"x"


@pytest.mark.gen_test
@pytest.mark.parametrize("expect", [True, False])
async def test_412_is_answered_before_the_body_is_read(fetch, base_url: str, data_dir: Path, expect: bool) -> None:
    await stored(fetch)
    headers = {"If-None-Match": "*", "Content-Length": "10000000"}
    if expect:
        headers["Expect"] = "100-continue"
    answer = await exchange(base_url, "PUT", record_url(), headers)  # the head only: no body byte is ever sent
    assert answer.status == 412
    assert not answer.continued
    assert json.loads(answer.body)["status_code"] == 412
    assert files_in(data_dir / "tmp") == []


def held_body(first: bytes, rest: bytes, release: asyncio.Event) -> Callable[[Callable], Awaitable[None]]:
    """A body producer that sends `first`, waits for `release`, then sends `rest`."""

    async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
        await write(first)
        await release.wait()
        await write(rest)

    return produce


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (without blocking the server) until the condition holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.gen_test
async def test_racing_create_only_uploads_one_wins(blobs, fetch, data_dir: Path) -> None:
    release = asyncio.Event()
    bodies = [b"A" * 300_000, b"B" * 300_000]
    headers = {"If-None-Match": "*"}
    uploads = [
        asyncio.ensure_future(
            fetch(record_url(), method="PUT", headers=headers, body_producer=held_body(body[:9], body[9:], release))
        )
        for body in bodies
    ]
    await until(lambda: len(files_in(data_dir / "tmp")) == 2)  # both passed the check before the body
    release.set()
    responses = await asyncio.gather(*uploads)
    assert sorted(r.code for r in responses) == [204, 412]
    winner = bodies[[r.code for r in responses].index(204)]
    assert await content(fetch) == winner
    assert files_in(data_dir / "tmp") == []
    assert len(list(blobs())) == 1


@pytest.mark.gen_test
async def test_if_match_is_checked_again_at_commit(fetch, data_dir: Path) -> None:
    etag = (await stored(fetch))["Etag"]
    release = asyncio.Event()
    producer = held_body(b"slow", b" upload", release)
    slow = asyncio.ensure_future(fetch(record_url(), method="PUT", headers={"If-Match": etag}, body_producer=producer))
    await until(lambda: len(files_in(data_dir / "tmp")) == 1)  # its precondition held when it began
    assert (await upload(fetch, record_url(), b"meanwhile")).code == 204
    release.set()
    assert (await slow).code == 412
    assert await content(fetch) == b"meanwhile"
    assert files_in(data_dir / "tmp") == []


# -- DELETE: 412 -------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_delete_if_match(fetch) -> None:
    etag = (await stored(fetch))["Etag"]
    assert (await fetch(record_url(), method="DELETE", headers={"If-Match": '"stale"'})).code == 412
    assert await content(fetch) == BODY
    assert (await fetch(record_url(), method="DELETE", headers={"If-Match": etag})).code == 204
    assert await content(fetch) is None


@pytest.mark.gen_test
async def test_delete_if_match_on_a_missing_record_is_412(fetch) -> None:
    # RFC 9110 §13.1.1: If-Match is false when there is no current representation.
    assert (await fetch(record_url(), method="DELETE", headers={"If-Match": "*"})).code == 412
    assert (await fetch(record_url(), method="DELETE")).code == 404


@pytest.mark.gen_test
async def test_delete_if_unmodified_since_and_if_none_match(fetch) -> None:
    headers = await stored(fetch)
    old = shifted(headers["Last-Modified"], -60)
    assert (await fetch(record_url(), method="DELETE", headers={"If-Unmodified-Since": old})).code == 412
    assert (await fetch(record_url(), method="DELETE", headers={"If-None-Match": headers["Etag"]})).code == 412
    assert await content(fetch) == BODY
    assert (await fetch(record_url(), method="DELETE", headers={"If-None-Match": '"other"'})).code == 204
