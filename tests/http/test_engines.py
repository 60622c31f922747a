"""The real engines of tests/support/engines.py work, and what they support: a fresh PostgreSQL database a test, and a fresh
bucket a test on SeaweedFS's S3 with the features the service uses (Range GET, multipart uploads with UploadPartCopy,
ListMultipartUploads, AbortMultipartUpload, conditional PutObject)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from typing import Any

import aiobotocore.session
import psycopg
import pytest
from botocore.exceptions import ClientError

from support.engines import PostgreSQL, SeaweedFS

MIB = 1024 * 1024
PART = 5 * MIB  # S3's least size of a part that is not the last

# -- PostgreSQL --------------------------------------------------------------------------------------------------


def test_postgres_url_is_an_empty_database_that_works(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT current_database()").fetchone()[0] == postgres_url.rsplit("/", 1)[1]
        tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        assert tables == 0
        connection.execute("CREATE TABLE records (id integer PRIMARY KEY, name text NOT NULL)")
        connection.execute("INSERT INTO records VALUES (1, 'one'), (2, 'two')")
        assert connection.execute("SELECT name FROM records ORDER BY id").fetchall() == [("one",), ("two",)]
        assert int(connection.execute("SHOW server_version_num").fetchone()[0]) >= 150000


SEEN: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_its_own_database(run: int, postgres: PostgreSQL, postgres_url: str) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    assert name not in SEEN
    assert not set(SEEN) & postgres.databases()  # the earlier test's database is dropped
    SEEN.append(name)


# -- SeaweedFS (S3) ----------------------------------------------------------------------------------------------


def data(size: int, seed: str = "") -> bytes:
    """`size` random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def upload_parts(s3: Any, bucket: str, key: str, upload: str, bodies: list[bytes]) -> list[dict[str, Any]]:
    """Upload `bodies` as parts 1, 2, ... of multipart upload `upload`; returns them for CompleteMultipartUpload."""
    parts = []
    for number, body in enumerate(bodies, start=1):
        answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body)
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    return parts


def test_put_list_and_get_a_range(seaweedfs: SeaweedFS, bucket: str) -> None:
    s3 = seaweedfs.client
    body = data(1000)
    s3.put_object(Bucket=bucket, Key="a/one.mp3", Body=body, ContentType="audio/mpeg")
    s3.put_object(Bucket=bucket, Key="b/two.mp3", Body=b"two")
    assert seaweedfs.keys(bucket) == ["a/one.mp3", "b/two.mp3"]
    assert seaweedfs.keys(bucket, prefix="a/") == ["a/one.mp3"]
    answer = s3.get_object(Bucket=bucket, Key="a/one.mp3", Range="bytes=100-199")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert answer["ContentRange"] == "bytes 100-199/1000"
    assert answer["Body"].read() == body[100:200]
    assert s3.head_object(Bucket=bucket, Key="a/one.mp3")["ContentType"] == "audio/mpeg"


def test_multipart_upload_with_a_part_copied_from_an_object(seaweedfs: SeaweedFS, bucket: str) -> None:
    s3 = seaweedfs.client
    source = data(3 * MIB, "source")
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    first, second = data(PART, "1"), data(PART, "2")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    parts = upload_parts(s3, bucket, "joined", upload, [first, second])
    copied = s3.upload_part_copy(
        Bucket=bucket, Key="joined", UploadId=upload, PartNumber=3,
        CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange=f"bytes={MIB}-{3 * MIB - 1}",
    )  # fmt: skip
    parts.append({"PartNumber": 3, "ETag": copied["CopyPartResult"]["ETag"]})
    listed = s3.list_parts(Bucket=bucket, Key="joined", UploadId=upload)["Parts"]
    assert [(part["PartNumber"], part["Size"]) for part in listed] == [(1, PART), (2, PART), (3, 2 * MIB)]
    s3.complete_multipart_upload(Bucket=bucket, Key="joined", UploadId=upload, MultipartUpload={"Parts": parts})
    joined = s3.get_object(Bucket=bucket, Key="joined")
    assert joined["ETag"].endswith('-3"')
    assert joined["Body"].read() == first + second + source[MIB:]


