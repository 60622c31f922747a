"""`tornado-records analyze`: analyse the audio of the records whose current version has no analysis (stored before
the service analysed audio, or while ffmpeg was missing or the service stopped), and again those whose analysis
failed; with `--again`, every record. Wherever the service keeps them: a data directory (the default), or a
PostgreSQL index with files in a shared data directory or objects in an S3 store. It writes only the analyses in the
index, one record at a time, and may run beside a live service (which then shows each record's analysis at once).

Each record is analysed as the service does it (audio/facts.py: ffprobe and one ffmpeg decode, at the lowest CPU
priority); an analysis is kept only if the record still has the version it read.
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from tornado_records.audio import analyses
from tornado_records.audio.analyzer import analyse_content
from tornado_records.audio.programs import Programs, missing
from tornado_records.commands.datadir import INDEX, RECORD_COLUMNS, CommandError, Source, record_path
from tornado_records.storage import sqldb
from tornado_records.storage.model import Record


def analyze(source: Source, again: bool, silence_threshold: float, silence_min: float,
            out: TextIO = sys.stdout) -> int:  # fmt: skip
    """Analyse the records of `source` that need it (all, if `again`); one line per record and a summary. Returns
    the exit status: 0, or 1 if an analysis failed."""
    if absent := missing():
        raise CommandError(f"{' and '.join(absent)} not found: install ffmpeg (it brings ffprobe) to analyse audio")
    if not source.shared and not (source.root / INDEX).is_file():
        raise CommandError(f"{source.root} is not a data directory: it has no {INDEX}")
    started = time.monotonic()
    try:
        conn = sqldb.connect(source.index, source.root)
    except sqldb.Database.errors as exc:
        raise CommandError(f"cannot use the index {source.index_name}: {str(exc).strip().splitlines()[0]}") from None
    content = source.open_content()
    counts: collections.Counter[str] = collections.Counter()
    programs = Programs()
    try:
        analyses.create(conn)
        keys = _all(conn) if again else analyses.waiting(conn, failed=True)
        with tempfile.TemporaryDirectory(prefix="tornado-records-analyze-") as tmp:
            for event, start in keys:
                record = _record(conn, event, start)
                if record is None:
                    continue
                analysis = analyse_content(content, source.root / "blobs", Path(tmp), record, programs,
                                           silence_threshold, silence_min)  # fmt: skip
                kept = False
                if analysis is not None:
                    with conn.transaction():
                        conn.lock_record(record.event, record.start)
                        kept = analyses.save(conn, record, analysis)
                if not kept:
                    counts["changed"] += 1
                    continue
                counts[analysis.state] += 1
                detail = _summary(analysis.audio) if analysis.audio else analysis.reason
                print(f"{record_path(record)}: {analysis.state}: {detail}", file=out, flush=True)
    finally:
        content.close()
        conn.close()
    done = sum(counts[state] for state in ("done", "unsupported", "failed"))
    print(
        f"analysed {done} record(s) in {time.monotonic() - started:.1f} s: {counts['done']} done, "
        f"{counts['unsupported']} unsupported, {counts['failed']} failed"
        + (f", {counts['changed']} changed or deleted meanwhile (left to the service)" if counts["changed"] else ""),
        file=out,
    )
    return 1 if counts["failed"] else 0


def _all(conn: sqldb.Database) -> list[tuple[str, str]]:
    return [(event, start) for event, start in conn.execute("SELECT event, start FROM records ORDER BY modified")]


def _record(conn: sqldb.Database, event: str, start: str) -> Record | None:
    row = conn.execute(f"SELECT {RECORD_COLUMNS} FROM records WHERE event = ? AND start = ?", (event, start)).fetchone()
    return None if row is None else Record(*row)


def _summary(audio: dict) -> str:
    minutes, seconds = divmod(audio["duration"], 60)
    loudness = "" if audio["loudness"] is None else f", {audio['loudness']:.1f} LUFS"
    silences = f", {len(audio['silences'])} silence(s)" if audio["silences"] else ""
    return f"{audio['format']}/{audio['codec']}, {int(minutes)}:{seconds:04.1f}{loudness}{silences}"
