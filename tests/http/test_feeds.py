"""The podcast feed of an event (`GET /feeds/{event}`) on every engine, read by two real feed parsers, feedparser
(what most Python podcast tools use) and podcastparser (gPodder's): the channel from the event's details, one item per
record newest first, dates in the event's zone, enclosures that download the record byte for byte, durations from the
audio analysis, guids that never change for a record, `podcast:guid` per the Podcast Index's rule, and revalidation
(304) until a record or a detail changes. docs/feeds.md says what a podcast directory requires of it."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import io
import json
import time
import uuid
import xml.etree.ElementTree as ElementTree

import feedparser
import podcastparser
import pytest

from support.audio import FORMATS, Tone, generate, started
from support.records import EVENT, record_url
from support.waiting import eventually

FEED = f"/feeds/{EVENT}"
PODCAST = "https://podcastindex.org/namespace/1.0"
ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST_GUIDS = uuid.UUID("ead4c236-bf58-58c6-a2c6-a6b28d128cb6")  # the Podcast Index's namespace for podcast:guid
DETAILS = {
    "title": "Morning show",
    "description": "News, weather & music to wake up to.",
    "author": "Radio <Example>",
    "image": "https://radio.example/shows/morning.jpeg",
    "timezone": "Europe/Berlin",
}
WINTER, SUMMER, LATER = "2024-01-01T06:00:00", "2024-07-01T06:00:00", "2024-07-02T06:00:00"


async def put_record(fetch, start: str, body: bytes, content_type: str = "audio/mpeg") -> None:
    response = await fetch(record_url(EVENT, start), method="PUT", body=body, headers={"Content-Type": content_type})
    assert response.code == 204


async def set_details(fetch, details: dict) -> None:
    response = await fetch(f"/records/{EVENT}", method="PUT", body=json.dumps(details))
    assert response.code == 200, response.body


async def get_feed(fetch, query: str = "", headers: dict | None = None):
    response = await fetch(FEED + query, headers=headers or {})
    assert response.code in (200, 304), response.body
    return response


def parsed(response) -> tuple:
    """The feed as feedparser and podcastparser read it."""
    by_feedparser = feedparser.parse(response.body)
    assert not by_feedparser.bozo, by_feedparser.get("bozo_exception")
    return by_feedparser, podcastparser.parse(response.effective_url, io.BytesIO(response.body))


@pytest.mark.gen_test(timeout=60)
async def test_the_feed_is_the_events_records_newest_first_as_both_parsers_read_it(fetch, http_client, base_url):
    await set_details(fetch, DETAILS)
    bodies = {WINTER: b"winter" * 1000, SUMMER: b"summer" * 2000, LATER: b"later" * 3000}
    for start, body in bodies.items():
        await put_record(fetch, start, body)
    response = await get_feed(fetch)
    assert response.headers["Content-Type"] == "application/rss+xml; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    feed, podcast = parsed(response)

    assert feed.version == "rss20"
    assert feed.feed.title == podcast["title"] == "Morning show"
    assert feed.feed.subtitle == podcast["description"] == DETAILS["description"]
    assert feed.feed.author == "Radio <Example>"  # itunes:author, its text escaped in the XML
    assert feed.feed.image.href == podcast["cover_url"] == DETAILS["image"]
    assert feed.feed.language == "en"
    assert feed.feed.link == podcast["link"] == f"{base_url}/#event/{EVENT}"
    self_link = next(link for link in feed.feed.links if link.rel == "self")
    assert self_link.href == f"{base_url}{FEED}" and self_link.type == "application/rss+xml"

    starts = [LATER, SUMMER, WINTER]  # newest first
    titles = ["Morning show, Tuesday 2 July 2024, 06:00", "Morning show, Monday 1 July 2024, 06:00",
              "Morning show, Monday 1 January 2024, 06:00"]  # fmt: skip
    assert [entry.title for entry in feed.entries] == titles
    assert sorted(episode["title"] for episode in podcast["episodes"]) == sorted(titles)
    # dates in the event's zone: CET in winter, CEST in summer
    assert [entry.published for entry in feed.entries] == [
        "Tue, 02 Jul 2024 06:00:00 +0200", "Mon, 01 Jul 2024 06:00:00 +0200", "Mon, 01 Jan 2024 06:00:00 +0100"
    ]  # fmt: skip
    berlin = {e["title"]: e["published"] for e in podcast["episodes"]}
    assert berlin[titles[2]] == datetime.datetime(2024, 1, 1, 5, tzinfo=datetime.timezone.utc).timestamp()
    assert berlin[titles[1]] == datetime.datetime(2024, 7, 1, 4, tzinfo=datetime.timezone.utc).timestamp()

    # each enclosure downloads its record, byte for byte
    for entry, start in zip(feed.entries, starts):
        [enclosure] = entry.enclosures
        assert enclosure.href == f"{base_url}{record_url(EVENT, start)}"
        assert enclosure.type == "audio/mpeg" and int(enclosure.length) == len(bodies[start])
        assert (await http_client.fetch(enclosure.href)).body == bodies[start]
    for episode in podcast["episodes"]:
        [enclosure] = episode["enclosures"]
        assert enclosure["file_size"] == len(bodies[enclosure["url"].rsplit("/", 1)[1]])
        assert enclosure["mime_type"] == "audio/mpeg"
    # guids: not links, one per record
    assert all(entry.guidislink is False for entry in feed.entries)
    assert len({entry.id for entry in feed.entries}) == 3
    assert {e["guid"] for e in podcast["episodes"]} == {entry.id for entry in feed.entries}


@pytest.mark.gen_test(timeout=60)
async def test_podcast_guid_follows_the_podcast_index_rule_and_the_channel_has_what_apple_requires(fetch, base_url):
    await set_details(fetch, DETAILS)
    await put_record(fetch, WINTER, b"x")
    response = await get_feed(fetch)
    channel = ElementTree.fromstring(response.body).find("channel")
    host_and_path = f"{base_url}{FEED}".removeprefix("http://")
    assert channel.findtext(f"{{{PODCAST}}}guid") == str(uuid.uuid5(PODCAST_GUIDS, host_and_path))
    assert feedparser.parse(response.body).feed.podcast_guid == str(uuid.uuid5(PODCAST_GUIDS, host_and_path))
    assert channel.findtext(f"{{{PODCAST}}}locked") == "yes"
    assert channel.findtext(f"{{{ITUNES}}}explicit") == "false"  # Apple's values today: true or false
    assert channel.find(f"{{{ITUNES}}}image").get("href") == DETAILS["image"]  # also for a .jpeg URL
    assert channel.find(f"{{{ITUNES}}}category").get("text") == "Music"
    for required in ("title", "description", "link", "language"):
        assert channel.findtext(required), required
    podcast = parsed(response)[1]  # as gPodder reads the same tags
    # (podcastparser 0.6.11 knows the Podcasting 2.0 namespace by its old GitHub URL only, not by the one the Podcast
    # Index publishes and this feed declares, so it reads no podcast:locked: checked above in the XML)
    assert podcast["explicit"] is False and podcast["language"] == "en"
    assert podcast["itunes_author"] == DETAILS["author"] and podcast["cover_url"] == DETAILS["image"]
    [item] = channel.findall("item")
    for required in ("title", "guid", "pubDate", "description"):
        assert item.findtext(required), required
    assert item.findtext(f"{{{ITUNES}}}title") == "Monday 1 January 2024, 06:00"  # Apple's, without the show's


async def next_second(after: str) -> None:
    """Wait until the clock is past the second of an HTTP date (whole seconds), so that a change made then shows in
    Last-Modified."""
    assert await eventually(lambda: time.time() >= email.utils.parsedate_to_datetime(after).timestamp() + 1, 3)


async def analysed(fetch, timeout: float = 60) -> dict:
    """The first record of the listing once its analysis is no longer pending."""
    deadline = time.monotonic() + timeout
    while (record := json.loads((await fetch(f"/records/{EVENT}")).body)["records"][0])["analysis"] == "pending":
        assert time.monotonic() < deadline, f"the analysis is still pending after {timeout} s"
        await asyncio.sleep(0.05)
    return record


@pytest.mark.gen_test(timeout=90)
async def test_durations_come_from_the_analysis_and_change_the_feed(app, fetch, tmp_path):
    mp3 = next(f for f in FORMATS if f.name == "mp3")
    audio = generate(tmp_path / "tone.mp3", mp3, Tone(duration=10.0)).read_bytes()
    await put_record(fetch, WINTER, audio)
    before = await get_feed(fetch)  # the app's background work is not started: the analysis is pending
    assert "itunes_duration" not in parsed(before)[0].entries[0]
    await next_second(before.headers["Last-Modified"])
    async with started(app):
        assert (await analysed(fetch))["analysis"] == "done"
    feed, podcast = parsed(await get_feed(fetch))
    assert feed.entries[0].itunes_duration == "10"
    assert podcast["episodes"][0]["total_time"] == 10
    # the duration changed the feed: a client revalidating with either validator gets it
    assert (await fetch(FEED, headers={"If-None-Match": before.headers["ETag"]})).code == 200
    assert (await fetch(FEED, headers={"If-Modified-Since": before.headers["Last-Modified"]})).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_guids_never_change_for_a_record_and_changes_change_the_feed_and_its_etag(fetch, base_url):
    await put_record(fetch, WINTER, b"first version")
    await put_record(fetch, SUMMER, b"summer")
    first = await get_feed(fetch)
    guids = {entry.enclosures[0].href: entry.id for entry in parsed(first)[0].entries}
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith('W/')
    assert (await get_feed(fetch)).headers["ETag"] == etag  # the same feed, the same validator

    await put_record(fetch, WINTER, b"a replaced version, longer")  # replaced: a new length, the same guid
    replaced = await get_feed(fetch)
    assert replaced.headers["ETag"] != etag
    entries = parsed(replaced)[0].entries
    assert {entry.enclosures[0].href: entry.id for entry in entries} == guids
    assert [int(e.enclosures[0].length) for e in entries] == [len(b"summer"), len(b"a replaced version, longer")]

    await put_record(fetch, LATER, b"later")  # added: a new item on top
    added = await get_feed(fetch)
    assert added.headers["ETag"] not in (etag, replaced.headers["ETag"])
    entries = parsed(added)[0].entries
    assert len(entries) == 3 and entries[0].published.startswith("Tue, 02 Jul 2024 06:00:00")
    assert {e.enclosures[0].href: e.id for e in entries[1:]} == guids

    assert (await fetch(record_url(EVENT, SUMMER), method="DELETE")).code == 204  # deleted: its item goes
    deleted = await get_feed(fetch)
    assert deleted.headers["ETag"] not in (etag, replaced.headers["ETag"], added.headers["ETag"])
    assert [e.id for e in parsed(deleted)[0].entries] == [entries[0].id, guids[f"{base_url}{record_url(EVENT, WINTER)}"]]


@pytest.mark.gen_test(timeout=60)
async def test_a_poller_gets_304_until_the_feed_changes(fetch):
    await put_record(fetch, WINTER, b"x")
    first = await get_feed(fetch)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}, {"If-None-Match": f'"other", {etag}'}):
        again = await get_feed(fetch, headers=headers)
        assert again.code == 304 and again.body == b"", headers
        assert again.headers["ETag"] == etag and again.headers["Cache-Control"] == "no-cache"
    head = await fetch(FEED, method="HEAD")
    assert head.code == 200 and head.body == b"" and head.headers["ETag"] == etag
    assert (await fetch(FEED, method="HEAD", headers={"If-None-Match": etag})).code == 304

    await next_second(modified)
    await set_details(fetch, {"title": "Evening news"})  # a detail changes the feed, and both validators
    changed = await get_feed(fetch, headers={"If-None-Match": etag})
    assert changed.code == 200 and parsed(changed)[0].feed.title == "Evening news"
    assert changed.headers["ETag"] != etag and changed.headers["Last-Modified"] != modified
    assert (await get_feed(fetch, headers={"If-Modified-Since": modified})).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_limit_keeps_the_newest_items_and_bad_arguments_are_400_json(fetch):
    for start in (WINTER, SUMMER, LATER):
        await put_record(fetch, start, b"x")
    entries = parsed(await get_feed(fetch, "?limit=2"))[0].entries
    assert [e.published[:16] for e in entries] == ["Tue, 02 Jul 2024", "Mon, 01 Jul 2024"]
    assert parsed(await get_feed(fetch, "?limit=0"))[0].entries == []
    for query in ("?limit=x", "?limit=-1", "?limit=1001", "?limit=1.5"):
        response = await fetch(FEED + query)
        assert response.code == 400 and response.headers["Content-Type"] == "application/json", query
        assert "limit" in json.loads(response.body)["detail"]
    response = await fetch("/feeds/not-a-uuid")
    assert response.code == 400 and json.loads(response.body)["status_code"] == 400


@pytest.mark.gen_test
async def test_an_event_without_records_has_no_feed(fetch):
    await set_details(fetch, DETAILS)  # details alone make no feed
    for method in ("GET", "HEAD"):
        response = await fetch(FEED, method=method)
        assert response.code == 404 and response.headers["Content-Type"] == "application/json"
    assert json.loads((await fetch(FEED)).body) == {"status_code": 404, "detail": f"No records of event {EVENT}, so no feed"}
    await put_record(fetch, WINTER, b"x")
    assert (await fetch(record_url(EVENT, WINTER), method="DELETE")).code == 204
    assert (await fetch(FEED)).code == 404


@pytest.mark.gen_test
async def test_the_service_zone_dates_events_that_name_none(fetch):
    await put_record(fetch, WINTER, b"x")
    assert parsed(await get_feed(fetch))[0].entries[0].published == "Mon, 01 Jan 2024 06:00:00 +0000"  # UTC
    await set_details(fetch, {"timezone": "America/New_York"})
    assert parsed(await get_feed(fetch))[0].entries[0].published == "Mon, 01 Jan 2024 06:00:00 -0500"
    await set_details(fetch, {"timezone": None})  # back to the service's zone
    assert parsed(await get_feed(fetch))[0].entries[0].published == "Mon, 01 Jan 2024 06:00:00 +0000"


@pytest.mark.parametrize("settings", [{"timezone": "Asia/Kolkata", "public_url": "https://radio.example/archive/"}])
@pytest.mark.gen_test
async def test_public_url_and_timezone_settings(fetch, settings):
    await put_record(fetch, WINTER, b"x")
    response = await get_feed(fetch, headers={"X-Forwarded-Host": "elsewhere.example"})
    feed = parsed(response)[0]
    assert feed.entries[0].published == "Mon, 01 Jan 2024 06:00:00 +0530"
    assert feed.entries[0].enclosures[0].href == f"https://radio.example/archive{record_url(EVENT, WINTER)}"
    assert feed.feed.podcast_guid == str(uuid.uuid5(PODCAST_GUIDS, f"radio.example/archive{FEED}"))


@pytest.mark.gen_test
async def test_forwarded_scheme_and_host_are_ignored_from_an_untrusted_peer(fetch, base_url):
    await put_record(fetch, WINTER, b"x")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "radio.example"}
    enclosure = parsed(await get_feed(fetch, headers=forwarded))[0].entries[0].enclosures[0].href
    assert enclosure == f"{base_url}{record_url(EVENT, WINTER)}"


@pytest.mark.parametrize("settings", [{"trusted_proxies": "127.0.0.1, ::1"}])
@pytest.mark.gen_test
async def test_forwarded_scheme_and_host_make_the_links_behind_a_trusted_proxy(fetch, settings):
    await put_record(fetch, WINTER, b"x")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "radio.example, proxy.internal"}
    feed = parsed(await get_feed(fetch, headers=forwarded))[0]
    assert feed.entries[0].enclosures[0].href == f"https://radio.example{record_url(EVENT, WINTER)}"
    assert feed.feed.podcast_guid == str(uuid.uuid5(PODCAST_GUIDS, f"radio.example{FEED}"))
    bad = await fetch(FEED, headers={"X-Forwarded-Host": "radio.example/<script>"})
    assert bad.code == 400 and json.loads(bad.body)["detail"].startswith("The request's Host")
