"""The spool's waits: every one that waits is woken, however many wait at once.

An append request's end drains its spool while a periodic join may be draining it too (and a receiver held back by
the lag may be waiting as well). A spool that kept one waiter lost the other: the join never ended, the request's
answer never came, and the recorder (curl under Liquidsoap's output.external) hung. The writer is held in `room`, a
real hook of the spool, so that both waits begin while it writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from tornado_records.uploads.spool import KICK_BYTES, LAG_BYTES, Spool


def held_spool(path: Path) -> tuple[Spool, threading.Event, threading.Event]:
    """A spool on `path` whose writer, at its first turn, waits for `release` (after setting `entered`)."""
    entered, release = threading.Event(), threading.Event()

    def room() -> int:
        entered.set()
        release.wait(10)
        return 1 << 40

    return Spool(open(path, "wb", buffering=0), [hashlib.sha256()], room=room), entered, release


def test_two_drains_at_once_both_end(tmp_path: Path) -> None:
    async def main() -> None:
        spool, entered, release = held_spool(tmp_path / "file")
        chunk = b"x" * KICK_BYTES
        assert spool.put(chunk) is None
        assert await asyncio.to_thread(entered.wait, 5)
        spool.put(b"y" * 1000)  # waits behind the turn in progress
        first = asyncio.ensure_future(spool.drain())
        second = asyncio.ensure_future(spool.drain())
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert spool.written == spool.received == KICK_BYTES + 1000
        spool.close()

    asyncio.run(main())
    assert (tmp_path / "file").read_bytes() == b"x" * KICK_BYTES + b"y" * 1000


def test_a_lagging_receiver_and_a_drain_both_end(tmp_path: Path) -> None:
    async def main() -> None:
        spool, entered, release = held_spool(tmp_path / "file")
        assert spool.put(b"a" * KICK_BYTES) is None
        assert await asyncio.to_thread(entered.wait, 5)
        lagging = spool.put(b"b" * LAG_BYTES)  # past the lag: the receiver must wait
        assert lagging is not None
        drained = asyncio.ensure_future(spool.drain())
        await asyncio.sleep(0.05)
        assert not drained.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(lagging, drained), 5)
        assert spool.written == KICK_BYTES + LAG_BYTES
        spool.close()

    asyncio.run(main())
    assert (tmp_path / "file").stat().st_size == KICK_BYTES + LAG_BYTES


def test_a_held_spool_writes_nothing_until_released_and_bounds_its_lag(tmp_path: Path) -> None:
    """An append piece's spool is held until its row is in the index: no byte may reach a file that no row names
    (a start after a crash would remove it as an orphan)."""
    path = tmp_path / "piece"

    async def main() -> None:
        spool = Spool(open(path, "wb", buffering=0), held=True)
        assert spool.put(b"a" * KICK_BYTES) is None  # past the kick, and past the kick's delay: still held
        await asyncio.sleep(0.05)
        assert path.stat().st_size == 0 and spool.written == 0
        lagging = spool.put(b"b" * LAG_BYTES)  # past the lag: the receiver waits, for the release
        draining = asyncio.ensure_future(spool.drain())
        await asyncio.sleep(0.05)
        assert lagging is not None and not lagging.done() and not draining.done() and path.stat().st_size == 0
        spool.release()
        await asyncio.wait_for(asyncio.gather(lagging, draining), 5)
        assert spool.written == KICK_BYTES + LAG_BYTES
        spool.close()

    asyncio.run(main())
    assert path.read_bytes() == b"a" * KICK_BYTES + b"b" * LAG_BYTES


def test_a_seal_begun_while_the_writer_writes_ends_with_every_byte_hashed_and_the_file_closed(tmp_path: Path) -> None:
    """A plain upload's end (replace.py): the writer's last turn makes the file durable and closes it; the seal
    ends only after the bytes still waiting behind the turn in progress are in the file, and the spool then takes
    no more."""
    path = tmp_path / "file"
    digest = hashlib.sha256()

    async def main() -> None:
        entered, release = threading.Event(), threading.Event()

        def room() -> int:
            entered.set()
            release.wait(10)
            return 1 << 40

        file = open(path, "wb", buffering=0)
        spool = Spool(file, [digest], room=room)
        assert spool.put(b"x" * KICK_BYTES) is None
        assert await asyncio.to_thread(entered.wait, 5)
        spool.put(b"y" * 1000)  # waits behind the turn in progress
        sealed = asyncio.ensure_future(spool.seal())
        await asyncio.sleep(0.05)
        assert not sealed.done() and not file.closed
        release.set()
        await asyncio.wait_for(sealed, 5)
        assert file.closed
        assert spool.written == spool.received == KICK_BYTES + 1000
        with pytest.raises(ValueError):  # a sealed spool takes no more bytes
            spool.put(b"z")
        spool.close()  # safe after a seal

    asyncio.run(main())
    content = b"x" * KICK_BYTES + b"y" * 1000
    assert path.read_bytes() == content
    assert digest.hexdigest() == hashlib.sha256(content).hexdigest()
