"""The live dead-air watch: while an append recording streams, its audio is decoded as it reaches the service, and a
silence of `--dead-air` seconds (below `--silence-threshold`) is announced while the broadcast still records:
`dead-air` {event, start, at}, then `dead-air-over` {event, start, at, lasted} once sound comes back.

One `Watch` per record being appended to, not per request: appends.py tells it (`LiveAudio`) which piece is live and
which bytes of its file join the record, as the file grows, so that after a takeover the same watch, the same
decoder and the same clock go on with the new live piece's bytes from its cut. Its ffmpeg (nice 19, programs.py)
reads them from a pipe; `asetpts` numbers the samples decoded (the timestamps of a chained Ogg stream start again at
each link), and `silencedetect` says where a silence began once it has lasted `--dead-air` seconds, and where it
ended. `-progress` reports the seconds decoded (the watch's clock).

Nothing of it runs on the event loop: a feeder thread per watch reads the pieces' files (through descriptors of its
own) and writes to ffmpeg's standard input; a reader thread reads ffmpeg's log line by line; what it finds is
published on the event loop (call_soon_threadsafe).

Bounds: at most MAX_WATCHES watches at once (a recording past it is not watched, said in one log line). Bytes are
read from the files, never held: a feeder blocked by a slow ffmpeg holds one block, and the pipe is the kernel's.
A feeder that finds itself more than LAG_SECONDS of audio behind the file (MAX_BEHIND bytes, before the bytes per
second are known) drops what ffmpeg could not take, and says so in the log; the times after it count the dropped
audio as the bytes per second so far estimate it.

`at` is seconds into the record: the seconds decoded by the watch, after the record's audio from before the watch
began (appends after a break): the clock of the record's previous watch in this process if the record is still the
version that watch left, else the duration of the record's analysis if it is done, else nothing (`at` then counts
from the watch's beginning, said in the log at debug level). A recording whose requests all end while it is silent
gets its `dead-air-over` then, with `"ended": true` and `lasted` up to the end of its audio.

Types that decode as they arrive: MP3, Ogg (Opus, Vorbis, FLAC), AAC in ADTS, FLAC, WAV (ffmpeg's streamed WAV,
whose header does not know its size). Others (MP4/M4A, whose index comes at the end; any unknown type) are not
watched: one log line says so.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import threading
from typing import Any, Callable

from tornado_records.audio import analyses
from tornado_records.audio.programs import ProgramFailed, Programs
from tornado_records.events import EventHub
from tornado_records.storage.store import RecordStore
from tornado_records.uploads.appends import Piece

log = logging.getLogger("tornado_records.audio")

MAX_WATCHES = 16  # live recordings watched at once (each one ffmpeg decoding in real time: 0.2 % of a core)
BLOCK = 64 << 10  # bytes read from a piece's file and written to ffmpeg at a time
LAG_SECONDS = 30.0  # seconds of audio the feed may fall behind the file before it drops what ffmpeg could not take
MAX_BEHIND = 4 << 20  # the same in bytes, while the bytes per second are not known yet
ALIGN = 10080  # dropped bytes come in multiples of this: PCM frames of 1 to 8 channels of 1 to 4 bytes stay whole
KEPT = 1000  # ended watches remembered (their record's version and clock), for appends after a break
STOP_WAIT = 5.0  # seconds a stop waits for the ffmpegs it ended

Key = tuple[str, str]

# media types (without parameters) -> ffmpeg's demuxer for them, read from a pipe
DEMUXERS = {
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3", "audio/x-mpeg": "mp3",
    "audio/ogg": "ogg", "application/ogg": "ogg", "audio/opus": "ogg", "audio/vorbis": "ogg",
    "audio/aac": "aac", "audio/aacp": "aac", "audio/x-aac": "aac",
    "audio/flac": "flac", "audio/x-flac": "flac",
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
}  # fmt: skip
# a raw FLAC stream is read in packets of 1024 bytes, and the last one waits for more: in digital silence (frames of
# a few bytes) that held back seconds of it
RAW_PACKETS = {"flac": ("-raw_packet_size", "64")}
WATCHED = "MP3, Ogg, AAC in ADTS, FLAC and WAV are"

_START = re.compile(r"silence_start: (-?[0-9.]+)")
_END = re.compile(r"silence_end: (-?[0-9.]+) \| silence_duration: (-?[0-9.]+)")
_PROGRESS = re.compile(r"^\w+=")


def demuxer_of(content_type: str) -> str | None:
    """ffmpeg's demuxer for a stream of this type read as it arrives, or None if it cannot be."""
    return DEMUXERS.get(content_type.split(";")[0].strip().lower())


