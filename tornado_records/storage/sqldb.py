"""The index's database: SQLite (a file in the data directory, the default) or PostgreSQL (`--index postgresql://...`),
behind one small connection class, so that the store, the catalogue and the event log write their SQL once.

The SQL they write is the common part of both dialects: `?` placeholders (made `%s` for PostgreSQL), upserts with
`ON CONFLICT`, and BIGINT columns. Where the two differ, `Database` says how (`like`, `greatest`, `lock_record`,
`schema`). Several processes may share either (`SharedSqlite` for SQLite, with `--processes N`). Knows no HTTP.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import re
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tornado_records.redact import mask

try:  # only for --index postgresql://... (pip install 'tornado-records[scale]')
    import psycopg
    import psycopg.errors
    import psycopg.pq
except ImportError:  # pragma: no cover (checked when such an index is asked for)
    psycopg = None

SQLITE_FILE = "records.sqlite3"  # the default index, in the data directory
LOCKS_FILE = "records.locks"  # beside a SQLite index shared by processes: the byte-range locks of their names
BUSY_WAIT = 60.0  # seconds a statement on a shared SQLite index waits for another process's write to end
EVENTS_POLL = 0.01  # seconds between looks for other processes' events in a shared SQLite index


class IndexUnavailable(Exception):
    """The index's database cannot be reached (a PostgreSQL server restarting, a network away): try again later.
    Its message, for the log, names the database; `public`, for a client, does not."""

    public = "The index (PostgreSQL) cannot be reached: try again shortly"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"The index {name} cannot be reached ({reason}): try again shortly")


class Database:
    """One connection to the index. `execute` runs one statement outside or inside `transaction()`; rows are
    tuples."""

    dialect = "sqlite"
    shared = False  # other processes may use the same index at the same time
    writes_in_turn = True  # a transaction holds the whole index (BEGIN IMMEDIATE): it must not wait for another's
    like = "LIKE"  # the operator matching a pattern whatever the case of its ASCII letters
    greatest = "max"  # the larger of two values (a scalar function)

    def __init__(self, path: Path, *, read_only: bool = False, timeout: float = 5.0) -> None:
        self.name = str(path)
        if read_only:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=timeout)
        else:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor (fetchone, fetchall, iteration)."""
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def schema(self, sql: str) -> None:
        """Run `;`-separated CREATE statements, written with {blob} and {without_rowid} for what differs."""
        self._conn.executescript(sql.format(blob="BLOB", without_rowid="WITHOUT ROWID"))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction that holds the right to write from its start (SQLite: BEGIN IMMEDIATE),
        committed at its end, rolled back if it raises. What `before_begin` holds is called first."""
        for wait in self.before_begin:
            wait()
        self.execute(self._begin)
        self._in_transaction = True
        try:
            yield
            self.execute("COMMIT")
        except BaseException:
            # COMMIT itself may fail (a full disk), leaving the transaction open; a connection lost took it along
            if self._in_transaction and self.in_transaction:
                self.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False

    def pipeline(self) -> contextlib.AbstractContextManager[None]:
        """Inside a transaction: the block's statements go to the database without waiting for each one's answer,
        until a row is asked for or the block ends (PostgreSQL's pipeline mode: one round trip for many statements;
        an error of one is raised there, and the transaction is then rolled back). SQLite, in the process, has no
        round trips to save."""
        return contextlib.nullcontext()

    _begin = "BEGIN IMMEDIATE"
    before_begin: tuple | list = ()  # what a transaction waits for before it begins (see app.py)
    _in_transaction = False  # inside transaction() (PostgreSQL: cleared when the connection is lost)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def lock_record(self, event: str, start: str) -> None:
        """Inside a transaction: hold the record (event, start) until its end, against writers in other processes
        (SQLite: BEGIN IMMEDIATE already holds every record)."""

    def lock_key(self, key: int) -> None:
        """Inside a transaction: hold the lock `key` until its end (SQLite: BEGIN IMMEDIATE already holds it)."""

    def lock_tables(self, *tables: str) -> None:
        """Inside a transaction: keep other processes from writing `tables` until its end (SQLite: BEGIN IMMEDIATE
        already does)."""

    def listen(self, channel: str) -> None:
        """Be told of `notify(channel)` of every process (`notifies`); SQLite has no such thing: see SharedSqlite."""

    def notify(self, channel: str) -> None:
        """Tell every process listening on `channel` (at the commit, inside a transaction)."""

    def claim(self, owner: int, wait: bool = True) -> bool:
        """Hold the name `owner` for as long as this connection lives (or until `release`): a process holds its own,
        and another's that it finds free is the name of a process that ended. Without `wait`, False at once if
        another connection holds it. One process alone on a SQLite index holds every name."""
        return True

    def release(self, owner: int) -> None:
        """Stop holding the name `owner`."""

    def hold(self, name: str) -> bool:
        """Hold `name` (such as an upload's id) for this connection, unless another connection holds it (then
        False); one process alone holds every name."""
        return True

    def let_go(self, name: str) -> None:
        """Stop holding `name`."""

    def add_column(self, table: str, column: str, definition: str) -> None:
        """Add a column to a table made before it existed."""
        if column not in {row[1] for row in self.execute(f"PRAGMA table_info({table})")}:
            self.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def drop_unique(self, table: str, column: str) -> None:
        """Remove the unique constraint on a column, made by an index from before it went (SQLite keeps it: its index
        entries have no size bound)."""

    def joined_text(self, column: str) -> str:
        """The aggregate joining a text column's values with spaces."""
        return f"group_concat({column}, ' ')"

    def close(self) -> None:
        self._conn.close()

    @staticmethod
    def is_full(exc: BaseException) -> bool:
        """Whether the error says that the disk holding the database is full."""
        if isinstance(exc, sqlite3.Error):
            return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        if psycopg is not None and isinstance(exc, psycopg.errors.DiskFull):
            return True
        return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


