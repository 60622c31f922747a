"""The reference of the S3 figures: raw botocore against the same bucket the service writes to, a 1 GiB upload and
download done the way AWS's own transfer manager (boto3's s3transfer) does them with its default TransferConfig:
8 MiB parts (multipart_chunksize), 10 of them in flight (max_concurrency), ranged GETs of 8 MiB for a download.

Written on botocore itself rather than with boto3: the service talks botocore, so the reference measures what the
same client library gets from the store with parallel parts, and the bench needs no package the service does not
install. The client is configured as the service's is (the AWS variables that Bench.seaweedfs sets, standard retries,
a pool of 64 connections).
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from harness import children, process_cpu, program_name
from table import MB, MiB

PART = 8 * MiB  # s3transfer's default multipart_chunksize
THREADS = 10  # s3transfer's default max_concurrency


def s3_client() -> Any:
    """A botocore S3 client from the AWS variables (the bench's SeaweedFS)."""
    import botocore.config
    import botocore.session

    config = botocore.config.Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 4})
    return botocore.session.get_session().create_client("s3", config=config)


def bucket_of(url: str) -> str:
    """The bucket of an s3://bucket/prefix URL."""
    return urllib.parse.urlsplit(url).netloc


def put_parts(client: Any, bucket: str, key: str, path: Path) -> float:
    """Upload the file as the object `key` in parts of PART bytes, THREADS at a time; MB/s from the first request to
    the completed object."""
    size = path.stat().st_size
    began = time.monotonic()
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    with open(path, "rb") as file, concurrent.futures.ThreadPoolExecutor(THREADS) as pool:

        def part(number: int) -> dict:
            data = os.pread(file.fileno(), PART, (number - 1) * PART)
            answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
            return {"PartNumber": number, "ETag": answer["ETag"]}

        parts = list(pool.map(part, range(1, -(-size // PART) + 1)))
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    return size / (time.monotonic() - began) / MB


def get_ranges(client: Any, bucket: str, key: str, size: int) -> float:
    """Download the object in ranged GETs of PART bytes, THREADS at a time, the bytes read and dropped; MB/s."""
    began = time.monotonic()

    def part(at: int) -> int:
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={at}-{min(at + PART, size) - 1}")["Body"]
        got = 0
        while data := body.read(MiB):
            got += len(data)
        return got

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        got = sum(pool.map(part, range(0, size, PART)))
    if got != size:
        raise RuntimeError(f"botocore read {got} bytes of {key}, expected {size}")
    return size / (time.monotonic() - began) / MB


def get_stream(client: Any, bucket: str, key: str, size: int) -> float:
    """Download the object in one GET, read a MiB at a time; MB/s."""
    began = time.monotonic()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    got = 0
    while data := body.read(MiB):
        got += len(data)
    if got != size:
        raise RuntimeError(f"botocore read {got} bytes of {key}, expected {size}")
    return size / (time.monotonic() - began) / MB


def store_cpu() -> float:
    """The CPU seconds used so far by the bench's SeaweedFS (its `weed`, a child of this process)."""
    return sum(process_cpu(pid) for pid in children(os.getpid()) if program_name(pid) == "weed")


def cpu_of(measure: Callable[[], float], *pids: int) -> tuple[float, float]:
    """What `measure` returns, and the CPU seconds spent meanwhile by this process, the children it waited for (curl),
    the processes `pids` and SeaweedFS: the work of a transfer on the machine, which the others' load moves less than
    its rate."""

    def spent() -> float:
        children_time = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (
            time.process_time() + children_time.ru_utime + children_time.ru_stime + store_cpu()
            + sum(process_cpu(pid) for pid in pids)
        )  # fmt: skip

    before = spent()
    value = measure()
    return value, spent() - before