def test_a_whole_object_copied_as_a_part(seaweedfs: SeaweedFS, bucket: str) -> None:
    s3 = seaweedfs.client
    head, tail = data(PART, "head"), b"tail"
    s3.put_object(Bucket=bucket, Key="head", Body=head)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="whole")["UploadId"]
    copied = s3.upload_part_copy(
        Bucket=bucket, Key="whole", UploadId=upload, PartNumber=1, CopySource={"Bucket": bucket, "Key": "head"}
    )
    last = s3.upload_part(Bucket=bucket, Key="whole", UploadId=upload, PartNumber=2, Body=tail)
    parts = [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": last["ETag"]}]
    s3.complete_multipart_upload(Bucket=bucket, Key="whole", UploadId=upload, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="whole")["Body"].read() == head + tail


def complete_with_small_parts(s3: Any, bucket: str) -> None:
    """A multipart upload of two parts of 1 MiB each (the first below S3's 5 MiB least)."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    parts = upload_parts(s3, bucket, "small", upload, [data(MIB), data(MIB)])
    s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=upload, MultipartUpload={"Parts": parts})


def test_a_part_below_5_mib_that_is_not_the_last_is_refused(seaweedfs: SeaweedFS, bucket: str) -> None:
    with pytest.raises(ClientError) as refused:
        complete_with_small_parts(seaweedfs.client, bucket)
    assert refused.value.response["Error"]["Code"] == "EntityTooSmall"


def test_list_and_abort_multipart_uploads(seaweedfs: SeaweedFS, bucket: str) -> None:
    s3 = seaweedfs.client
    uploads = {key: s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for key in ("x/1", "x/2", "y/3")}
    s3.upload_part(Bucket=bucket, Key="x/1", UploadId=uploads["x/1"], PartNumber=1, Body=b"part")
    # SeaweedFS lists them in the order of their ids (AWS: of their keys), and pages them by UploadIdMarker alone.
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((upload["Key"], upload["UploadId"]) for upload in listed) == sorted(uploads.items())
    under_x = s3.list_multipart_uploads(Bucket=bucket, Prefix="x/")["Uploads"]
    assert sorted(upload["Key"] for upload in under_x) == ["x/1", "x/2"]
    s3.abort_multipart_upload(Bucket=bucket, Key="x/1", UploadId=uploads["x/1"])
    remaining = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert sorted(upload["Key"] for upload in remaining) == ["x/2", "y/3"]
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="x/1", UploadId=uploads["x/1"])
    assert gone.value.response["Error"]["Code"] == "NoSuchUpload"
    assert seaweedfs.keys(bucket) == []


def test_put_if_none_match_refuses_to_replace(seaweedfs: SeaweedFS, bucket: str) -> None:
    s3 = seaweedfs.client
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


def test_put_if_match_replaces_only_the_version_named(seaweedfs: SeaweedFS, bucket: str) -> None:
    s3 = seaweedfs.client
    etag = s3.put_object(Bucket=bucket, Key="doc", Body=b"v1")["ETag"]
    replaced = s3.put_object(Bucket=bucket, Key="doc", Body=b"v2", IfMatch=etag)["ETag"]
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="doc", Body=b"v3", IfMatch=etag)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="doc", IfMatch=replaced)["Body"].read() == b"v2"


def test_a_process_with_s3_env_reaches_the_bucket(s3_env: dict[str, str], bucket: str) -> None:
    script = (
        "import sys, botocore.session\n"
        "s3 = botocore.session.get_session().create_client('s3')\n"
        "s3.put_object(Bucket=sys.argv[1], Key='from-env', Body=b'hello')\n"
        "print(s3.get_object(Bucket=sys.argv[1], Key='from-env')['Body'].read().decode())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, bucket], env=s3_env, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello\n", "")


def test_aiobotocore_client(seaweedfs: SeaweedFS, bucket: str) -> None:
    async def round_trip() -> bytes:
        session = aiobotocore.session.get_session()
        async with session.create_client(
            "s3",
            endpoint_url=seaweedfs.endpoint,
            region_name=seaweedfs.region,
            aws_access_key_id=seaweedfs.access_key,
            aws_secret_access_key=seaweedfs.secret_key,
        ) as s3:
            await s3.put_object(Bucket=bucket, Key="async", Body=b"async body")
            answer = await s3.get_object(Bucket=bucket, Key="async", Range="bytes=6-")
            async with answer["Body"] as body:
                return await body.read()

    assert asyncio.run(round_trip()) == b"body"
