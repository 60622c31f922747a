"""`check`, `backup` and `migrate` read the service's settings and environment (RECORDS_DATA_DIR, RECORDS_INDEX,
RECORDS_BLOBS, RECORDS_S3_ENDPOINT, as `serve` does), and work on every engine: a PostgreSQL index with the files in
a data directory, or with the recordings in an S3 store (SeaweedFS). A backup of either is a data directory of the
default kind, which a service serves as the source was, and which `migrate` puts back into PostgreSQL and S3."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import psycopg

from support.commands import fill, run
from support.paths import TESTS
from support.rawhttp import request
from support.records import EVENT, files_in, record_url
from support.waiting import wait_until


def settings_env(index: str, blobs: str = "", s3_env: dict[str, str] | None = None, data_dir: Path | None = None):
    """The environment a service's settings are in (as /etc/tornado-records/environment gives them): the commands
    get no flag but --data-dir where the test says."""
    env = {"RECORDS_INDEX": index, "RECORDS_BLOBS": blobs, **(s3_env or {})}
    if s3_env:
        env["RECORDS_S3_ENDPOINT"] = s3_env["AWS_ENDPOINT_URL"]
        env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:9"  # the setting must win
    if data_dir is not None:
        env["RECORDS_DATA_DIR"] = str(data_dir)
    return env


def served(url: str) -> dict[str, tuple[bytes, str, str, str]]:
    """Every record of EVENT the service at url serves: start -> (content, ETag, Last-Modified, type)."""
    listed = json.loads(request(url, "GET", f"/records/{EVENT}?limit=1000")[2])["records"]
    seen = {}
    for record in listed:
        status, headers, body = request(url, "GET", record_url(start=record["start"]))
        assert status == 200
        seen[record["start"]] = (body, headers["ETag"], headers["Last-Modified"], headers["Content-Type"])
    return seen


def analysed(url: str) -> dict[str, str]:
    """The analysis state of every record of EVENT the service at url lists, by start."""
    listed = json.loads(request(url, "GET", f"/records/{EVENT}?limit=1000")[2])["records"]
    return {record["start"]: record["analysis"] for record in listed}


def test_check_and_backup_of_postgresql_and_s3_and_a_restore_by_migrate(
    service, postgres, postgres_url, seaweedfs, bucket, s3_env, tmp_path
) -> None:
    blobs = f"s3://{bucket}/records"
    env = settings_env(postgres_url, blobs, s3_env, data_dir=tmp_path / "data")
    svc = service("--index", postgres_url, "--blobs", blobs, env=s3_env)
    contents = fill(svc)
    assert request(svc.url, "PUT", f"/records/{EVENT}", b'{"title": "Morning show"}')[0] == 200
    before = served(svc.url)
    assert wait_until(lambda: "pending" not in analysed(svc.url).values(), timeout=60)
    states = analysed(svc.url)
    assert set(states.values()) == {"unsupported"}  # random bytes; the copies below analyse nothing, they carry it
    # an old SQLite index left in the data directory is not read, and is said
    shutil.copy(TESTS / "USAGE.md", tmp_path / "data" / "records.sqlite3")

    result = run("check", "--rate", "0", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("checked 3 records and ") and " objects in " in result.stdout
    assert f"read {sum(map(len, contents.values()))} bytes" in result.stdout and result.stdout.rstrip().endswith("healthy")
    assert "records.sqlite3 is not the index in use" in result.stderr

    backed = tmp_path / "backup"
    result = run("backup", str(backed), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("backed up 3 records") and f"to {backed}" in result.stdout
    assert not (backed / ".index").exists() and (backed / "records.sqlite3").exists()
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDS_", "AWS_"))}
    assert run("check", "--data-dir", str(backed), env=plain).returncode == 0
    copy = service("--analysis-workers", "0", data_dir=backed)
    assert served(copy.url) == before and analysed(copy.url) == states
    assert json.loads(request(copy.url, "GET", f"/records/{EVENT}")[2])["title"] == "Morning show"
    assert copy.stop() == 0

    # the restore: the backup migrated into a new database and prefix, served as before
    with postgres.new_database() as restored:
        prefix = f"s3://{bucket}/restored-{secrets.token_hex(4)}"
        result = run("migrate", "--data-dir", str(backed), env=settings_env(restored, prefix, s3_env))
        assert result.returncode == 0, result.stdout + result.stderr
        again = service("--index", restored, "--blobs", prefix, "--analysis-workers", "0", data_dir=tmp_path / "again",
                        env=s3_env)  # fmt: skip
        assert served(again.url) == before and analysed(again.url) == states
        assert again.stop() == 0

    # damage in the bucket: an object replaced (same size) and one removed
    client = seaweedfs.client
    keys = seaweedfs.keys(bucket, "records/")
    plain_records = {start: content for start, content in contents.items() if not start.startswith("2024-01-03")}
    for start, content in plain_records.items():
        [key] = [k for k in keys if client.get_object(Bucket=bucket, Key=k)["Body"].read() == content]
        if start == "2024-01-01T00:00:00":
            client.put_object(Bucket=bucket, Key=key, Body=content[:-1] + bytes([content[-1] ^ 1]))
        else:
            client.delete_object(Bucket=bucket, Key=key)
    result = run("check", "--rate", "0", env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"damaged: {record_url(start='2024-01-01T00:00:00')}: its content's SHA-256 is")
               for line in lines), lines  # fmt: skip
    assert any(line.startswith(f"missing: {record_url(start='2024-01-02T00:00:00')}: s3://{bucket}/records/")
               for line in lines), lines  # fmt: skip
    assert lines[-1].endswith("1 missing, 0 truncated, 1 damaged, 0 orphaned, 0 unreadable: problems")


def test_check_and_backup_of_postgresql_with_files_link_them(service, postgres_url, tmp_path) -> None:
    svc = service("--index", postgres_url)
    contents = fill(svc)
    before = served(svc.url)
    env = settings_env(postgres_url, data_dir=svc.data_dir)

    result = run("check", env=env)
    assert result.returncode == 0 and result.stdout.startswith("checked 3 records and 4 files in "), result.stdout
    assert result.stderr == ""
    result = run("backup", str(tmp_path / "backup"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 files linked, 1 copied" in result.stdout  # the appended record's runs joined in one file
    assert len(files_in(tmp_path / "backup" / "blobs")) == 3
    assert svc.stop() == 0
    copy = service(data_dir=tmp_path / "backup")
    assert served(copy.url) == before and len(before) == len(contents)


def test_the_commands_refuse_a_bad_setting_in_one_line(tmp_path) -> None:
    result = run("check", env={"RECORDS_INDEX": "mysql://nope", "RECORDS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == "tornado-records check: error: RECORDS_INDEX: 'mysql://nope' is neither sqlite nor a postgresql:// URL"
    result = run("backup", str(tmp_path / "b"), "--index", "postgresql://nobody@127.0.0.1:9/none")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("tornado-records backup: error: cannot use the index postgresql://nobody@127.0.0.1:9/none")
    assert psycopg  # the PostgreSQL client is installed (the scale extra)


def test_a_sqlite_index_left_beside_a_postgresql_one_is_said_at_start(service, postgres_url, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "records.sqlite3").write_bytes(b"left from before the migration")
    svc = service("--index", postgres_url)
    [warning] = [line for line in svc.lines if " WARNING " in line]
    assert f"{data / 'records.sqlite3'} is not the index in use (postgresql://postgres@127.0.0.1:" in warning
    assert "it is not read" in warning