def arguments(demuxer: str, threshold: float, seconds: float) -> list[str]:
    """ffmpeg reading a stream from its standard input: silences of `seconds` below `threshold` dBFS in its log, with
    the seconds decoded (`-progress`) every second."""
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", "-threads", "1",
        "-probesize", "32768", "-f", demuxer, *RAW_PACKETS.get(demuxer, ()), "-i", "pipe:0", "-map", "0:a:0",
        "-af", f"asetpts=N/SR/TB,silencedetect=n={threshold:.3f}dB:d={seconds:.3f}",
        "-progress", "pipe:2", "-stats_period", "1", "-f", "null", "-",
    ]  # fmt: skip


class DeadAir:
    """The dead-air watches of one process's live recordings: what appends.py tells of them (`live`, `grew`, `left`)
    starts, feeds and ends them; `stop()` ends them all (at shutdown)."""

    def __init__(self, store: RecordStore, hub: EventHub, seconds: float, threshold: float) -> None:
        self.store = store
        self.hub = hub
        self.seconds = seconds  # 0: off
        self.threshold = threshold
        self.limit = MAX_WATCHES
        self.programs = Programs()
        self._watches: dict[Key, Watch] = {}
        self._unwatched: set[Key] = set()  # live recordings not watched (said once), until their requests end
        # the records' last watches that ended, with the version they left the record at: a watch that begins on the
        # same version goes on from their clock
        self._ended: collections.OrderedDict[Key, tuple[str, Watch]] = collections.OrderedDict()
        self._warned = False

    # -- what appends.py tells (on the event loop) ----------------------------------------------------------------

    def live(self, piece: Piece, header: int, at: int) -> None:
        if not self.seconds or self.programs.stopped:
            return
        key = (piece.event, piece.start)
        watch = self._watches.get(key)
        if watch is None:
            if key in self._unwatched:
                return
            watch = self._begin(key, piece.content_type)
            if watch is None:
                self._unwatched.add(key)
                return
        try:
            watch.follow(piece, header, at)
        except OSError as exc:
            log.warning("the dead-air watch of event %s at %s cannot read a piece's file: %s", *key, exc)

    def grew(self, piece: Piece) -> None:
        watch = self._watches.get((piece.event, piece.start))
        if watch is not None:
            watch.grew(piece)

    def left(self, piece: Piece, last: bool) -> None:
        key = (piece.event, piece.start)
        watch = self._watches.get(key)
        if watch is not None:
            watch.left(piece)
            if last:
                del self._watches[key]
                watch.finish()
                record = self.store.current(*key, self.store.rconn)
                if record is not None:
                    self._ended[key] = (record.sha256, watch)
                    self._ended.move_to_end(key)
                    while len(self._ended) > KEPT:
                        self._ended.popitem(last=False)
        if last:
            self._unwatched.discard(key)

    async def stop(self) -> None:
        """End every watch and its ffmpeg (with no more events), start no more, and wait a little for them to be
        gone."""
        self.programs.stop()
        watches = list(self._watches.values())
        self._watches.clear()
        for watch in watches:
            watch.stop()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, watch.wait, STOP_WAIT) for watch in watches))

    def _begin(self, key: Key, content_type: str) -> Watch | None:
        """A new watch of the record's live recording, or None (said in the log) if it cannot be watched."""
        demuxer = demuxer_of(content_type)
        if demuxer is None:
            log.warning("the live recording of event %s at %s is not watched for dead air: %s cannot be decoded as it "
                        "arrives (%s; MP4/M4A cannot be: its index comes at its end)",
                        *key, content_type, WATCHED)  # fmt: skip
            return None
        if len(self._watches) >= self.limit:
            log.warning("the live recording of event %s at %s is not watched for dead air: %d are watched already, "
                        "the most at once", *key, self.limit)  # fmt: skip
            return None
        if shutil.which("ffmpeg") is None:
            if not self._warned:
                self._warned = True
                log.warning("ffmpeg not found: live recordings are not watched for dead air until it is installed")
            return None
        try:
            watch = Watch(self, key, demuxer, self._before(key))
        except ProgramFailed as exc:
            log.warning("the live recording of event %s at %s is not watched for dead air: %s", *key, exc)
            return None
        self._watches[key] = watch
        return watch

    def _before(self, key: Key) -> Watch | float:
        """The record's audio before a watch that begins now: the previous watch (whose clock is that), or seconds."""
        record = self.store.current(*key, self.store.rconn)
        ended = self._ended.pop(key, None)
        if record is None:
            return 0.0
        if ended is not None and ended[0] == record.sha256:
            return ended[1]
        duration = analyses.duration_of(self.store.rconn, record)
        if duration is None:
            log.debug("event %s at %s: dead-air times count from this live recording's beginning (the record's "
                      "duration before it is not known yet)", *key)  # fmt: skip
        return duration or 0.0

    def _failed(self, watch: Watch) -> None:
        """A watch's ffmpeg ended while its recording goes on: it is not watched again until its requests end."""
        if self._watches.get(watch.key) is watch:
            del self._watches[watch.key]
            self._unwatched.add(watch.key)


