"""The catalogue of events: one row per event in the index's `catalogue` table, with its details (title,
description, author, image, timezone) and the totals of its records (count, bytes, last change), kept in the same transaction as each change of a record, so that the events
list is a read of one small table at any number of records. Functions of a connection to the index (sqldb); they know no HTTP."""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import time

from tornado_records.storage.sqldb import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS catalogue (  -- one row per event (the event log is the table `events`)
    event    TEXT    PRIMARY KEY,        -- canonical UUID
    title    TEXT,                       -- a human title, or NULL
    description TEXT, author TEXT, image TEXT, timezone TEXT,  -- the rest of its details (DETAILS), or NULL
    details_modified BIGINT,             -- Unix microseconds of the last change of its details, or NULL
    records  BIGINT  NOT NULL DEFAULT 0,
    bytes    BIGINT  NOT NULL DEFAULT 0,
    modified BIGINT  NOT NULL DEFAULT 0, -- Unix microseconds of the last change of one of its records (an order)
    starts   BIGINT  NOT NULL DEFAULT 0  -- the version of its set of starts: a new random number at each creation or
                                         -- deletion of one of its records (see starts.SqlStarts)
) {without_rowid};
CREATE INDEX IF NOT EXISTS catalogue_by_change ON catalogue (modified, event);
"""
# A row stays while the event has records or one of its details.

DETAILS = ("title", "description", "author", "image", "timezone")  # what PUT /records/{event} sets
_BARE = " AND ".join(f"{detail} IS NULL" for detail in DETAILS)  # a row without details: gone with its records


@dataclasses.dataclass(frozen=True)
class EventDetails:
    """An event's details (None where unset), and when its records or details last changed."""

    title: str | None = None
    description: str | None = None
    author: str | None = None
    image: str | None = None
    timezone: str | None = None
    changed: int = 0  # Unix microseconds of the last change of one of its records or of its details (0: none)

    def to_json(self) -> dict[str, str | None]:
        return {detail: getattr(self, detail) for detail in DETAILS}


