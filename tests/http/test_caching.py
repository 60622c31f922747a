"""What each GET says a cache may keep (issue 26, docs/api.md "Caching"), as a browser, a CDN or a dashboard sees
it: `Cache-Control` on every route, a listing's ETag that gives a 304 while the listing is the same and changes
with everything it shows (a record added, replaced or deleted, a title, an analysis done), and the room's and
Scalar's files kept for good under a URL naming their version, the pages linking them revalidated."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from support.audio import FORMATS, Tone, generate
from support.paths import REPO
from support.records import EVENT, record_url
from tornado_records.app import start_app, stop_app
from tornado_records.http.caching import IMMUTABLE

START = "2024-03-01T08:00:00"
OTHER_START = "2024-03-01T09:00:00"
LISTINGS = [f"/records/{EVENT}", f"/records/{EVENT}?order=desc&limit=5", "/records", "/records?q=morning"]


async def put(fetch, start: str = START, body: bytes = b"one version", content_type: str = "audio/ogg") -> None:
    response = await fetch(record_url(EVENT, start), method="PUT", body=body, headers={"Content-Type": content_type})
    assert response.code == 204, response.body


async def tags(fetch) -> dict[str, str]:
    """The ETag of each listing, after checking that each says `no-cache` and that HEAD gives the same tag."""
    found = {}
    for path in LISTINGS:
        response = await fetch(path)
        assert response.code == 200 and response.headers["Cache-Control"] == "no-cache", path
        head = await fetch(path, method="HEAD")
        assert head.headers["ETag"] == response.headers["ETag"], path
        found[path] = response.headers["ETag"]
    return found


async def not_modified(fetch, path: str, etag: str, current: str | None = None) -> bool:
    """Whether revalidating `path` with `etag` (an If-None-Match of one tag, several, or `*`) gives a 304 that says
    the `current` tag (by default `etag`); else a 200 with another tag."""
    response = await fetch(path, headers={"If-None-Match": etag})
    if response.code == 304:
        assert response.body == b"" and response.headers["ETag"] == (current or etag)
        assert response.headers["Cache-Control"] == "no-cache"  # RFC 9111 §4.3.4: the 304 updates what is kept
        return True
    assert response.code == 200 and response.headers["ETag"] != etag, path
    return False


# -- listings ----------------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_a_listing_revalidated_unchanged_is_a_304(fetch):
    await put(fetch)
    await fetch(f"/records/{EVENT}", method="PUT", body=json.dumps({"title": "Morning show"}))
    for path, etag in (await tags(fetch)).items():
        assert await not_modified(fetch, path, etag), path
        assert await not_modified(fetch, path, f'"other", {etag}', etag), path  # one of several
        assert await not_modified(fetch, path, "*", etag), path
        assert not await not_modified(fetch, path, '"something else"'), path


@pytest.mark.gen_test(timeout=60)
async def test_a_listings_etag_changes_with_each_record_added_replaced_deleted_and_title(fetch):
    await put(fetch)
    await fetch(f"/records/{EVENT}", method="PUT", body=json.dumps({"title": "Morning show"}))
    before = await tags(fetch)
    changes = {
        "a record added": put(fetch, OTHER_START),
        "a record replaced": put(fetch, START, b"another version"),
        "a title changed": fetch(f"/records/{EVENT}", method="PUT", body=json.dumps({"title": "Morning shows"})),
        "a record deleted": fetch(record_url(EVENT, OTHER_START), method="DELETE"),
    }
    for change, done in changes.items():
        await done
        after = await tags(fetch)
        for path in LISTINGS:
            assert after[path] != before[path], f"{path} after {change}"
            assert not await not_modified(fetch, path, before[path]), f"{path} after {change}"
        before = after


@pytest.mark.gen_test(timeout=120)
async def test_a_listings_etag_changes_when_an_analysis_is_done(app, fetch, tmp_path):
    """The listing shows each record's `analysis` and `audio`: a dashboard polling it sees the analysis end."""
    wav = next(f for f in FORMATS if f.name == "wav")
    await put(fetch, body=generate(tmp_path / "tone.wav", wav, Tone(duration=2.0, silence=(0.5, 1.0))).read_bytes(),
              content_type=wav.type)  # fmt: skip
    pending = await tags(fetch)  # the analysis is not running: pending
    assert json.loads((await fetch(LISTINGS[0])).body)["records"][0]["analysis"] == "pending"
    start_app(app)
    try:
        deadline = time.monotonic() + 60
        while json.loads((await fetch(LISTINGS[0])).body)["records"][0]["analysis"] == "pending":
            assert time.monotonic() < deadline, "the analysis is still pending after 60 s"
            await asyncio.sleep(0.05)
    finally:
        await stop_app(app)
    done = await tags(fetch)
    for path in (LISTINGS[0], LISTINGS[1], "/records"):  # (the events list shows the event's total duration)
        assert done[path] != pending[path], path
        assert not await not_modified(fetch, path, pending[path]), path
    peaks = await fetch(record_url(EVENT, START) + "/peaks")
    assert peaks.code == 200 and peaks.headers["Cache-Control"] == "no-cache"
    assert (await fetch(record_url(EVENT, START) + "/peaks", headers={"If-None-Match": peaks.headers["ETag"]})).code == 304