class SharedSqlite(Database):
    """One connection to a SQLite index that several processes share (`--processes N`, each process's connections
    made after the fork). Their writes take turns (BEGIN IMMEDIATE, waiting up to BUSY_WAIT seconds for the other's);
    the names they hold are byte-range locks (`fcntl`) on LOCKS_FILE beside the index, which the kernel lets go of
    when a process ends, however it ends. The locks are the process's, as PostgreSQL's advisory locks are the
    connection's: all its connections hold what one of them holds."""

    shared = True

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        super().__init__(path, read_only=read_only, timeout=BUSY_WAIT)
        self._locks = path.with_name(LOCKS_FILE)
        self.on_reconnect: list[Callable[[], None]] = []  # a connection to a file is never lost
        self.before_begin: list[Callable[[], None]] = []

    def claim(self, owner: int, wait: bool = True) -> bool:
        return _lock(self._locks, owner, wait)

    def release(self, owner: int) -> None:
        _unlock(self._locks, owner)

    def hold(self, name: str) -> bool:
        return _lock(self._locks, _name_offset(name), wait=False)

    def let_go(self, name: str) -> None:
        _unlock(self._locks, _name_offset(name))

    def notifies(self, timeout: float, stop_after: int) -> tuple:  # noqa: ARG002 (PostgresDatabase's call)
        """Nothing tells of the others' events: a listener looks at the table after EVENTS_POLL seconds."""
        time.sleep(min(timeout, EVENTS_POLL))
        return ()


