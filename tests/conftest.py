"""Fixtures shared by every tier: a real app on a real socket (pytest-tornado's `app`, `http_server`, `fetch`), the
engines it runs on (PostgreSQL and SeaweedFS, started once a session, with a database and a bucket prefix of each
test's own), and the tiers' marker. The helpers they use are plain modules in tests/support/; the fixtures for real
processes (`service`, `nginx`) are in tests/system/conftest.py."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterator

import pytest
import tornado.httpclient

from support.access import SECRET
from support.engines import DatabasePool, PostgreSQL, SeaweedFS, start_postgres, start_seaweedfs
from support.records import stored_blobs
from tornado_records.app import close_app, make_app, make_server
from tornado_records.config import build_config


def pytest_configure(config: pytest.Config) -> None:
    # pytest-tornado 0.8.1 still calls IOLoop.make_current/clear_current, deprecated since Tornado 6.2.
    config.addinivalue_line("filterwarnings", "ignore:make_current is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:clear_current is deprecated:DeprecationWarning")
    config.addinivalue_line("markers", "engines(*names): the engines a test of the contract runs on, where not all")
    config.addinivalue_line(
        "markers", "system: starts processes (the service, a browser, a recorder, nginx, clients); every test in "
        "tests/system/ has it, and `pytest -m 'not system'` leaves them out"
    )  # fmt: skip
    if config.option.durations is None:  # the slowest tests at the end of each run (CI's budget is 30 minutes)
        config.option.durations = 15


TIERS = ("system", "http", "unit")  # the order the tiers run in: the slow tests first, the quick ones to fill the end


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The system tier first: with pytest-xdist, its long tests (a broadcast, a fuzzing run) start early and the
    quick tests of the other tiers fill the end, so that no process is left with a long test when the others are
    done. Within a tier the order is pytest's."""
    here = Path(__file__).parent

    def tier(item: pytest.Item) -> int:
        folder = item.path.relative_to(here).parts[0] if here in item.path.parents else ""
        return TIERS.index(folder) if folder in TIERS else len(TIERS)

    items.sort(key=tier)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings() -> dict[str, str]:
    """Flag values for the app under test; a test module may override this fixture."""
    return {}


# The engines a test of the contract runs on: the embedded default (SQLite and files), a PostgreSQL index with the
# files, and the scale-out set (PostgreSQL and objects in SeaweedFS's S3); the modules below run once on each, the
# others on the default only.
ENGINES = ("sqlite", "postgresql", "s3")
ON_EVERY_ENGINE = {
    "test_records", "test_conditional", "test_list", "test_events_list", "test_sse", "test_events", "test_append",
    "test_resumable", "test_resumable_restart", "test_ranges", "test_digest_fields", "test_eventlog", "test_live",
    "test_eventlog_restarts", "test_sse_clients", "test_audio_process", "test_dead_air", "test_webhooks",
    "test_webhook_processes", "test_feeds", "test_event_details", "test_feeds_process", "test_caching", "test_clips",
}  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__ not in ON_EVERY_ENGINE:
        return
    marker = metafunc.definition.get_closest_marker("engines")
    if "shared_service" in metafunc.fixturenames:  # one process an engine for the module (tests/system/conftest.py)
        metafunc.parametrize("shared_engine", marker.args if marker else ENGINES, scope="module")
    elif {"app", "service"} & set(metafunc.fixturenames):
        metafunc.parametrize("engine", marker.args if marker else ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that put the service under test on its engine (none: the embedded default); a fresh database
    for each test."""
    name = getattr(request, "param", "sqlite")
    # an app in this process gets a copy of a database that has the service's tables already (quicker than making
    # them); a process started by the test gets an empty one, as an operator's first start does
    index = "app_database_url" if "app" in request.fixturenames else "postgres_url"
    if name == "postgresql":
        return {"index": request.getfixturevalue(index)}
    if name == "s3":  # the keys in the environment, as an operator gives them (the process started inherits them)
        monkeypatch = request.getfixturevalue("monkeypatch")
        for variable, value in request.getfixturevalue("s3_env").items():
            monkeypatch.setenv(variable, value)
        bucket = request.getfixturevalue("shared_bucket")
        prefix = f"{secrets.token_hex(6)}/records"  # the test's own
        return {"index": request.getfixturevalue(index), "blobs": f"s3://{bucket}/{prefix}"}
    return {}


@pytest.fixture
def app(data_dir: Path, settings: dict[str, str], engine: dict[str, str]) -> Iterator:
    app = make_app(build_config({"data_dir": str(data_dir), **engine, **settings}, {}))
    yield app
    close_app(app)


@pytest.fixture
def http_server(request: pytest.FixtureRequest, io_loop, _unused_port, app):  # noqa: ANN001
    """pytest-tornado's server, but built as the command builds it (same limits)."""
    server = make_server(app)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)


