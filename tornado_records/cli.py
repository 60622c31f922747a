"""The `tornado-records` command: read the settings, serve until SIGTERM or SIGINT, then stop gracefully; or run
one of the commands beside the service (`check`, `backup`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import pwd
import resource
import signal
import socket
import sqlite3
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import NoReturn

import tornado.netutil
import tornado.web
import uvloop

from tornado_records import __version__, processes
from tornado_records.commands import command_line
from tornado_records.commands.command_line import Parser
from tornado_records.storage import sqldb
from tornado_records.storage.model import BlobsError
from tornado_records.app import close_app, make_app, make_server, shares_index, start_app, stop_app
from tornado_records.config import SETTINGS, Config, ConfigError, build_config
from tornado_records.http.insides import TornadoChanged, check as check_tornado
from tornado_records.redact import MaskingFormatter, mask, secrets_of_environment

log = logging.getLogger("tornado_records")


# Descriptors the service may need: two for each connection (its socket, and a file it reads or writes) and a few
# hundred of its own (the index, the event log, listening sockets, threads' files).
FILES_PER_CONNECTION = 2
FILES_BESIDES_CONNECTIONS = 256
GC_THRESHOLD = 20_000  # young objects between collections (Python's default: 700)
INDEX = sqldb.SQLITE_FILE  # the index in the data directory (see the README's "Start-up errors")
DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")  # SQLite's names of an index that is not a sound database


COMMANDS = """commands:
  serve          serve (the default: `tornado-records [serve] [flags]`)
  check          verify every record of a data directory against its files (`tornado-records check --help`)
  backup DEST    copy a live data directory consistently into DEST (`tornado-records backup --help`)
  migrate        copy a data directory into an object store and PostgreSQL (`tornado-records migrate --help`)
  analyze        analyse the audio of records that have no analysis yet (`tornado-records analyze --help`)"""


class StartupError(Exception):
    """What keeps the service from starting, said in one line."""


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting, each also read from its environment variable."""
    parser = Parser(
        prog="tornado-records",
        usage="%(prog)s [serve] [flags]  |  %(prog)s check [flags]  |  %(prog)s backup DEST [flags]  |  "
        "%(prog)s migrate [flags]  |  %(prog)s analyze [flags]",
        description="Store and serve the audio recordings of a radio station's broadcasts over HTTP.\n\n" + COMMANDS,
        epilog="Each flag may also be given by its environment variable; a flag wins over the environment.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for setting in SETTINGS:
        text = f"{setting.help} (env {setting.env_var}; default {setting.default})"
        if setting.flag_only:
            parser.add_argument(setting.flag, action="store_const", const="true", default=None, help=text)
        elif setting.repeatable:
            parser.add_argument(setting.flag, metavar=setting.name.upper(), action="append", default=None, help=text)
        else:
            metavar = setting.name.upper()
            parser.add_argument(setting.flag, metavar=metavar, default=None, help=text)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the service, or the command named first (`check`, `backup`), from the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["check"], ["backup"], ["migrate"], ["analyze"]):
        sys.exit(command_line.run(argv[0], argv[1:]))
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        check_tornado()  # the private attributes of Tornado's that the service relies on (http/insides.py)
    except TornadoChanged as exc:
        _fail(str(exc), status=2)
    try:
        config = build_config(vars(args), dict(os.environ))
    except ConfigError as exc:
        _fail(str(exc), status=2)
    set_up_logging(config)
    try:
        sockets = bind(config)
        if config.processes > 1:
            prepare_shared_index(config)
            sys.exit(processes.supervise(config.processes, lambda fd: serve_in_child(config, sockets, fd), sockets))
        uvloop.run(serve(config, sockets))  # asyncio's loop, faster: +35 % /ping requests/s in bench/ (issue 8)
    except StartupError as exc:
        _fail(str(exc))


def bind(config: Config) -> list[socket.socket]:
    """The listening sockets of --host and --port."""
    try:
        return tornado.netutil.bind_sockets(config.port, config.host)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None


def prepare_shared_index(config: Config) -> None:
    """Before the fork: make the SQLite index a write-ahead log once, rather than by processes starting together
    (the connection is closed: none crosses the fork)."""
    if sqldb.is_postgresql(config.index.url):
        return
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        sqldb.connect(config.index.url, config.data_dir).close()
    except (OSError, sqlite3.DatabaseError) as exc:
        raise StartupError(storage_error(exc, config.data_dir)) from None