@dataclasses.dataclass(eq=False)
class _Source:
    """A live piece's file, as the feeder reads it: `runs` ([from, to]; to None: up to `available`) in order."""

    fd: int
    runs: list[list[Any]]
    available: int  # bytes in the file
    final: bool = False  # the piece left: `available` is all there is


class Watch:
    """The dead-air watch of one record's live recording: its ffmpeg, the threads that feed it and read its log, and
    the dead air going on (its `at`), if any."""

    def __init__(self, room: DeadAir, key: Key, demuxer: str, before: Watch | float) -> None:
        self.room = room
        self.key = key
        self.hub = room.hub
        self._before = before
        self._loop = asyncio.get_running_loop()
        self._cond = threading.Condition()
        self._sources: collections.deque[_Source] = collections.deque()  # the feeder's, under _cond
        self._of: dict[Piece, _Source] = {}  # the event loop's
        self._ending = False  # the recording's requests ended: what is left is fed, then ffmpeg's input ends
        self._stopped = False
        self._fed_all = False  # the feeder is done (ffmpeg's input closed)
        self.clock = 0.0  # seconds of audio ffmpeg decoded, as of its last report
        self.fed = 0  # bytes written to ffmpeg
        self.dropped = 0.0  # seconds of audio dropped (estimated)
        self.silence: float | None = None  # where the dead air going on began, seconds into the record
        self.over = False  # ffmpeg ended
        self.process = room.programs.start(arguments(demuxer, room.threshold, room.seconds))
        threading.Thread(target=self._feed, name="dead-air-feed", daemon=True).start()
        threading.Thread(target=self._read, name="dead-air-log", daemon=True).start()

    @property
    def data(self) -> dict[str, Any]:
        return {"event": self.key[0], "start": self.key[1]}

    def base(self) -> float:
        """Seconds of the record's audio before this watch's."""
        before = self._before
        return before if isinstance(before, float) else before.reached()

    def reached(self) -> float:
        """Seconds into the record where this watch's audio ends (so far)."""
        return self.base() + self.clock + self.dropped

    # -- the event loop's side ---------------------------------------------------------------------------------

    def follow(self, piece: Piece, header: int, at: int) -> None:
        """Feed the live piece's bytes before `header`, then from `at` on (after those of the pieces before)."""
        fd = os.open(piece.store.joins.path(piece.name), os.O_RDONLY | os.O_CLOEXEC)
        runs = [[0, header], [max(at, header), None]] if header else [[at, None]]
        source = _Source(fd, runs, piece.written)
        with self._cond:
            if self._fed_all:
                os.close(fd)
                return
            self._sources.append(source)
            self._cond.notify()
        self._of[piece] = source

    def grew(self, piece: Piece) -> None:
        source = self._of.get(piece)
        if source is not None:
            with self._cond:
                source.available = piece.written
                self._cond.notify()

    def left(self, piece: Piece) -> None:
        source = self._of.pop(piece, None)
        if source is not None:
            with self._cond:
                source.available = piece.written
                source.final = True
                self._cond.notify()

    def finish(self) -> None:
        """The recording's requests ended: feed what is left, then end ffmpeg's input (it then ends)."""
        self._of.clear()
        with self._cond:
            self._ending = True
            for source in self._sources:
                source.final = True
            self._cond.notify()

    def stop(self) -> None:
        """End at once (ffmpeg is killed by the room's programs), with no more events."""
        self._stopped = True
        self._of.clear()
        with self._cond:
            self._cond.notify()

    def wait(self, seconds: float) -> None:
        """Wait (blocking) for ffmpeg to be gone, `seconds` at most."""
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            pass

    def _began(self, seconds: float) -> None:
        """silencedetect: a silence began `seconds` into this watch's audio, and has lasted --dead-air seconds."""
        if self._stopped or self.silence is not None:
            return
        self.silence = round(self.base() + self.dropped + seconds, 3)
        self.hub.publish("dead-air", {**self.data, "at": self.silence})

    def _ended(self, lasted: float, at_end: bool) -> None:
        """silencedetect: the silence ended after `lasted` seconds (`at_end`: at the end of the audio, not because
        sound came back)."""
        if self._stopped or self.silence is None:
            return
        over = {**self.data, "at": self.silence, "lasted": round(max(0.0, lasted), 3)}
        self.silence = None
        self.hub.publish("dead-air-over", {**over, "ended": True} if at_end else over)

    def _over(self, returncode: int, tail: list[str]) -> None:
        """ffmpeg ended (its log read to its end)."""
        self.over = True
        self._before = self.base()  # no watch before it is needed any more
        if self._stopped:
            return
        if self.silence is not None:  # the recording ended while silent, and ffmpeg did not say so
            self._ended(self.reached() - self.silence, True)
        if not self._ending:
            why = f"ffmpeg failed: {tail[-1][:300]}" if returncode and tail else f"ffmpeg ended ({returncode})"
            log.warning("the live recording of event %s at %s is no longer watched for dead air: %s", *self.key, why)
            self.room._failed(self)

    def _call(self, function: Callable[..., None], *arguments: Any) -> None:
        """Call on the event loop (from a thread)."""
        try:
            self._loop.call_soon_threadsafe(function, *arguments)
        except RuntimeError:
            pass  # the loop is closed: the service is gone

    # -- the threads' side --------------------------------------------------------------------------------------

    def _feed(self) -> None:
        """The feeder: the live pieces' bytes, in order, as they reach the files, to ffmpeg's input."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while True:
                with self._cond:
                    while (work := self._next()) is None and not self._stopped:
                        if self._ending and not self._sources:
                            return
                        self._cond.wait()
                    if self._stopped:
                        return
                    source, start, upto = work
                data = os.pread(source.fd, min(BLOCK, upto - start), start)
                if not data:  # the file is shorter than it was said to be: its bytes are gone
                    with self._cond:
                        source.runs[0][0] = upto
                    continue
                view = memoryview(data)
                while view:
                    view = view[stdin.write(view) :]
                self.fed += len(data)
                with self._cond:
                    source.runs[0][0] += len(data)
        except OSError:
            pass  # ffmpeg is gone (a broken pipe), or the file cannot be read: its end says so
        finally:
            with self._cond:
                self._fed_all = True
                for source in self._sources:
                    os.close(source.fd)
                self._sources.clear()
            try:
                stdin.close()
            except OSError:
                pass

    def _next(self) -> tuple[_Source, int, int] | None:
        """The next bytes to feed (source, from, to), finished sources let go of; None if none yet (with _cond)."""
        while self._sources:
            source = self._sources[0]
            run = source.runs[0]
            upto = source.available if run[1] is None else min(run[1], source.available)
            if run[0] < upto:
                if run[1] is None:
                    self._bound(run, upto)
                return source, run[0], upto
            if source.final or (run[1] is not None and run[0] >= run[1]):
                source.runs.pop(0)
                if not source.runs:
                    os.close(self._sources.popleft().fd)
                continue
            return None
        return None

    def _bound(self, run: list[Any], upto: int) -> None:
        """Drop what ffmpeg could not take, if the feed is too far behind the file (with _cond)."""
        rate = self.fed / self.clock if self.clock >= 1.0 else None  # bytes a second
        limit = MAX_BEHIND if rate is None else max(2 * BLOCK, LAG_SECONDS * rate)
        behind = upto - run[0]
        if behind <= limit:
            return
        dropped = (behind - BLOCK) // ALIGN * ALIGN
        run[0] += dropped
        self.dropped += 0.0 if rate is None else dropped / rate
        log.warning("the dead-air watch of event %s at %s fell %d bytes behind the live recording (ffmpeg could not "
                    "keep up): %d bytes dropped, not watched", *self.key, behind, dropped)  # fmt: skip

    def _read(self) -> None:
        """The reader of ffmpeg's log: silences and the seconds decoded; then its end."""
        stderr = self.process.stderr
        assert stderr is not None
        tail: collections.deque[str] = collections.deque(maxlen=5)
        final = False  # ffmpeg's last report came: a silence it ends now ends with the audio
        for raw in stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("out_time_us="):
                if line[12:].isdigit():
                    self.clock = int(line[12:]) / 1e6
            elif line == "progress=end":
                final = True
            elif match := _START.search(line):
                self._call(self._began, float(match.group(1)))
            elif match := _END.search(line):
                self._call(self._ended, float(match.group(2)), final)
            elif line and not _PROGRESS.match(line):
                tail.append(line)
        self.room.programs.ended(self.process)
        self._call(self._over, self.process.returncode, list(tail))
