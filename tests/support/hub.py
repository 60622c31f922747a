"""The far end of an EventHub's subscriber, for tests of the hub without HTTP."""

from __future__ import annotations

import asyncio
import json
import re

from tornado_records.events import KEEPALIVE_LINE, EventHub


def parse(wire: bytes) -> tuple[int, dict]:
    """The id and the JSON of one event as sent on the wire (exactly an id line, a data line, a blank line)."""
    match = re.fullmatch(rb"id: (\d+)\ndata: (.+)\n\n", wire)
    assert match, wire
    return int(match.group(1)), json.loads(match.group(2))


class Client:
    """The far end of a subscriber in these tests: it keeps what the hub sends it. A fast one takes each event at
    once, as a socket with room does (`write`); a slow one takes nothing at once, and leaves each write in flight
    until `catch_up()`."""

    def __init__(self, hub: EventHub, last_id: int | None = None, slow: bool = False) -> None:
        self.received: list[bytes] = []
        self.writes = 0
        self.slow = slow
        self.pending: list[asyncio.Future] = []
        self.dropped = False
        self.subscriber = hub.subscribe(self.send, last_id, on_drop=self.drop, write=None if slow else self.write)
        self.subscriber.start()

    def write(self, data: bytes) -> int:
        self.received.append(data)
        self.writes += 1
        return len(data)

    def send(self, batch: list[bytes]) -> asyncio.Future:
        self.received.extend(batch)
        self.writes += 1
        future = asyncio.get_running_loop().create_future()
        if self.slow:
            self.pending.append(future)
        else:
            future.set_result(None)
        return future

    def catch_up(self) -> None:
        """Every write in flight has now been sent."""
        while self.pending:
            self.pending.pop(0).set_result(None)

    def drop(self) -> None:
        self.dropped = True

    def events(self) -> list[tuple[int, dict]]:
        return [parse(wire) for wire in self.received if wire != KEEPALIVE_LINE]

    def ids(self) -> list[int]:
        return [event_id for event_id, _ in self.events()]
