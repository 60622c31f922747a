"""The external programs the audio work runs (ffprobe, ffmpeg): started from an argument list (never a shell), at
the lowest CPU priority so that uploads and downloads keep their speed, each with a time bound; `stop()` ends every
one still running (a shutdown, or the client that asked went away). `run` blocks: call it in a thread; `start` begins
one that runs for as long as it is fed (the live dead-air watch's ffmpeg), bounded by its caller. A `Stopper` ends
the program of one `run` from another thread (the client that asked for a clip went away)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from typing import IO, BinaryIO, Callable

NICENESS = 19  # the lowest priority: the service's requests always come first
NEEDED = ("ffmpeg", "ffprobe")


class ProgramFailed(Exception):
    """A program failed (`returncode` > 0), was killed (< 0), outlasted its bound or could not start (None)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def missing() -> list[str]:
    """The programs the audio work needs that are not on the PATH."""
    return [name for name in NEEDED if shutil.which(name) is None]


def _text(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


class Stopper:
    """Ends the program of one `run` when `stop()` is called, from any thread: at once if it runs, or as soon as it
    starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.stopped = False

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            if self._process is not None:
                self._process.kill()

    def started(self, process: subprocess.Popen) -> None:
        """The program has started (called by `Programs.run`)."""
        with self._lock:
            self._process = process
            if self.stopped:
                process.kill()


class Feeder(threading.Thread):
    """Writes what `feed` writes into a pipe's end, then closes it; a program that stops reading ends the feed.
    `error`: why the feed failed, if it did."""

    def __init__(self, pipe: int, feed: Callable[[BinaryIO], None]) -> None:
        super().__init__(name="records-feed", daemon=True)
        self.pipe = pipe
        self.feed = feed
        self.error: Exception | None = None

    def run(self) -> None:
        with open(self.pipe, "wb") as writer:
            try:
                self.feed(writer)
            except BrokenPipeError:
                pass  # the program ended (it had what it needed, or was killed)
            except Exception as exc:  # noqa: BLE001 (the content could not be read: the run fails with it)
                self.error = exc


class Programs:
    """The programs running for the service: each bounded in time, all ended by `stop()`; at `niceness` (the lowest
    CPU priority unless told)."""

    def __init__(self, niceness: int = NICENESS) -> None:
        self.niceness = niceness
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.stopped = False

    def run(
        self,
        arguments: list[str],
        seconds: float,
        output: bool = False,
        fds: tuple[int, ...] = (),
        stopper: Stopper | None = None,
        feed: Callable[[BinaryIO], None] | None = None,
        environment: dict[str, str] | None = None,
    ) -> str:
        """Run a program to its end within `seconds`, with the file descriptors `fds` open in it, its standard input
        what `feed` writes (from a thread of its own; else nothing), and `environment` (else the service's); its
        standard output if `output`, else its standard error (ffmpeg's log), as text. ProgramFailed if it fails, is
        ended (by `stop()`, or by `stopper`) or outlasts the bound. What it writes goes to a nameless file, read once at
        its end: cheaper for the service than a pipe read as it comes (an hour of audio logs tens of megabytes)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            reading, writing = os.pipe() if feed is not None else (subprocess.DEVNULL, -1)
            with self._lock:
                if self.stopped:
                    _close(reading, writing)
                    raise ProgramFailed(f"{arguments[0]} was not started: the service is stopping")
                try:
                    process = subprocess.Popen(
                        arguments, stdin=reading, stdout=out if output else subprocess.DEVNULL, stderr=err,
                        pass_fds=fds, env=environment,
                    )  # fmt: skip
                except OSError as exc:
                    _close(reading, writing)
                    raise ProgramFailed(f"{arguments[0]} could not start: {exc.strerror}") from None
                self._running.add(process)
            feeder = None
            if feed is not None:
                os.close(reading)
                feeder = Feeder(writing, feed)
                feeder.start()
            if stopper is not None:
                stopper.started(process)
            try:
                try:
                    os.setpriority(os.PRIO_PROCESS, process.pid, self.niceness)
                except OSError:
                    pass  # it ended already
                try:
                    process.wait(timeout=seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise ProgramFailed(f"{arguments[0]} took longer than {seconds:.0f} s and was stopped") from None
            finally:
                with self._lock:
                    self._running.discard(process)
                if feeder is not None:
                    feeder.join()  # its next write fails (the program's end of the pipe is closed), or its reading ends
            if stopper is not None and stopper.stopped:
                raise ProgramFailed(f"{arguments[0]} was stopped", process.returncode)
            if feeder is not None and feeder.error is not None:
                raise ProgramFailed(f"{arguments[0]}'s input could not be read: {feeder.error}")
            log = _text(err)
            if process.returncode != 0:
                last = log.strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
                raise ProgramFailed(f"{arguments[0]} failed: {last[0][:300]}", process.returncode)
            return _text(out) if output else log

    def start(self, arguments: list[str]) -> subprocess.Popen:
        """Start a program fed through its standard input (a pipe, unbuffered), its standard error (ffmpeg's log, as
        bytes) a pipe for the caller to read to its end, and then to `ended(process)`. ProgramFailed if it cannot
        start, or if the service is stopping."""
        with self._lock:
            if self.stopped:
                raise ProgramFailed(f"{arguments[0]} was not started: the service is stopping")
            try:
                process = subprocess.Popen(
                    arguments, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0
                )
            except OSError as exc:
                raise ProgramFailed(f"{arguments[0]} could not start: {exc.strerror}") from None
            self._running.add(process)
        try:
            os.setpriority(os.PRIO_PROCESS, process.pid, self.niceness)
        except OSError:
            pass  # it ended already
        return process

    def ended(self, process: subprocess.Popen) -> None:
        """A program from `start` is over (its log read to the end): wait for it, and forget it."""
        process.wait()
        with self._lock:
            self._running.discard(process)

    def stop(self) -> None:
        """End every program still running, and start no more."""
        with self._lock:
            self.stopped = True
            for process in self._running:
                process.kill()


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)