@dataclasses.dataclass(frozen=True)
class EventSummary:
    """An event as the events list shows it."""

    event: str
    title: str | None
    records: int
    bytes: int
    modified: int  # Unix microseconds
    first_start: str | None = None
    last_start: str | None = None

    def to_json(self) -> dict:
        return {
            "event": self.event,
            "title": self.title,
            "records": self.records,
            "bytes": self.bytes,
            "first_start": self.first_start,
            "last_start": self.last_start,
            "modified": datetime.datetime.fromtimestamp(self.modified // 1000000, datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }


def create(conn: Database) -> None:
    """Make the table, and count every event's records and bytes again from the records (at each start: the totals
    heal whatever changed the index behind the service's back, and an index from before the table gets them)."""
    conn.schema(SCHEMA)
    conn.add_column("catalogue", "starts", "BIGINT NOT NULL DEFAULT 0")  # a catalogue from before the column
    for column in (*DETAILS[1:], "details_modified"):  # a catalogue from before the details (issue 26)
        conn.add_column("catalogue", column, "BIGINT" if column == "details_modified" else "TEXT")
    with conn.transaction():
        if conn.shared:  # the others write meanwhile: count their changes after this, not before
            conn.lock_tables("records", "catalogue")
        version = secrets.randbits(62)  # the starts may have changed behind the service's back
        conn.execute("UPDATE catalogue SET records = 0, bytes = 0, starts = ?", (version,))
        conn.execute(
            "INSERT INTO catalogue (event, records, bytes, modified, starts)"
            " SELECT event, count(*), sum(size), max(modified) * 1000000, ? FROM records WHERE true GROUP BY event"
            " ON CONFLICT (event) DO UPDATE SET records = excluded.records, bytes = excluded.bytes,"
            f" modified = {conn.greatest}(catalogue.modified, excluded.modified)",
            (version,),
        )
        conn.execute(f"DELETE FROM catalogue WHERE records <= 0 AND {_BARE}")


def count_change(conn: Database, event: str, old_size: int | None, new_size: int | None) -> None:
    """Count one change of a record of `event` (inside the change's transaction): sizes None where the record was
    absent before (created) or is absent after (deleted)."""
    count_changes(conn, [(event, old_size, new_size)])


def count_changes(conn: Database, changes: list[tuple[str, int | None, int | None]]) -> None:
    """Count changes (event, old size, new size) as count_change does, added up by event: two statements an event
    (a commit line's records are mostly of a few events)."""
    totals: dict[str, list[int]] = {}
    for event, old_size, new_size in changes:
        total = totals.setdefault(event, [0, 0])
        total[0] += (new_size is not None) - (old_size is not None)
        total[1] += (new_size or 0) - (old_size or 0)
    for event, (records, added) in totals.items():
        starts = "excluded.starts" if records else "catalogue.starts"
        conn.execute(
            "INSERT INTO catalogue (event, records, bytes, modified, starts) VALUES (?, ?, ?, ?, ?) ON CONFLICT"
            " (event) DO UPDATE SET records = catalogue.records + excluded.records, bytes = catalogue.bytes +"
            f" excluded.bytes, modified = excluded.modified, starts = {starts}",
            (event, records, added, time.time_ns() // 1000, secrets.randbits(62)),
        )
        _drop_if_bare(conn, event)


def _drop_if_bare(conn: Database, event: str) -> None:
    conn.execute(f"DELETE FROM catalogue WHERE event = ? AND records <= 0 AND {_BARE}", (event,))


def set_details(conn: Database, event: str, changes: dict[str, str | None], keep: bool = False) -> EventDetails:
    """Set the details named in `changes` (None takes one away), the others kept; with `keep`, only those the event
    has none of. The event's details now."""
    columns = [detail for detail in DETAILS if detail in changes]
    kept = "COALESCE(catalogue.{0}, excluded.{0})" if keep else "excluded.{0}"
    updates = ", ".join(f"{column} = {kept.format(column)}" for column in (*columns, "details_modified"))
    conn.execute(
        f"INSERT INTO catalogue (event, {', '.join(columns)}, details_modified) VALUES (?, {'?, ' * len(columns)}?)"
        f" ON CONFLICT (event) DO UPDATE SET {updates}",
        (event, *(changes[column] for column in columns), time.time_ns() // 1000),
    )
    _drop_if_bare(conn, event)
    return details(conn, event)


def details(conn: Database, event: str) -> EventDetails:
    """The event's details (all None for an event that has none)."""
    row = conn.execute(
        f"SELECT {', '.join(DETAILS)}, {conn.greatest}(modified, COALESCE(details_modified, 0)) FROM catalogue"
        " WHERE event = ?",
        (event,),
    ).fetchone()
    return EventDetails() if row is None else EventDetails(*row)




def page(
    conn: Database, *, search: str | None, limit: int, offset: int, descending: bool
) -> tuple[int, list[EventSummary]]:
    """How many events have records (and match `search`, a case-insensitive part of the title or the UUID), and
    those of the page asked for, by last change (most recent first if `descending`), each with its first and last
    start."""
    where = "records > 0"
    parameters: tuple = ()
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where += f" AND (event {conn.like} ? ESCAPE '\\' OR title {conn.like} ? ESCAPE '\\')"
        parameters = (pattern, pattern)  # whatever the case of ASCII letters
    (count,) = conn.execute(f"SELECT count(*) FROM catalogue WHERE {where}", parameters).fetchone()
    order = "DESC" if descending else "ASC"
    ordered = f"ORDER BY modified {order}, event {order}"
    starts = "(SELECT {}(start) FROM records WHERE records.event = page.event)"  # a look in the index's key each
    rows = conn.execute(
        f"SELECT event, title, records, bytes, modified, {starts.format('min')}, {starts.format('max')} FROM"
        f" (SELECT * FROM catalogue WHERE {where} {ordered} LIMIT ? OFFSET ?) AS page {ordered}",
        (*parameters, limit, offset),
    ).fetchall()
    return count, [EventSummary(*row) for row in rows]
