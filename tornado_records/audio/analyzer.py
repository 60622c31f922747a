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
import dataclasses
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from tornado_records.audio import analyses
from tornado_records.audio.facts import PROBE_SECONDS, Analysis, analyze
from tornado_records.audio.programs import ProgramFailed, Programs, missing
from tornado_records.events import EventHub
from tornado_records.storage.content import ContentStore
from tornado_records.storage.model import Blob, Record
from tornado_records.storage.store import RecordStore

log = logging.getLogger("tornado_records.audio")

RESCAN = 600.0  # seconds between looks for records still pending (another process's, or ffmpeg newly installed)
COPY_BLOCK = 1 << 20
# How long the presigned URL that ffmpeg reads an object at is valid. A program's argument list can be seen by the
# machine's other users: an hour bounds what one could read with it (that one version's bytes) and covers a decode of
# many hours of audio, which asks for its bytes again only when it seeks.
URL_SECONDS = 3600
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
        """In a thread: the analysis of the version's content (None if the version is gone). ffmpeg reads an object
        itself where the content engine gives a URL for it, as far and where it needs (a few megabytes of what is not
        audio; the audio at the decode's pace), rather than have the whole object copied out to a file first. Where
        ffmpeg cannot read the URL (one without HTTPS, say) the object is copied, as content of several runs is."""
        url = self.store.content.presigned(record.segments, URL_SECONDS)
        if url is not None:
            options = input_options(url)
            analysis = analyze(url, self.programs, *self.settings, size=record.size, options=options)
            analysis = dataclasses.replace(analysis, reason=without_secrets(analysis.reason, url))
            if analysis.state == "done" or self.programs.stopped or self._reads(url, options):
                return analysis
            log.info("record of event %s at %s: ffmpeg could not read its object at a URL (%s); copied to a file "
                     "instead", record.event, record.start, analysis.reason)  # fmt: skip
        with content_file(self.store.content, self.store.blobs, self.store.tmp, record) as fd:
            return None if fd is None else analyze(fd, self.programs, *self.settings)

    def _reads(self, url: str, options: tuple[str, ...]) -> bool:
        """Whether ffmpeg can read the URL at all: ffprobe says that it found no audio alike of content that is not
        audio and of a URL it could not open, so it is asked for the bytes as plain data."""
        arguments = ["ffprobe", "-v", "error", *options, "-f", "data", "-show_entries", "format=size", "-of", "json"]
        try:
            self.programs.run([*arguments, url], PROBE_SECONDS, output=True)
        except ProgramFailed:
            return False
        return True


def input_options(url: str) -> tuple[str, ...]:
    """ffmpeg's options to read `url`: over HTTPS the server's certificate checked (ffmpeg does not by default),
    against AWS_CA_BUNDLE where botocore is given one."""
    if not url.startswith("https:"):
        return ()
    bundle = os.environ.get("AWS_CA_BUNDLE")
    return ("-tls_verify", "1", *(("-ca_file", bundle) if bundle else ()))


def without_secrets(text: str, url: str) -> str:
    """`text` (a program's complaint, for the log) with the presigned URL's query, which is a credential while it is
    valid, cut off wherever the URL appears."""
    base = url.split("?", 1)[0]
    return re.sub(re.escape(base) + r"[^\s:]*", lambda _: base, text)


@contextlib.contextmanager
def content_file(content: ContentStore, blobs: Path, tmp: Path, record: Record) -> Iterator[int | None]:
    """The version's content as an open file (its descriptor) for the block: its own blob file in `blobs` where that
    holds exactly the content, else a copy in `tmp` that has no name (nothing is left of it, whatever happens); None
    if the version is gone. Blocks."""
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
    try:
        with tempfile.TemporaryFile(dir=tmp) as copy:
            while data := blob.file.read(COPY_BLOCK):
                copy.write(data)
            copy.flush()
            blob.close()
            yield copy.fileno()
    finally:
        blob.close()