@functools.lru_cache(maxsize=None)
def _locks_file(path: Path) -> int:
    """The process's one descriptor of a locks file, never closed: closing any descriptor of a file lets go of every
    `fcntl` lock the process holds on it."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _lock(path: Path, offset: int, wait: bool, shared: bool = False) -> bool:
    """Lock the byte at `offset` of the locks file (alone, or `shared` with other processes that share it); without
    `wait`, False at once if another process holds it the other way, or alone."""
    kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.lockf(_locks_file(path), kind | (0 if wait else fcntl.LOCK_NB), 1, offset)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another process holds it
        return False
    return True


def _unlock(path: Path, offset: int) -> None:
    fcntl.lockf(_locks_file(path), fcntl.LOCK_UN, 1, offset)


def hold_data_dir(data_dir: Path, shared: bool) -> bool:
    """Hold the data directory of a SQLite index for as long as this process lives: alone, or `shared` with the other
    processes of --processes N (byte 0 of the locks file, which no owner's name takes); False if another process
    holds it the other way, or alone. Each kind removes, at its start, the uploads in flight that it finds in tmp/
    and does not know to be another live process's."""
    try:
        _locks_file(data_dir / LOCKS_FILE)
    except OSError:  # a directory it cannot write in: its index cannot be written either, and says why at its start
        return True
    return _lock(data_dir / LOCKS_FILE, 0, wait=False, shared=shared)


def _name_offset(name: str) -> int:
    """Where a name (such as an upload's id) is locked: past every owner's byte (owners are 31-bit), at 56 bits of
    its hash."""
    return (1 << 32) + int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


class PostgresDatabase(Database):
    """One connection to a PostgreSQL database (autocommit: statements outside `transaction()` stand alone)."""

    dialect = "postgresql"
    shared = True
    writes_in_turn = False
    like = "ILIKE"
    greatest = "greatest"
    _begin = "BEGIN"

    def __init__(self, url: str, *, read_only: bool = False) -> None:  # noqa: ARG002 (the same calls as SQLite's)
        if psycopg is None:
            raise RuntimeError("an index in PostgreSQL needs psycopg: pip install 'tornado-records[scale]'")
        self.name = safe_url(url)
        self._url = url
        self._conn = psycopg.connect(url, autocommit=True)
        # what a new connection must do again when the last one was lost (hold the process's name, LISTEN)
        self.on_reconnect: list[Callable[[], None]] = []

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        return self._again_if_lost(lambda: self._conn.execute(_placeholders(sql), parameters))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        def run() -> None:
            with self._conn.cursor() as cursor:
                cursor.executemany(_placeholders(sql), list(rows))

        self._again_if_lost(run)

    def _again_if_lost(self, run: Callable[[], Any]) -> Any:
        """Run a statement; if the connection was lost, connect again and run it once more, unless a transaction
        was open (it is gone with the connection: IndexUnavailable, and the next statement connects again)."""
        if self._conn.broken or self._conn.closed:
            self._reconnect()
        try:
            return run()
        except psycopg.OperationalError as exc:
            if not (self._conn.broken or self._conn.closed):
                raise
            in_transaction = self._in_transaction
            self._in_transaction = False
            if in_transaction:
                raise IndexUnavailable(self.name, _first_line(exc)) from None
            self._reconnect()
            return run()

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[None]:
        try:
            with self._conn.pipeline():
                yield
        except psycopg.OperationalError as exc:
            if not (self._conn.broken or self._conn.closed):
                raise
            self._in_transaction = False  # gone with the connection, as in _again_if_lost
            raise IndexUnavailable(self.name, _first_line(exc)) from None

    def _reconnect(self) -> None:
        try:
            self._conn = psycopg.connect(self._url, autocommit=True)
            for again in self.on_reconnect:
                again()
        except psycopg.OperationalError as exc:
            raise IndexUnavailable(self.name, _first_line(exc)) from None

    def schema(self, sql: str) -> None:
        with self.transaction():
            self.execute("SELECT pg_advisory_xact_lock(0)")  # processes starting together create the tables once
            for statement in re.sub(r"--[^\n]*", "", sql.format(blob="BYTEA", without_rowid="")).split(";"):
                if statement.strip():
                    self.execute(statement)

    @property
    def in_transaction(self) -> bool:
        return not self._conn.broken and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def lock_record(self, event: str, start: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?, ?)", (_key(event), _key(start)))

    def lock_key(self, key: int) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def lock_tables(self, *tables: str) -> None:
        self.execute(f"LOCK TABLE {', '.join(tables)} IN SHARE ROW EXCLUSIVE MODE")

    def listen(self, channel: str) -> None:
        self.execute(f"LISTEN {channel}")
        self.on_reconnect.append(lambda: self.execute(f"LISTEN {channel}"))

    def notify(self, channel: str) -> None:
        self.execute(f"NOTIFY {channel}")

    def claim(self, owner: int, wait: bool = True) -> bool:
        if wait:
            self.execute("SELECT pg_advisory_lock(?, ?)", (_OWNERS, owner))
            return True
        return self.execute("SELECT pg_try_advisory_lock(?, ?)", (_OWNERS, owner)).fetchone()[0]

    def release(self, owner: int) -> None:
        self.execute("SELECT pg_advisory_unlock(?, ?)", (_OWNERS, owner))

    def hold(self, name: str) -> bool:
        return self.execute("SELECT pg_try_advisory_lock(?, ?)", (_NAMES, _key(name))).fetchone()[0]

    def let_go(self, name: str) -> None:
        self.execute("SELECT pg_advisory_unlock(?, ?)", (_NAMES, _key(name)))

    def add_column(self, table: str, column: str, definition: str) -> None:
        self.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}")

    def drop_unique(self, table: str, column: str) -> None:
        self.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_{column}_key")  # PostgreSQL's name

    def joined_text(self, column: str) -> str:
        return f"string_agg({column}, ' ')"

    def notifies(self, timeout: float, stop_after: int) -> Iterator[Any]:
        """The NOTIFYs that come within `timeout` seconds (up to `stop_after`), for a connection that LISTENs (one
        lost is made again first, with its on_reconnect)."""
        if self._conn.broken or self._conn.closed:
            self._reconnect()
        return self._conn.notifies(timeout=timeout, stop_after=stop_after)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


_OWNERS = 1_953_723_252  # the advisory locks (this, owner) that say which processes live
_NAMES = 1_953_723_253  # the advisory locks (this, key of a name) that a process holds on a thing, such as an upload


def _key(text: str) -> int:
    """A 32-bit signed key for an advisory lock."""
    return zlib.crc32(text.encode()) - (1 << 31)


def is_postgresql(index: str) -> bool:
    return index.startswith(("postgresql://", "postgres://"))


def connect(index: str, data_dir: Path, *, read_only: bool = False, shared: bool = False) -> Database:
    """The index named by the --index setting: `sqlite` (the file in the data directory; `shared` by the processes
    of --processes N) or a PostgreSQL URL (always shared)."""
    if is_postgresql(index):
        return PostgresDatabase(index, read_only=read_only)
    return (SharedSqlite if shared else Database)(data_dir / SQLITE_FILE, read_only=read_only)


def safe_url(url: str) -> str:
    """A database URL with its password masked, in any of libpq's forms, for logs and the operator's messages."""
    return mask(url)
