"""Settings as config.build_config reads them (flag, then environment, then default; bad values refused), and as the
docs list them."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from support.paths import REPO
from tornado_records.config import SETTINGS, ConfigError, build_config
from tornado_records.retention import sweep_interval

DAY = datetime.timedelta(days=1)


def test_trusted_proxies_flag_wins_and_bad_values_fail(tmp_path: Path) -> None:
    config = build_config({"trusted_proxies": "127.0.0.1,10.0.0.0/8"}, {"RECORDS_TRUSTED_PROXIES": "::1"})
    assert [str(n) for n in config.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"RECORDS_TRUSTED_PROXIES: 'localhost' is not an IP address"):
        build_config({}, {"RECORDS_TRUSTED_PROXIES": "127.0.0.1, localhost"})


def test_max_subscribers_default_is_above_issue_8s_10000_and_bad_values_fail() -> None:
    assert build_config({}, {}).max_subscribers > 10_000
    assert build_config({}, {"RECORDS_MAX_SUBSCRIBERS": "7"}).max_subscribers == 7
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(ConfigError, match="--max-subscribers"):
            build_config({"max_subscribers": bad}, {})


def test_readme_settings_table_lists_every_setting():
    readme = (REPO / "docs" / "running.md").read_text()  # the settings table
    for setting in SETTINGS:
        assert f"| `{setting.flag}` | `{setting.env_var}` |" in readme


def test_the_sweep_interval_is_a_hundredth_of_the_retention_from_a_second_to_an_hour() -> None:
    assert sweep_interval(datetime.timedelta(days=90)) == 3600
    assert sweep_interval(datetime.timedelta(hours=12)) == 432
    assert sweep_interval(datetime.timedelta(seconds=30)) == 1


def test_the_setting_from_flag_then_environment_then_default() -> None:
    assert build_config({}, {}).retention is None
    assert build_config({}, {"RECORDS_RETENTION": "12h"}).retention == datetime.timedelta(hours=12)
    assert build_config({"retention": "90d"}, {"RECORDS_RETENTION": "12h"}).retention == 90 * DAY
    assert build_config({"retention": "2w"}, {}).retention == 14 * DAY


def test_the_default_host_is_the_loopback() -> None:
    assert build_config({}, {}).host == "127.0.0.1"
    assert build_config({}, {"RECORDS_HOST": "0.0.0.0"}).host == "0.0.0.0"


def test_the_s3_endpoint_comes_from_the_flag_then_aws_endpoint_url_s3_then_aws_endpoint_url(monkeypatch) -> None:
    """What --help and docs/running.md say of --s3-endpoint, as botocore resolves it for the service's client."""
    from tornado_records.storage.s3 import ObjectBlobs

    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://any.example:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3.example:2")

    def endpoint(flag: str | None) -> str:
        blobs = ObjectBlobs("s3://bucket/prefix", flag)
        try:
            return blobs.client.meta.endpoint_url
        finally:
            blobs.close()

    assert endpoint("http://flag.example:3") == "http://flag.example:3"
    assert endpoint(None) == "http://s3.example:2"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert endpoint(None) == "http://any.example:1"


def test_shutdown_grace_from_flag_then_environment_then_default() -> None:
    assert build_config({"shutdown_grace": "2.5"}, {"RECORDS_SHUTDOWN_GRACE": "9"}).shutdown_grace == 2.5
    assert build_config({}, {"RECORDS_SHUTDOWN_GRACE": "9"}).shutdown_grace == 9.0
    assert build_config({}, {}).shutdown_grace == 30.0


def test_sse_keepalive_setting_from_flag_then_environment_then_default() -> None:
    assert build_config({"sse_keepalive": "0.5"}, {"RECORDS_SSE_KEEPALIVE": "2"}).sse_keepalive == 0.5
    assert build_config({}, {"RECORDS_SSE_KEEPALIVE": "2"}).sse_keepalive == 2.0
    assert build_config({}, {}).sse_keepalive == 15.0


def test_dead_air_from_flag_then_environment_then_default_and_0_is_off() -> None:
    assert build_config({}, {}).dead_air == 15.0
    assert build_config({}, {"RECORDS_DEAD_AIR": "0"}).dead_air == 0.0
    assert build_config({"dead_air": "4.5"}, {"RECORDS_DEAD_AIR": "0"}).dead_air == 4.5
    for bad in ("-1", "soon", "inf", ""):
        with pytest.raises(ConfigError, match="--dead-air"):
            build_config({"dead_air": bad}, {})
