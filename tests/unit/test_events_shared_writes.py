"""The EventHub's writes of one event shared among threads (many subscribers): each subscriber still gets every
event once, in order and whole, through real sockets; what a full socket does not take goes on behind, in order; a
subscriber too far behind is still dropped, and one whose client is gone ended."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Callable, Iterator

import pytest

from support.hub import parse
from tornado_records.events import EventHub, Subscriber


@contextlib.contextmanager
def socket_pairs(count: int, buffer: int | None = None) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """`count` connected pairs (the hub's end, non-blocking; the client's end), with small buffers if `buffer`."""
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        for ours, theirs in pairs:
            ours.setblocking(False)
            if buffer is not None:
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
                theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        yield pairs
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the client's end holds now."""
    sock.setblocking(False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            data += chunk
    return data


def ids_of(stream: bytes) -> list[int]:
    """The ids of the events in a stream of whole events."""
    assert stream.endswith(b"\n\n"), "an event was cut short"
    return [parse(wire + b"\n\n")[0] for wire in stream[:-2].split(b"\n\n")]


def held(sock: socket.socket, threads: set[int]) -> Callable[[bytes], int]:
    """The socket's `send`, noting the thread that called it."""

    def write(data: bytes) -> int:
        threads.add(threading.get_ident())
        return sock.send(data)

    return write


def subscribe(hub: EventHub, write: Callable[[bytes], int], sent: list[bytes], futures: list[asyncio.Future],
              dropped: list[Subscriber] | None = None) -> Subscriber:  # fmt: skip
    """A started subscriber writing through `write`; what its socket does not take goes to `sent`, each batch's
    future (left pending, as a stream still sending) to `futures`."""

    def send(batch: list[bytes]) -> asyncio.Future:
        sent.extend(batch)
        futures.append(asyncio.get_running_loop().create_future())
        return futures[-1]

    subscriber = hub.subscribe(send, write=write, on_drop=lambda: dropped is not None and dropped.append(subscriber))
    subscriber.start()
    return subscriber


@pytest.mark.gen_test
async def test_many_subscribers_across_threads_each_get_every_event_once_in_order_and_whole() -> None:
    hub = EventHub(first_id=1, send_threads=3, split_at=10)
    threads: set[int] = set()
    with socket_pairs(60) as pairs:
        for ours, _ in pairs:
            subscribe(hub, held(ours, threads), [], [])
        for n in range(30):
            hub.publish("test", {"n": n, "pad": "x" * 2000})
        assert len(threads) >= 2  # the loop's thread and others wrote
        for _, theirs in pairs:
            assert ids_of(read_all(theirs)) == list(range(1, 31))


@pytest.mark.gen_test
async def test_what_a_full_socket_does_not_take_goes_on_behind_in_order_while_the_others_keep_up() -> None:
    hub = EventHub(first_id=1, send_threads=2, split_at=2)
    threads: set[int] = set()
    sent: list[bytes] = []
    futures: list[asyncio.Future] = []
    with socket_pairs(1, buffer=4096) as [(full, full_client)], socket_pairs(20) as pairs:
        slow = subscribe(hub, held(full, threads), sent, futures)
        for ours, _ in pairs:
            subscribe(hub, held(ours, threads), [], [])
        for n in range(20):
            hub.publish("test", {"n": n, "pad": "x" * 3000})
        assert len(futures) == 1 and slow.queue  # the rest of one event in flight, the later ones queued behind it
        while futures:
            futures.pop().set_result(None)
            await asyncio.sleep(0)
        assert ids_of(read_all(full_client) + b"".join(sent)) == list(range(1, 21))
        assert slow.unsent == 0 and not slow.closed and len(threads) == 2
        for _, theirs in pairs:
            assert ids_of(read_all(theirs)) == list(range(1, 21))


@pytest.mark.gen_test
async def test_a_subscriber_too_far_behind_is_dropped_and_one_whose_client_is_gone_ended() -> None:
    hub = EventHub(first_id=1, send_threads=2, split_at=2, max_unsent=50_000)
    dropped: list[Subscriber] = []
    with socket_pairs(1, buffer=4096) as [(full, _)], socket_pairs(1) as [(gone, gone_client)], socket_pairs(10) as pairs:
        slow = subscribe(hub, full.send, [], [], dropped)
        ended = subscribe(hub, gone.send, [], [], dropped)
        gone_client.close()
        for ours, _ in pairs:
            subscribe(hub, ours.send, [], [], dropped)
        for n in range(30):
            hub.publish("test", {"n": n, "pad": "x" * 3000})
        assert dropped == [slow] and slow not in hub.subscribers
        assert ended.closed and ended.done.done()
        for _, theirs in pairs:
            assert ids_of(read_all(theirs)) == list(range(1, 31))
