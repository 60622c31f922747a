"""The command lines of the commands beside the service (`check`, `backup`, `migrate`, `analyze`): the service's
settings of where the records are, read as the service reads them, and each command's own flags."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from tornado_records.commands import analyze, backup, check, migrate
from tornado_records.commands.datadir import CommandError, Source
from tornado_records.config import SETTINGS, ConfigError, build_config, parse_size
from tornado_records.redact import mask, secrets_of_environment
from tornado_records.storage import sqldb
from tornado_records.storage.model import BlobsError


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors point to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_command_parser(command: str) -> argparse.ArgumentParser:
    """The command line of `check`, `backup` or `migrate`: the service's settings of where the records are (with
    their environment variables, as the service reads them), and the command's own."""
    doc = {"check": check.__doc__, "backup": backup.__doc__, "migrate": migrate.__doc__, "analyze": analyze.__doc__}[
        command
    ]
    parser = Parser(
        prog=f"tornado-records {command}",
        description=doc.split("\n\n")[0].replace("\n", " "),
        epilog="Each of the service's settings may also be given by its environment variable, as for the service "
        "(a flag wins): run the command with the service's environment to see what the service serves.",
    )
    if command == "backup":
        parser.add_argument("dest", metavar="DEST", type=Path, help="a new (or empty) directory to copy into")
    for setting in SETTINGS:
        if setting.name in COMMAND_SETTINGS or (command == "analyze" and setting.name in ANALYSIS_SETTINGS):
            text = f"{setting.help}, as the service's (env {setting.env_var}; default {setting.default or 'empty'})"
            if command == "migrate" and setting.name in ("index", "blobs"):
                text = f"{setting.help}: where to copy to (env {setting.env_var})"
            parser.add_argument(setting.flag, metavar=setting.name.upper(), default=None, help=text)
    if command == "migrate":
        return parser
    if command == "analyze":
        parser.add_argument("--again", action="store_true", help="analyse every record again, not only those without")
        return parser
    rate = check.DEFAULT_RATE if command == "check" else "0"
    parser.add_argument(
        "--rate",
        type=_size,
        default=rate,
        help=f"most bytes {'read' if command == 'check' else 'copied'} per second, with units (K, M, G); 0: no limit "
        f"(default {rate})",
    )
    return parser


COMMAND_SETTINGS = ("data_dir", "index", "blobs", "s3_endpoint")  # where the records are: what the commands read
ANALYSIS_SETTINGS = ("silence_threshold", "silence_min")  # and how `analyze` analyses, as the service's


def command_source(args: argparse.Namespace) -> Source:
    """Where the records are, from the command's flags, then the environment, then the defaults, checked as the
    service checks them."""
    given = {name: getattr(args, name) for name in COMMAND_SETTINGS}
    try:
        config = build_config(given, {k: v for k, v in os.environ.items() if k in COMMAND_VARIABLES})
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    return Source(config.data_dir, config.index.url, config.blobs, config.s3_endpoint or None)


COMMAND_VARIABLES = {setting.env_var for setting in SETTINGS if setting.name in COMMAND_SETTINGS}
ANALYSIS_VARIABLES = {setting.env_var for setting in SETTINGS if setting.name in ANALYSIS_SETTINGS}


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(command: str, argv: list[str]) -> int:
    """Run `check`, `backup` or `migrate`; returns its exit status. A failure is one line on stderr, with status 2
    for check (1 means damage there) and 1 for the others."""
    args = build_command_parser(command).parse_args(argv)
    try:
        source = command_source(args)
        if command == "check":
            return check.check(source, args.rate)
        if command == "migrate":
            return _migrate(source)
        if command == "analyze":
            return _analyze(args, source)
        return backup.backup(source, args.dest, args.rate)
    except (CommandError, OSError, BlobsError) as exc:
        if isinstance(exc, OSError):  # a directory that cannot be listed, say
            exc = CommandError(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        print(f"tornado-records {command}: error: {mask(str(exc), secrets_of_environment())}", file=sys.stderr)
        return 2 if command == "check" else 1
    except KeyboardInterrupt:
        print(f"tornado-records {command}: interrupted", file=sys.stderr)
        return 130


def _analyze(args: argparse.Namespace, source: Source) -> int:
    """Run `analyze` with the silence settings of its flags, then the environment, then the defaults."""
    given = {name: getattr(args, name) for name in ANALYSIS_SETTINGS}
    try:
        config = build_config(given, {k: v for k, v in os.environ.items() if k in ANALYSIS_VARIABLES})
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    return analyze.analyze(source, args.again, config.silence_threshold, config.silence_min)


def _migrate(target: Source) -> int:
    """Run `migrate` from the data directory (its SQLite index and files) into the index and object store named."""
    if not sqldb.is_postgresql(target.index):
        raise CommandError("--index must name the PostgreSQL database to copy into (postgresql://...)")
    try:
        return migrate.migrate(target.root, target.index, target.blobs, target.endpoint)
    except sqldb.Database.errors as exc:
        raise CommandError(f"cannot use the index {target.index_name}: {str(exc).strip().splitlines()[0]}") from None
