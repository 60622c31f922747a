"""The starts of each event's records, for a listing's count and page.

One process alone on its index keeps them in memory (StartIndex: a deep page costs no scan); processes sharing a
PostgreSQL index ask it each time (SqlStarts: another process may have added a record since).
"""

from __future__ import annotations

import bisect
import collections
import threading

from tornado_records.sqldb import Database


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
            starts = self._starts.get(event, [])
            low = 0 if after is None else bisect.bisect_right(starts, after)
            high = len(starts) if before is None else bisect.bisect_left(starts, before)
            count = max(0, high - low)
            if descending:
                last = max(low, high - offset)
                return count, starts[max(low, last - limit) : last]
            first = min(high, low + offset)
            return count, starts[first : min(high, first + limit)]


class SqlStarts:
    """The same answers as StartIndex, from the index itself: its primary key on (event, start) serves them, the
    catalogue counts an event's records, and a deep page is read from the nearer end of the event's starts (a page of
    the middle of a long listing still walks the key to it)."""

    def __init__(self, index: Database) -> None:
        self._index = index

    def add(self, event: str, start: str) -> None:
        """Nothing to do: the index has it."""

    def remove(self, event: str, start: str) -> None:
        """Nothing to do: the index has it."""

    def page(
        self, event: str, after: str | None, before: str | None, limit: int, offset: int, descending: bool
    ) -> tuple[int, list[str]]:
        where, parameters = "event = ?", [event]
        if after is not None:
            where, parameters = where + " AND start > ?", [*parameters, after]
        if before is not None:
            where, parameters = where + " AND start < ?", [*parameters, before]
        if after is None and before is None:
            row = self._index.execute("SELECT records FROM catalogue WHERE event = ?", (event,)).fetchone()
            count = 0 if row is None else row[0]
        else:
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
