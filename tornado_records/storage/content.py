"""Where the content of record versions is kept: the interface every content engine implements, and the engines by
their URL's scheme. The store (store.py) and the joins (joins.py) talk to an engine only through `ContentStore`.

Engines: files.py (blobs/ in the data directory, the embedded default) and s3.py (`--blobs s3://bucket/prefix`). To
add one: a module with a class implementing `ContentStore` (and a `Receiver` for uploads), a scheme in `open_content`,
and the store contract tests (tests/http/test_store_contract.py) run on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from tornado_records.storage.model import Reader, Segment


class Receiver(Protocol):
    """An upload's file in the data directory's tmp/, on its way to be the blob `name`."""

    name: str
    pending: bool  # it holds something of the engine's that `abort` must give back (an unfinished multipart upload)
    # the file in tmp/ becomes the blob as it is (renamed by `place`): `finish` is only its fsync, which an upload whose
    # writer made the file durable itself (spool.py, seal) does not call, and once placed nothing is left in tmp/
    keeps_file: bool

    def written(self, size: int) -> None:
        """The file has grown to `size` bytes (on the event loop; may send what is whole in a thread)."""

    async def finish(self, size: int) -> None:
        """The file is whole (`size` bytes): keep all of it durably (fsync, or the object completed)."""

    def place(self, modified: int) -> None:
        """In the commit's transaction, once the precondition held: the blob exists under its name, durably once
        the content store's `sync_placed` has run (blocks)."""

    def abort(self) -> None:
        """Keep nothing of it (blocks)."""


class ContentStore(Protocol):
    """Blobs: immutable contents named at random, read as runs (`Segment`s) of them."""

    def open(self, segments: list[Segment], whole: bool) -> Reader:
        """The runs, open for reading. FileNotFoundError if a blob is missing; BlobsError (saying which and how) if
        one is shorter than its runs or, where `whole`, not the size of its one run."""

    def receiver(self, path: Path, name: str) -> Receiver:
        """For an upload being written to `path`: what makes it the blob `name`."""

    def new_name(self, owner: int) -> str:
        """A new blob's name, for the process `owner` (0: one process alone)."""

    def whole_file(self, segment: Segment) -> str | None:
        """The file in blobs/ that holds exactly this run, for sendfile or nginx; None where there is none."""

    def join_run(
        self, path: Path, piece: str, at: int, upto: int, segments: list[Segment], modified: int
    ) -> tuple[list[Segment], str | None]:
        """The runs of a version that adds the bytes at..upto of the append piece `piece`'s file `path` to one made
        of `segments`, and the name of a blob made for it (to remove if the version is not made), if any. Blocks."""

    def merge_runs(self, path: Path, piece: str, runs: list[Segment]) -> Segment | None:
        """One run holding the piece's `runs`, which follow on in its file (None: nothing to merge). Blocks."""

    def piece_done(self, path: Path, piece: str, named: bool) -> None:
        """An append piece ended and all it brought is in its record (whose current version names its file, or
        not): give back what only the piece needed."""

    def sync_placed(self) -> None:
        """Make the blobs that receivers placed so far durable under their names (one fsync of a directory for all
        of them, or nothing), before the commit's transaction ends. Blocks."""

    def remove(self, name: str) -> None:
        """Remove a blob (a reader that holds it goes on reading)."""

    def remove_all(self, names: list[str]) -> None: ...

    unit: str  # what its blobs are called, for people: files, objects

    def describe(self, name: str) -> str:
        """The blob as an operator finds it: blobs/NAME, s3://bucket/prefix/NAME."""

    def stat(self, name: str) -> tuple[int, float] | None:
        """The blob's size and last change (Unix time), or None if there is none."""

    def names(self, older_than: float | None = None) -> list[str]:
        """Every blob's name (those last changed before the Unix time `older_than`, if given)."""

    def sweep(self, known: set[str], older_than: float | None, ended: Callable[[int], bool]) -> None:
        """At a start: remove what is not `known` and older than `older_than`, and what processes that `ended` left
        unfinished, beyond the data directory (which the start sweeps itself)."""

    def abort_unfinished(self, ended: Callable[[int], bool]) -> int:
        """Give back what uploads of processes that `ended` left unfinished; how many."""

    def close(self) -> None: ...


def open_content(url: str, data_dir: Path, endpoint: str | None = None) -> ContentStore:
    """The content engine `url` names: empty for the data directory's blobs/, or s3://bucket/prefix (checked: a
    bucket that does not answer stops the start with a clear error)."""
    if url.startswith("s3://"):
        from tornado_records.storage.s3 import ObjectBlobs  # botocore only where it is used

        store = ObjectBlobs(url, endpoint)
        store.check()
        return store
    from tornado_records.storage.files import FileBlobs

    return FileBlobs(data_dir / "blobs")