def hold_data_dir(config: Config) -> None:
    """A data directory with a SQLite index is served by one process alone, or by processes of --processes N only:
    each kind would take the other's uploads in flight for leftovers of a crash."""
    if sqldb.is_postgresql(config.index.url):
        return
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if not sqldb.hold_data_dir(config.data_dir, shares_index(config)):
        raise StartupError(
            f"another tornado-records serves the data directory {config.data_dir.absolute()}: stop it first (several "
            "processes serve one data directory only as those of --processes N)"
        )


def serve_in_child(config: Config, sockets: list[socket.socket], parent: int) -> int:
    """One of --processes N: serve on the parent's sockets until a signal, or until the parent ends."""
    try:
        uvloop.run(serve(config, sockets, parent))
    except StartupError as exc:
        _fail(str(exc))
    return 0


def set_up_logging(config: Config) -> None:
    """Log lines to standard error, with every secret the service was given masked (redact.py)."""
    handler = logging.StreamHandler(sys.stderr)
    password = urllib.parse.urlsplit(config.index.url).password if sqldb.is_postgresql(config.index.url) else None
    secrets = [*secrets_of_environment(), *([password] if password else [])]
    for secret in (config.token_file, config.webhook_secret_file):
        if secret is not None:
            secrets.append(secret.value.decode("latin1"))
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    logging.basicConfig(level=config.logging_level, handlers=[handler])


def raise_open_files_limit(connections: int) -> None:
    """Raise the soft limit on open files to fit `connections` (two descriptors each, and the service's own), as far
    as the hard limit allows; warn at start when not even one each fits (connections past the limit would be refused
    by the system, not answered)."""
    wanted = FILES_PER_CONNECTION * connections + FILES_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < connections + FILES_BESIDES_CONNECTIONS:
        log.warning("the open-files limit (%d) is too low for --max-connections %d: raise it (LimitNOFILE)",
                    soft, connections)  # fmt: skip


def _fail(message: str, status: int = 1) -> NoReturn:
    print(f"tornado-records: error: {mask(message, secrets_of_environment())}", file=sys.stderr)
    sys.exit(status)


async def serve(config: Config, sockets: list[socket.socket], parent: int | None = None) -> None:
    """Serve on `sockets` until a signal (or, for one of --processes N, until its `parent` pipe closes), then stop
    accepting, let requests in flight finish (up to the grace), and return."""
    notices = exposure_notices(sockets, config)
    try:
        hold_data_dir(config)
        # the notices in the routes' one table: a rule of a host of its own (add_handlers) would be tried first by
        # every request
        app = make_app(config, notices)
    except (OSError, sqlite3.DatabaseError) as exc:
        raise StartupError(storage_error(exc, config.data_dir)) from None
    except sqldb.Database.errors as exc:  # a PostgreSQL index (SQLite's errors are DatabaseErrors, above)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot use the index {config.index}: {reason}") from None
    except BlobsError as exc:
        raise StartupError(f"cannot keep recordings in {config.blobs}: {exc}") from None
    raise_open_files_limit(config.max_connections)
    for notice in notices:
        log.warning("%s", notice)
    if (stale := stale_index(config)) is not None:
        log.warning("%s", stale)
    server = make_server(app)
    if parent is None:
        server.add_sockets(sockets)
    else:  # one of --processes N, on the parent's sockets
        server.add_sockets_in_turn(sockets)
    start_app(app)
    # What start-up made lives as long as the process: keep the collector from walking it again and again, and let
    # it run less often (thousands of subscribers and connections make many young objects that are not garbage).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    signalled: list[int] = []  # the signals had: a second one ends the process at once

    def on_signal(signum: int) -> None:
        if signalled:
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        signalled.append(signum)
        log.info("%s: shutting down", signal.Signals(signum).name)
        stopping.set()

    def on_parent_gone() -> None:
        if not stopping.is_set():
            log.info("asked to end by the parent process: shutting down")
        stopping.set()

    # before the line that says it serves: a SIGTERM right after that line is a graceful stop, not the default's end
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if parent is not None:
        processes.watch_parent(parent, on_parent_gone)
    port = sockets[0].getsockname()[1]
    log.info(
        "tornado-records %s serving on http://%s:%d, data in %s, index %s%s",
        __version__,
        config.host,
        port,
        config.data_dir.resolve(),
        config.index,
        f", recordings in {config.blobs}" if config.blobs else "",
    )
    await stopping.wait()

    server.stop()
    # Kept-alive connections (nginx keeps some open) would bring new requests: each answer from now on closes its
    # connection, and a request that still comes is refused (503) rather than begun and then cut off.
    server.conn_params.no_keep_alive = True
    app.settings["stopping"] = True
    await app.settings["hub"].close()  # end every event stream first: they never end by themselves
    end_live_appends(app)  # nor do live recordings: what they received is kept, and the recorders reconnect
    await stop_app(app)
    inflight: set = app.settings["inflight"]
    deadline = loop.time() + config.shutdown_grace
    while inflight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if inflight:
        log.warning("closing %d request(s) still in flight after %g s", len(inflight), config.shutdown_grace)
    await server.close_all_connections()
    store = app.settings["store"]
    await store.settle()  # append requests that were cut off: what they received joins their records first
    # Work of tasks ended above may still run in threads (the analyses' look for records pending, a sweep's query):
    # it ends before the index it reads is closed under it (sqlite3 crashes on a connection closed while in use).
    await loop.shutdown_default_executor()
    close_app(app)
    log.info("stopped")


