"""The analysis of every record's audio, in the background: after each new version is stored (a PUT completed, an
append request ended, a resumable upload completed), and at start for every record whose version has none yet (a
restart resumes what was pending; records stored before the feature get theirs).

At most `workers` analyses run at once, each in a thread of its own running ffprobe and ffmpeg at the lowest CPU
priority (programs.py); none runs on the event loop. A record still being appended to waits for its append requests
to end. An analysis is kept only for the version it read: a record replaced meanwhile is analysed anew. Without
ffmpeg, the service starts with one warning and its records stay pending until ffmpeg is there (looked for again at
each RESCAN).

With several processes on one index, the process that stored a version analyses it (each holds the record's name
while it does), and every start looks for what is still pending.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from tornado_records.audio import analyses
from tornado_records.audio.facts import Analysis, analyze
from tornado_records.audio.programs import Programs, missing
from tornado_records.audio.relay import URL, Relay, relayed
from tornado_records.events import EventHub
from tornado_records.storage.content import ContentStore
from tornado_records.storage.model import Blob, Record
from tornado_records.storage.store import RecordStore

log = logging.getLogger("tornado_records.audio")

RESCAN = 600.0  # seconds between looks for records still pending (another process's, or ffmpeg newly installed)
COPY_BLOCK = 1 << 20
# the events after which a record may have a new version to analyse
_STORED = {"record-created", "record-updated"}
_ENDED = {"upload-completed", "upload-interrupted"}  # an append request's end


class Analyzer:
    """The background analyses of one store's records; `start()` and `stop()` on the event loop."""

    def __init__(
        self, store: RecordStore, hub: EventHub, workers: int, silence_threshold: float, silence_min: float
    ) -> None:
        self.store = store
        self.hub = hub
        self.workers = workers
        self.settings = (silence_threshold, silence_min)
        self.programs = Programs()
        self.wanted: dict[tuple[str, str], None] = {}  # records to look at, in order (a dict: each once)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._threads = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="records-audio")
        self._warned = False
        self._ready = False  # ffmpeg and ffprobe are there (looked for at each rescan)
        analyses.create(store.wconn)

    def start(self) -> None:
        if self.workers == 0:
            return
        self.hub.watchers.append(self._seen)
        self._tasks = [asyncio.ensure_future(self._rescans())]
        self._tasks += [asyncio.ensure_future(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """End the analyses: those running are stopped and stay pending (the next start does them)."""
        self.programs.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._threads.shutdown(wait=True)

    def _seen(self, event_type: str, data: dict[str, Any]) -> None:
        """An event of this process: note a record that may have a new version."""
        if event_type in _STORED:
            self.want(data["record"]["event"], data["record"]["start"])
        elif event_type in _ENDED:
            self.want(data["event"], data["start"])
        elif event_type == "record-deleted":
            record = data["record"]
            self.store.finish_later(self.store.in_writer(analyses.forget, record["event"], record["start"]),
                                    "forgetting the analysis of a deleted record")  # fmt: skip

    def want(self, event: str, start: str) -> None:
        """Look at the record (event, start) soon: analyse its version if it has none."""
        self.wanted[(event, start)] = None
        self._wake.set()

    async def _rescans(self) -> None:
        """Look for ffmpeg and for every record pending now, and again every RESCAN seconds."""
        loop = asyncio.get_running_loop()
        while True:
            absent = missing()
            if absent and not self._warned:
                self._warned = True
                log.warning("%s not found: records are not analysed (their analysis stays pending) until it is "
                            "installed", " and ".join(absent))  # fmt: skip
            self._ready = not absent
            self._wake.set()
            if self._ready:
                for key in await loop.run_in_executor(None, analyses.waiting, self.store.rconn):
                    self.want(*key)
            await asyncio.sleep(RESCAN)

    async def _work(self) -> None:
        while True:
            while not (self.wanted and self._ready):
                self._wake.clear()
                await self._wake.wait()
            key = next(iter(self.wanted))
            del self.wanted[key]
            try:
                await self.analyse(*key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (one record's trouble; the next start tries again)
                log.warning("could not analyse the record of event %s at %s: %s", key[0], key[1], exc)

    async def analyse(self, event: str, start: str) -> None:
        """Analyse the record's current version, unless it has its analysis, is being appended to, or another
        process analyses it."""
        record = self.store.current(event, start, self.store.rconn)
        if (
            record is None
            or analyses.state_of(self.store.rconn, record) != analyses.PENDING
            or self.store.joins.appending(event, start)  # analysed once its append requests end
        ):
            return
        name = f"analysis {event} {start}"
        if self.store.shared and not await self.store.in_writer(lambda conn: conn.hold(name)):
            return  # another process is at it
        try:
            analysis = await asyncio.get_running_loop().run_in_executor(self._threads, self._analyse, record)
            if analysis is None or self.programs.stopped:
                return  # replaced or deleted meanwhile, or the service is stopping: it stays pending
            if analysis.state != "done":
                log.info("record of event %s at %s: analysis %s (%s)", event, start, analysis.state, analysis.reason)
            if await self.store.in_writer(analyses.save, record, analysis):
                self.hub.publish("record-analyzed", {"record": analyses.describe(record, analysis)})
        finally:
            if self.store.shared:
                await self.store.in_writer(lambda conn: conn.let_go(name))

    def _analyse(self, record: Record) -> Analysis | None:
        """In a thread: the analysis of the version's content (None if the version is gone)."""
        return analyse_content(self.store.content, self.store.blobs, self.store.tmp, record, self.programs,
                               *self.settings)  # fmt: skip


def analyse_content(
    content: ContentStore, blobs: Path, tmp: Path, record: Record, programs: Programs, threshold: float, minimum: float
) -> Analysis | None:
    """The analysis of the version's content; None if the version is gone. Content that has no file (objects in S3)
    is read by ffmpeg through a relay, as far and where it needs (a few megabytes of what is not audio; the audio at
    the decode's pace), rather than copied out whole to a file first. Raises what the store raised where it did not
    answer (the analysis stays pending). Blocks."""
    with content_input(content, blobs, tmp, record) as source:
        if not isinstance(source, Relay):
            return None if source is None else analyze(source, programs, threshold, minimum)
        analysis = analyze(URL, programs, threshold, minimum, size=record.size, environment=source.environment)
    if isinstance(source.error, FileNotFoundError):
        return None
    if source.error is not None and not programs.stopped:
        raise source.error
    return analysis


@contextlib.contextmanager
def content_input(content: ContentStore, blobs: Path, tmp: Path, record: Record) -> Iterator[int | Relay | None]:
    """The version's content as ffmpeg reads it, for the block: an open file (its descriptor), its own blob file in
    `blobs` where that holds exactly the content, else a copy in `tmp` that has no name (nothing is left of it,
    whatever happens); a relay of it where it is not in files (objects in S3); None if the version is gone. Blocks."""
    segments = record.segments
    name = content.whole_file(segments[0]) if len(segments) == 1 else None
    if name is not None:
        try:
            file = open(blobs / name, "rb")
        except FileNotFoundError:
            file = None
        if file is not None and os.fstat(file.fileno()).st_size == segments[0].length:
            with file:
                yield file.fileno()
            return
        if file is not None:
            file.close()
    try:
        blob = Blob(record, content.open(segments, whole=False))
    except FileNotFoundError:
        yield None
        return
    if not blob.file.local:
        blob.close()
        with relayed(lambda: content.open(segments, whole=False), record.size) as relay:
            yield relay
        return
    try:
        with tempfile.TemporaryFile(dir=tmp) as copy:
            while data := blob.file.read(COPY_BLOCK):
                copy.write(data)
            copy.flush()
            blob.close()
            yield copy.fileno()
    finally:
        blob.close()
