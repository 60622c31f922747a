"""The analyses in the index: one row per record, for the version (its content's SHA-256) that was analysed. A
record whose current version has no row of its SHA-256 is pending. Functions of a connection to the index (sqldb),
on every engine; they know no HTTP."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Iterable

from tornado_records.audio.facts import Analysis
from tornado_records.storage.model import Record
from tornado_records.storage.sqldb import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (  -- what the audio analysis found in a record's version (audio/)
    event    TEXT    NOT NULL,
    start    TEXT    NOT NULL,
    sha256   TEXT    NOT NULL,  -- the version analysed: its content's SHA-256
    state    TEXT    NOT NULL,  -- done, unsupported or failed
    duration DOUBLE PRECISION,  -- seconds, where done
    audio    TEXT,              -- the facts as the API shows them (JSON), where done
    peaks    {blob},            -- the waveform, where done: min/max pairs of signed bytes
    samples_per_pixel BIGINT,
    sample_rate       BIGINT,
    analysed BIGINT,            -- Unix microseconds when it was kept (NULL: before issue 26 asked)
    PRIMARY KEY (event, start)
) {without_rowid};
"""
PENDING = "pending"
Analyses = dict[tuple[str, str, str], Analysis]  # by (event, start, SHA-256)
_CURRENT = "records.event = analyses.event AND records.start = analyses.start AND records.sha256 = analyses.sha256"


def create(conn: Database) -> None:
    """Make the table, and drop the rows of records that are gone."""
    conn.schema(SCHEMA)
    conn.add_column("analyses", "analysed", "BIGINT")  # a table from before the column
    conn.execute(
        "DELETE FROM analyses WHERE NOT EXISTS"
        " (SELECT 1 FROM records WHERE records.event = analyses.event AND records.start = analyses.start)"
    )


def save(conn: Database, record: Record, analysis: Analysis) -> bool:
    """Keep the analysis of `record`'s version, if it is still the record's current one (inside a transaction that
    holds the record); whether it was kept."""
    current = conn.execute(
        "SELECT 1 FROM records WHERE event = ? AND start = ? AND sha256 = ?", (record.event, record.start, record.sha256)
    ).fetchone()
    if current is None:
        return False
    conn.execute(
        "INSERT INTO analyses (event, start, sha256, state, duration, audio, peaks, samples_per_pixel, sample_rate,"
        " analysed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event, start) DO UPDATE SET"
        " sha256 = excluded.sha256, state = excluded.state, duration = excluded.duration, audio = excluded.audio,"
        " peaks = excluded.peaks, samples_per_pixel = excluded.samples_per_pixel, sample_rate = excluded.sample_rate,"
        " analysed = excluded.analysed",
        (
            record.event, record.start, record.sha256, analysis.state, analysis.duration,
            None if analysis.audio is None else json.dumps(analysis.audio), analysis.peaks or None,
            analysis.samples_per_pixel, analysis.sample_rate, time.time_ns() // 1000,
        ),
    )  # fmt: skip
    return True


def all_of(conn: sqlite3.Connection | Database) -> Analyses:
    """Every analysis in an index (to copy into another with its records: `carry`), by (event, start, SHA-256); none
    in an index from before the analyses."""
    exists = (
        "SELECT 1 FROM sqlite_master WHERE name = 'analyses'" if isinstance(conn, sqlite3.Connection)
        else "SELECT 1 FROM information_schema.tables WHERE table_name = 'analyses' AND table_schema = current_schema()"
    )  # fmt: skip
    if conn.execute(exists).fetchone() is None:
        return {}
    rows = conn.execute(
        "SELECT event, start, sha256, state, audio, peaks, samples_per_pixel, sample_rate FROM analyses"
    ).fetchall()
    return {
        (event, start, sha): Analysis(state, None if audio is None else json.loads(audio), bytes(peaks or b""),
                                      samples_per_pixel or 0, sample_rate or 0)
        for event, start, sha, state, audio, peaks, samples_per_pixel, sample_rate in rows
    }  # fmt: skip


