"""The record under test and what the service keeps of it: its URL, the files of a data directory, the blobs (files
or S3 objects), and rows of the index read behind the service's back."""

from __future__ import annotations

import http.client
import sqlite3
from pathlib import Path
from typing import Any

import botocore.session
import psycopg

EVENT = "0f339cb0-7ab4-43fe-852d-75708232f76c"
START = "2024-01-01T00:00:00"


def record_url(event: str = EVENT, start: str = START) -> str:
    return f"/records/{event}/{start}"


def files_in(directory: Path) -> list[str]:
    """The files in a directory and its subdirectories (processes sharing an index keep their uploads in flight in
    tmp/<process>/), by name."""
    return sorted(p.name for p in directory.rglob("*") if not p.is_dir()) if directory.exists() else []


def run_on_index(engine: dict[str, str], data_dir: Path, *statements: str) -> list[tuple]:
    """Run SQL statements on the index of the service under test, behind its back (SQLite's file, or the
    PostgreSQL database of `engine`), in one transaction; the rows of the last."""
    index = psycopg.connect(engine["index"]) if "index" in engine else sqlite3.connect(data_dir / "records.sqlite3")
    try:
        for statement in statements:
            cursor = index.execute(statement)
        rows = cursor.fetchall() if cursor.description else []
        index.commit()
        return rows
    finally:
        index.close()


def stored_blobs(engine: dict[str, str], data_dir: Path) -> dict[str, bytes]:
    """The blobs the service under test keeps, by name, with their bytes: the files in data_dir/blobs, or the objects
    under the S3 prefix of `engine` (read with the keys in the environment, as the service reads them)."""
    if "blobs" not in engine:
        return {name: (data_dir / "blobs" / name).read_bytes() for name in files_in(data_dir / "blobs")}
    bucket, _, prefix = engine["blobs"].removeprefix("s3://").partition("/")
    client = botocore.session.get_session().create_client("s3")
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []))
        return {key[len(prefix) + 1 :]: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
    finally:
        client.close()


def put(service: Any, start: str, body: bytes = b"audio") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    conn.request("PUT", record_url(start=start), body=body)
    assert conn.getresponse().status == 204
    conn.close()