@pytest.mark.gen_test(timeout=60)
async def test_the_parts_of_a_record_revalidate_and_change_with_it(fetch):
    await put(fetch)
    path = record_url(EVENT, START) + "/parts"
    first = await fetch(path)
    assert first.code == 200 and first.headers["Cache-Control"] == "no-cache"
    assert await not_modified(fetch, path, first.headers["ETag"])
    await put(fetch, body=b"another version")
    assert not await not_modified(fetch, path, first.headers["ETag"])


# -- a record ----------------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_download_is_revalidated_at_each_use(fetch, method):
    await put(fetch)
    response = await fetch(record_url(EVENT, START), method=method)
    assert response.code == 200 and response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    again = await fetch(record_url(EVENT, START), method=method, headers={"If-None-Match": etag})
    assert again.code == 304 and again.headers["Cache-Control"] == "no-cache" and again.headers["ETag"] == etag
    ranged = await fetch(record_url(EVENT, START), headers={"Range": "bytes=0-2"})
    assert ranged.code == 206 and ranged.headers["Cache-Control"] == "no-cache"
    await put(fetch, body=b"another version")
    replaced = await fetch(record_url(EVENT, START), method=method, headers={"If-None-Match": etag})
    assert replaced.code == 200 and replaced.headers["ETag"] != etag


# -- what is never stored ----------------------------------------------------------------------------------------


@pytest.mark.engines("sqlite")
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path", ["/ping", "/metrics", "/uploads"])  # /sse: test_sse.py; /room/notices.json:
async def test_what_is_only_true_now_is_never_stored(fetch, path):  # tests/system/test_safe_defaults.py
    response = await fetch(path)
    assert response.code in (200, 204) and response.headers["Cache-Control"] == "no-store", path


@pytest.mark.gen_test(timeout=60)
async def test_live_redirects_to_a_stored_record_are_never_stored(fetch):
    await put(fetch)
    response = await fetch(record_url(EVENT, START) + "/live", follow_redirects=False)
    assert response.code == 307 and response.headers["Cache-Control"] == "no-store"


@pytest.mark.engines("sqlite")
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/no/such/route", 404),
        ("GET", record_url(EVENT, START), 404),  # no such record (yet): a cache must not keep saying so
        ("HEAD", record_url(EVENT, START), 404),
        ("GET", "/records/not-a-uuid", 400),
        ("GET", f"/records/{EVENT}?limit=many", 400),
        ("GET", record_url(EVENT, START) + "/peaks", 404),
        ("GET", "/room/nothing.js", 404),
        ("GET", "/openapi/nothing.js", 404),
        ("POST", "/ping", 405),
    ],
)
async def test_errors_are_never_stored(fetch, method, path, status):
    response = await fetch(path, method=method, allow_nonstandard_methods=True, body=b"" if method == "POST" else None)
    assert response.code == status and response.headers["Cache-Control"] == "no-store"
    if method != "HEAD":
        assert json.loads(response.body)["status_code"] == status


# -- the pages and their files -----------------------------------------------------------------------------------


@pytest.mark.engines("sqlite")
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path", ["/", "/openapi", "/openapi/openapi.json", "/openapi/openapi.yaml"])
async def test_pages_and_documents_are_revalidated_with_their_etag(fetch, path):
    response = await fetch(path)
    assert response.code == 200 and response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    head = await fetch(path, method="HEAD")
    assert head.headers["ETag"] == etag and head.headers["Cache-Control"] == "no-cache"
    again = await fetch(path, headers={"If-None-Match": etag})
    assert again.code == 304 and again.body == b"" and again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "no-cache"


@pytest.mark.engines("sqlite")
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("page, folder", [("/", "static/room"), ("/openapi", "static/scalar")])
async def test_the_files_a_page_loads_are_kept_for_good_under_their_version(fetch, page, folder):
    body = (await fetch(page)).body.decode()
    links = re.findall(r'(?:src|href)="(/(?:room|openapi)/[^"?]+\.(?:js|css))(?:\?v=([0-9a-f]+))?"', body)
    assert links and all(version for _, version in links), links  # every script and style names its version
    for link, version in links:
        shipped = (REPO / folder / link.split("/", 2)[2]).read_bytes()
        kept = await fetch(f"{link}?v={version}")
        assert kept.code == 200 and kept.body == shipped, link
        assert kept.headers["Cache-Control"] == IMMUTABLE == "public, max-age=31536000, immutable", link
        # the same file asked for without a version, or by another one (a page of an older release): revalidated
        for unversioned in (link, f"{link}?v=0123456789abcdef0123"):
            response = await fetch(unversioned)
            assert response.code == 200 and response.body == shipped, unversioned
            assert response.headers["Cache-Control"] == "no-cache", unversioned
            assert response.headers["ETag"] == kept.headers["ETag"], unversioned
            again = await fetch(unversioned, headers={"If-None-Match": response.headers["ETag"]})
            assert again.code == 304 and again.headers["Cache-Control"] == "no-cache", unversioned