def carry(conn: Database, record: Record, analysed: Analyses) -> None:
    """Keep the analysis that `record` had in the index it was copied from (`all_of` that index), if it had one."""
    found = analysed.get((record.event, record.start, record.sha256))
    if found is not None:
        with conn.transaction():
            conn.lock_record(record.event, record.start)
            save(conn, record, found)


def forget(conn: Database, event: str, start: str) -> None:
    """Drop the analysis of a record that was deleted."""
    conn.execute("DELETE FROM analyses WHERE event = ? AND start = ?", (event, start))


def waiting(conn: Database, failed: bool = False) -> list[tuple[str, str]]:
    """The records (event, start) whose current version has no analysis (and, if `failed`, those whose analysis
    failed), oldest change first."""
    also = " OR analyses.state = 'failed'" if failed else ""
    rows = conn.execute(
        f"SELECT records.event, records.start FROM records LEFT JOIN analyses ON {_CURRENT}"
        f" WHERE analyses.event IS NULL{also} ORDER BY records.modified"
    ).fetchall()
    return [(event, start) for event, start in rows]


def state_of(conn: Database, record: Record) -> str:
    """The state of the analysis of the record's version: pending, done, unsupported or failed."""
    row = conn.execute(
        "SELECT state FROM analyses WHERE event = ? AND start = ? AND sha256 = ?",
        (record.event, record.start, record.sha256),
    ).fetchone()
    return PENDING if row is None else row[0]


def duration_of(conn: Database, record: Record) -> float | None:
    """The duration of the record's version, if its analysis is done."""
    row = conn.execute(
        "SELECT duration FROM analyses WHERE event = ? AND start = ? AND sha256 = ? AND state = 'done'",
        (record.event, record.start, record.sha256),
    ).fetchone()
    return None if row is None else row[0]


def described(conn: Database, records: list[Record]) -> list[dict[str, Any]]:
    """The records as the listing shows them: each with its `analysis` state and, where done, its `audio`."""
    found: dict[tuple[str, str, str], tuple[str, str | None]] = {}
    if records:
        starts = [r.start for r in records]
        rows = conn.execute(
            "SELECT start, sha256, state, audio FROM analyses WHERE event = ? AND start BETWEEN ? AND ?",
            (records[0].event, min(starts), max(starts)),
        )
        found = {(start, sha): (state, audio) for start, sha, state, audio in rows}
    return [_described(r, *found.get((r.start, r.sha256), (PENDING, None))) for r in records]


def describe(record: Record, analysis: Analysis) -> dict[str, Any]:
    """A record as the listing shows it, with this analysis of its version."""
    return {**record.to_json(), "analysis": analysis.state, "audio": analysis.audio}


def _described(record: Record, state: str, audio: str | None) -> dict[str, Any]:
    return {**record.to_json(), "analysis": state, "audio": None if audio is None else json.loads(audio)}


def durations(conn: Database, events: Iterable[str]) -> dict[str, float]:
    """The total duration of each event's records whose analysis is done (events with none are absent)."""
    events = list(events)
    if not events:
        return {}
    rows = conn.execute(
        f"SELECT analyses.event, sum(analyses.duration) FROM analyses JOIN records ON {_CURRENT}"
        f" WHERE analyses.state = 'done' AND analyses.event IN ({', '.join('?' * len(events))})"
        " GROUP BY analyses.event",
        events,
    )
    return {event: round(total, 3) for event, total in rows}


def peaks(conn: Database, record: Record) -> tuple[str, int, int, bytes] | None:
    """The state of the analysis of the record's version and, where done, its waveform: samples per pixel, sample
    rate and min/max pairs (None: pending)."""
    row = conn.execute(
        "SELECT state, samples_per_pixel, sample_rate, peaks FROM analyses WHERE event = ? AND start = ? AND sha256 = ?",
        (record.event, record.start, record.sha256),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], bytes(row[3] or b""))


def last_analysed(conn: Database, event: str) -> int:
    """When the last analysis of one of the event's records was kept (Unix microseconds; 0: none, or none since the
    time was kept)."""
    row = conn.execute("SELECT max(analysed) FROM analyses WHERE event = ?", (event,)).fetchone()
    return row[0] or 0
