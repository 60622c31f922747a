"""The starts of each event's records, for a listing's count and page.

One process alone on its index keeps them in memory (StartIndex: a deep page costs no scan). Processes sharing an
index ask it (SqlStarts): a short listing with one indexed query; a long one from a copy of the event's
starts in memory, read again whenever another process, or this one, has created or deleted a record of the event
since (the catalogue's `starts` column changes then, in the change's transaction).
"""

from __future__ import annotations

import bisect
import collections
import threading

from tornado_records.storage.sqldb import Database


class StartIndex:
    """The starts of each event's records, sorted, in memory: a listing's count and its page at any offset are found
    by bisection, where SQLite would scan every row before them. Changed by the writer thread, read by the event
    loop; a lock keeps each change and each read whole."""

    def __init__(self, index: Database) -> None:
        self._starts: dict[str, list[str]] = collections.defaultdict(list)
        for event, start in index.execute("SELECT event, start FROM records"):
            self._starts[event].append(start)
        for starts in self._starts.values():
            starts.sort()  # canonical isoformat strings sort as the times they name
        self._lock = threading.Lock()

    def add(self, event: str, start: str) -> None:
        with self._lock:
            starts = self._starts[event]
            at = bisect.bisect_left(starts, start)
            if at == len(starts) or starts[at] != start:
                starts.insert(at, start)

    def remove(self, event: str, start: str) -> None:
        with self._lock:
            starts = self._starts.get(event, [])
            at = bisect.bisect_left(starts, start)
            if at < len(starts) and starts[at] == start:
                del starts[at]
            if not starts:
                self._starts.pop(event, None)

    def page(
        self, event: str, after: str | None, before: str | None, limit: int, offset: int, descending: bool
    ) -> tuple[int, list[str]]:
        """How many starts lie strictly between after and before, and those of the page asked for."""
        with self._lock:
            return page_of(self._starts.get(event, []), after, before, limit, offset, descending)


def page_of(
    starts: list[str], after: str | None, before: str | None, limit: int, offset: int, descending: bool
) -> tuple[int, list[str]]:
    """How many of the sorted `starts` lie strictly between after and before, and those of the page asked for."""
    low = 0 if after is None else bisect.bisect_right(starts, after)
    high = len(starts) if before is None else bisect.bisect_left(starts, before)
    count = max(0, high - low)
    if descending:
        last = max(low, high - offset)
        return count, starts[max(low, last - limit) : last]
    first = min(high, low + offset)
    return count, starts[first : min(high, first + limit)]


class SqlStarts:
    """The same answers as StartIndex, from the index itself. A page of an event of up to KEPT_OVER records, or
    within KEPT_OVER of either end of a longer one, is one query on the primary key (event, start), read from the
    nearer end; the count is the catalogue's. Any other page of a longer event (deep in its middle, or between
    bounds) comes from its starts kept in memory while their version in the catalogue stays the same, and read anew
    when it changed (blocks for a moment: run it in a thread)."""

    KEPT_OVER = 1000  # records
    KEPT_EVENTS = 16  # events whose starts are kept (the most recently listed)

    def __init__(self, index: Database) -> None:
        self._index = index
        self._kept: collections.OrderedDict[str, tuple[int, list[str]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, event: str, start: str) -> None:
        """Nothing to do: the index has it, and the catalogue's version of the event's starts changed with it."""

    def remove(self, event: str, start: str) -> None:
        """Nothing to do: the index has it, and the catalogue's version of the event's starts changed with it."""

    def page(
        self, event: str, after: str | None, before: str | None, limit: int, offset: int, descending: bool
    ) -> tuple[int, list[str]]:
        row = self._index.execute("SELECT records, starts FROM catalogue WHERE event = ?", (event,)).fetchone()
        if row is None:
            return 0, []  # the event has no records (the catalogue changes in each change's transaction)
        count, version = row
        bounded = after is not None or before is not None
        if count > self.KEPT_OVER and (bounded or self.KEPT_OVER < offset < count - self.KEPT_OVER):
            return page_of(self._starts(event, version), after, before, limit, offset, descending)
        where, parameters = "event = ?", [event]
        if after is not None:
            where, parameters = where + " AND start > ?", [*parameters, after]
        if before is not None:
            where, parameters = where + " AND start < ?", [*parameters, before]
        if bounded:
            (count,) = self._index.execute(f"SELECT count(*) FROM records WHERE {where}", parameters).fetchone()
        flip = offset > (count - limit) // 2  # the page is nearer the other end: read it from there
        if flip:
            offset, limit = max(0, count - offset - limit), max(0, min(limit, count - offset))
            descending = not descending
        order = "DESC" if descending else "ASC"
        rows = self._index.execute(
            f"SELECT start FROM records WHERE {where} ORDER BY start {order} LIMIT ? OFFSET ?",
            [*parameters, limit, offset],
        )
        starts = [start for (start,) in rows]
        return count, starts[::-1] if flip else starts

    def _starts(self, event: str, version: int) -> list[str]:
        """The event's starts, sorted, as of `version` of them or later (read after the version: a change committed
        in between makes the next look read them again, never keeps an older list under a newer version)."""
        with self._lock:
            kept = self._kept.get(event)
        if kept is None or kept[0] != version:
            # one value rather than a row each: a third of the time for 100,000 (starts hold no space)
            joined = self._index.joined_text("start")
            sql = f"SELECT {joined} FROM (SELECT start FROM records WHERE event = ? ORDER BY start) AS s"
            (starts,) = self._index.execute(sql, (event,)).fetchone()
            kept = (version, sorted(starts.split(" ")) if starts else [])  # SQLite's group_concat keeps no order
        with self._lock:
            self._kept[event] = kept
            self._kept.move_to_end(event)
            while len(self._kept) > self.KEPT_EVENTS:
                self._kept.popitem(last=False)
        return kept[1]