@pytest.fixture
def port(http_server, http_port: int) -> int:  # noqa: ANN001
    """The port of the app under test, listening."""
    return http_port


@pytest.fixture
def hub(app):  # noqa: ANN001, ANN201
    """The app's EventHub."""
    return app.settings["hub"]


@pytest.fixture
def fetch(http_client: tornado.httpclient.AsyncHTTPClient, base_url: str):
    """`await fetch(path, **kwargs)`: a request to the app under test that returns error responses too."""

    async def fetch(path: str, **kwargs) -> tornado.httpclient.HTTPResponse:  # noqa: ANN003
        kwargs.setdefault("raise_error", False)
        kwargs.setdefault("request_timeout", 60)
        if kwargs.get("method") == "PUT" and "body" not in kwargs and "body_producer" not in kwargs:
            kwargs["body"] = b""
        return await http_client.fetch(base_url + path, **kwargs)

    return fetch


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A file holding the write token SECRET (support.access), for --token-file."""
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def blobs(engine: dict[str, str], data_dir: Path):
    """`blobs()`: the blobs of the app under test, by name, with their bytes (see stored_blobs)."""
    return lambda: stored_blobs(engine, data_dir)


# -- the engines, once a session ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    """A PostgreSQL server for the session (`.url` of its database `postgres`, `.create_database()`,
    `.drop_database(name)`, `.database_url(name)`); skips (fails under RECORDS_TEST_REQUIRE_ALL) where PostgreSQL
    is not installed."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgreSQL) -> Iterator[str]:
    """The URL of a new, empty database for this test alone (postgresql://postgres@127.0.0.1:PORT/test_...),
    dropped at its end."""
    with postgres.new_database() as url:
        yield url


@pytest.fixture(scope="session")
def records_template(postgres: PostgreSQL, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database with the service's tables, made by the service itself (make_app) once a session: the template
    of each in-process app's database."""
    name = postgres.create_database()
    data_dir = tmp_path_factory.mktemp("template") / "data"
    close_app(make_app(build_config({"data_dir": str(data_dir), "index": postgres.database_url(name)}, {})))
    postgres.make_template(name)
    return name


@pytest.fixture(scope="session")
def app_databases(postgres: PostgreSQL, records_template: str) -> DatabasePool:
    """The databases of the in-process apps: copies of records_template, each emptied after a test for the next."""
    return DatabasePool(postgres, records_template)


@pytest.fixture
def app_database_url(app_databases: DatabasePool) -> Iterator[str]:
    """The URL of a database for this test alone with the service's tables, all empty (from app_databases)."""
    url = app_databases.take()
    yield url
    app_databases.give_back(url)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server for the session: `.endpoint` (http://127.0.0.1:PORT), `.access_key`, `.secret_key`,
    `.region` (us-east-1), `.client` (botocore's synchronous S3 client, signed with those keys), `.keys(bucket)`,
    `.env()`, `.new_bucket()`; skips (fails under RECORDS_TEST_REQUIRE_ALL) where `weed` is missing. See SeaweedFS for
    the ports it takes."""
    with start_seaweedfs() as server:
        yield server


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> Iterator[str]:
    """The name of a new, empty bucket on `seaweedfs` for this test alone; emptied and removed at its end."""
    with seaweedfs.new_bucket() as name:
        yield name


@pytest.fixture(scope="session")
def shared_bucket(seaweedfs: SeaweedFS) -> Iterator[str]:
    """A bucket for the session, where each test on the S3 engine has a prefix of its own: SeaweedFS takes 0.2 s to
    store the first object of a new bucket."""
    with seaweedfs.new_bucket() as name:
        yield name


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS) -> dict[str, str]:
    """The AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3; AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE set to /dev/null) that point
    a process's S3 client at `seaweedfs`: a new dict for each test, to pass as `env={**os.environ, **s3_env}`."""
    return seaweedfs.env()
