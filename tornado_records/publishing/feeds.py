"""The podcast feed of an event (`GET /feeds/{event}`): RSS 2.0 with the iTunes (Apple Podcasts) and Podcasting 2.0
namespaces, built with feedgen, whose lxml tree escapes every text and declares each namespace once. What the feed
holds, and why, is checked point by point against Apple's and the Podcast Index's requirements in docs/feeds.md.

A feed is a pure function of what it is given (no clock): the same records, details and base URL make the same
bytes, so that a hash of them is its ETag."""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid
import zoneinfo

from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from tornado_records import __version__
from tornado_records.http.semantics import served_type
from tornado_records.storage.catalogue import EventDetails
from tornado_records.storage.model import Record

ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST = "https://podcastindex.org/namespace/1.0"
PODCAST_GUIDS = uuid.UUID("ead4c236-bf58-58c6-a2c6-a6b28d128cb6")  # the Podcast Index's namespace of podcast:guid
RECORD_GUIDS = uuid.UUID("fcda15cc-7c37-44eb-97e6-b4f3a153e01a")  # this service's namespace of its items' guids
# The channel's defaults, where an event's details say nothing of them (docs/feeds.md says why each)
LANGUAGE = "en"
CATEGORY = "Music"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Episode:
    """A record as a feed item: the record, and its duration in seconds once its analysis is done."""

    record: Record
    duration: float | None


def feed_url(base: str, event: uuid.UUID) -> str:
    """The feed's URL, under the service's public base URL."""
    return f"{base}/feeds/{event}"


def podcast_guid(url: str) -> str:
    """The feed's `podcast:guid`: the UUIDv5 of its URL without the scheme and trailing slashes, in the Podcast
    Index's namespace."""
    return str(uuid.uuid5(PODCAST_GUIDS, _SCHEME.sub("", url).rstrip("/")))


def record_guid(record: Record) -> str:
    """An item's guid: a UUIDv5 of the record's event and start, the same for every version of it and at any base
    URL, so that a podcast app never shows a record twice."""
    return str(uuid.uuid5(RECORD_GUIDS, f"{record.event}/{record.start}"))


def in_words(start: datetime.datetime) -> str:
    """A start for people, in English whatever the locale: `Monday 1 January 2024, 06:00`."""
    return f"{_DAYS[start.weekday()]} {start.day} {_MONTHS[start.month - 1]} {start.year}, {start:%H:%M}"


class _Namespaces(BaseExtension):
    """What feedgen does not write: the Podcasting 2.0 channel tags, and the iTunes tags whose values Apple asks for
    today (`itunes:explicit` true or false; `itunes:image` for any image URL, not only those ending .jpg or .png)."""

    def __init__(self) -> None:
        self.guid = ""
        self.image: str | None = None

    def extend_ns(self) -> dict[str, str]:
        return {"podcast": PODCAST}

    def extend_rss(self, feed):  # noqa: ANN001, ANN201 (feedgen's lxml root)
        channel = feed[0]
        if self.image:
            xml_elem(f"{{{ITUNES}}}image", channel, href=self.image)
        xml_elem(f"{{{ITUNES}}}explicit", channel).text = "false"
        xml_elem(f"{{{PODCAST}}}guid", channel).text = self.guid
        xml_elem(f"{{{PODCAST}}}locked", channel).text = "yes"
        return feed


def build(base: str, event: uuid.UUID, details: EventDetails, zone: str, episodes: list[Episode],
          modified: datetime.datetime) -> bytes:  # fmt: skip
    """The feed of `event`'s records (`episodes`, newest first), its links under `base`, its dates in `zone` (the
    event's or the service's), its lastBuildDate `modified` (the last change of what it shows): UTF-8 XML."""
    url, page = feed_url(base, event), f"{base}/#event/{event}"
    title = details.title or str(event)
    feed = FeedGenerator()
    feed.load_extension("podcast")
    feed.register_extension("records", _Namespaces, atom=False)
    feed.title(title)
    feed.description(details.description or f"The recordings of {title}, newest first.")
    feed.link(href=url, rel="self", type="application/rss+xml")
    feed.link(href=page, rel="alternate")  # the RSS <link>: the event's page in the listening room
    feed.language(LANGUAGE)
    feed.generator(f"tornado-records {__version__}")
    feed.lastBuildDate(modified)
    if details.author:
        feed.podcast.itunes_author(details.author)
    if details.image:
        feed.image(url=details.image, title=title, link=page)
    feed.podcast.itunes_category(cat=CATEGORY)
    feed.podcast.itunes_type("episodic")
    feed.records.guid = podcast_guid(url)
    feed.records.image = details.image
    tz = zoneinfo.ZoneInfo(zone)
    for episode in episodes:
        _add_item(feed, episode, title, page, base, tz)
    return feed.rss_str(pretty=True)


def _add_item(feed: FeedGenerator, episode: Episode, title: str, page: str, base: str, tz: zoneinfo.ZoneInfo) -> None:
    record = episode.record
    start = datetime.datetime.fromisoformat(record.start)
    item = feed.add_entry(order="append")
    item.title(f"{title}, {in_words(start)}")
    item.podcast.itunes_title(in_words(start))  # Apple's episode title, without the show's
    item.description(f"{title}, recorded on {in_words(start)} ({tz.key}).")
    item.guid(record_guid(record), permalink=False)
    item.link(href=page)
    item.pubDate(start.replace(tzinfo=tz))
    download = f"{base}/records/{record.event}/{record.start}"
    item.enclosure(download, str(record.size), served_type(record.type)[0])
    if episode.duration is not None:
        item.podcast.itunes_duration(round(episode.duration))
