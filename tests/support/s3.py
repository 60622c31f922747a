"""The objects that the service under test keeps in SeaweedFS's S3, under its prefix."""

from __future__ import annotations

PREFIX = "records"


def objects(seaweedfs, bucket: str) -> dict[str, bytes]:  # noqa: ANN001
    """The objects under the service's prefix, with their bytes."""
    client = seaweedfs.client
    return {
        key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in seaweedfs.keys(bucket, PREFIX + "/")
    }