def exposure_notices(sockets: list, config: Config) -> list[str]:
    """The warning, if any, that the service is open to writes from the network: it listens on an address other
    than the loopback's (0.0.0.0 is every address) and has no write token."""
    if config.token_file is not None:
        return []
    addresses = sorted({sock.getsockname()[0] for sock in sockets})
    if all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        return []
    return [
        f"listening on {config.host} (beyond this machine) with no write token: anyone who can reach it may upload "
        "and delete recordings; give it --token-file, or listen on 127.0.0.1 behind nginx (see docs/running.md)"
    ]


def stale_index(config: Config) -> str | None:
    """The warning, if any, that the data directory holds a SQLite index that the service does not use (it was left
    there when the records moved to PostgreSQL with `migrate`)."""
    left = config.data_dir / INDEX
    if not sqldb.is_postgresql(config.index.url) or not left.exists():
        return None
    return (
        f"{left.absolute()} is not the index in use ({config.index}): left from before the records moved to "
        "PostgreSQL, it is not read; move it out of the data directory once its records are migrated"
    )


def end_live_appends(app: tornado.web.Application) -> None:
    """At shutdown, end the append requests in flight (live recordings) at once rather than after the grace: a live
    recorder never ends its request by itself. Each keeps what it received (its handler ends it as cut off by the
    shutdown, reason `shutdown`), and the recorder, its connection closed, reconnects to the next process."""
    appends = [
        handler
        for handler in list(app.settings["inflight"])
        if handler.request.method == "PUT" and handler.request.query_arguments.get("append", [b""])[-1] == b"true"
        and not handler.request.connection.stream.closed()
    ]  # fmt: skip
    if appends:
        log.info("ending %d live append request(s) at once, keeping what they received", len(appends))
    for handler in appends:
        handler.request.connection.stream.close()


def storage_error(exc: OSError | sqlite3.DatabaseError, data_dir: Path) -> str:
    """Why the data directory cannot be used, and where: a damaged index, or the path the system refused and why."""
    data_dir = data_dir.absolute()
    index = data_dir / INDEX
    if isinstance(exc, sqlite3.DatabaseError):
        if exc.sqlite_errorname in DAMAGED:
            return (
                f"the index {index} is damaged ({exc}): restore the data directory from a backup, "
                "or move the index away to start with an empty one"
            )
        exc = _refusal(index, data_dir) or exc
    if isinstance(exc, OSError) and exc.strerror:
        path = Path(exc.filename).absolute() if exc.filename else data_dir
        where = "" if path == data_dir else f"{path}: "
        return f"cannot use the data directory {data_dir}: {where}{exc.strerror}{_ownership(path, exc)}"
    return f"cannot use the index {index}: {exc}"


def _refusal(index: Path, data_dir: Path) -> OSError | None:
    """The system's refusal to write the index or in the data directory (SQLite does not say why it cannot)."""
    try:
        with open(index, "r+b"):
            pass
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        return exc
    return None


def _ownership(path: Path, exc: OSError) -> str:
    """For a refused permission: who owns the nearest path that can be looked at, and who the service runs as."""
    if not isinstance(exc, PermissionError):
        return ""
    for candidate in (path, *path.parents):
        try:
            info = candidate.stat()
        except OSError:
            continue
        return (
            f" ({candidate} is owned by {_user(info.st_uid)} with mode {info.st_mode & 0o7777:04o};"
            f" the service runs as {_user(os.geteuid())})"
        )
    return ""


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
