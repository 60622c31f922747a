"""Settings: declared once, read from flags and the environment, validated into a frozen Config. The parsers of
their values are in values.py."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path
from typing import Any, Callable

from tornado_records.values import (  # noqa: F401 (the parsers, and names others import from here)
    ConfigError,
    Index,
    Network,
    Secret,
    parse_accel_prefix,
    parse_blobs,
    parse_bool,
    parse_count,
    parse_duration,
    parse_endpoint,
    parse_event_types,
    parse_expiry,
    parse_index,
    parse_level,
    parse_log_level,
    parse_networks,
    parse_port,
    parse_public_url,
    parse_seconds,
    parse_seconds_or_off,
    parse_size,
    parse_timezone,
    parse_token_file,
    parse_webhook_secret,
    parse_webhooks,
    parse_workers,
    read_secret_file,
    MAX_DURATION_DAYS,
    WEBHOOK_KEY_BYTES,
    WEBHOOK_SECRET_PREFIX,
)

@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its flag, its environment variable, its default (as text) and what it means."""

    name: str
    default: str
    help: str
    parse: Callable[[str], Any]
    env: str | None = None
    flag_only: bool = False  # a switch such as --debug, given without a value
    repeatable: bool = False  # a flag that may be given several times (its values are joined with commas)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return self.env or "RECORDS_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "host",
        "127.0.0.1",
        "address to listen on: this machine only by default (behind nginx that is all it needs); 0.0.0.0 or another "
        "address opens it to the network, which wants --token-file",
        str.strip,
    ),
    Setting("port", "10700", "TCP port to listen on", parse_port),
    Setting("data_dir", "data", "directory that holds the index, the recordings and uploads in flight", Path),
    Setting(
        "index",
        "sqlite",
        "where the index of records and the event log are: sqlite (records.sqlite3 in the data directory), or a "
        "postgresql://user:password@host/database URL, which several processes may share",
        parse_index,
    ),
    Setting(
        "processes",
        "1",
        "processes serving the data directory together, to use more than one core: past 1, the service binds its "
        "port, forks that many processes sharing the index (SQLite or PostgreSQL), restarts one that dies, and ends "
        "them all on SIGTERM or SIGINT; the per-process bounds (--max-connections, --max-subscribers, "
        "--max-client-streams) are each process's",
        parse_count,
    ),
    Setting(
        "blobs",
        "",
        "where the recordings are kept: empty for blobs/ in the data directory, or s3://bucket/prefix in an "
        "S3-compatible object store (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        parse_blobs,
    ),
    Setting(
        "s3_endpoint",
        "",
        "the object store's URL (such as http://127.0.0.1:8333) for --blobs s3://...; empty: AWS_ENDPOINT_URL_S3, "
        "else AWS_ENDPOINT_URL, else AWS itself",
        parse_endpoint,
    ),
    Setting(
        "max_body_size",
        "32G",
        "largest upload accepted, with units (K, M, G, T; binary); the default holds a day of 24-bit 48 kHz stereo WAV",
        parse_size,
    ),
    Setting(
        "accel_redirect",
        "",
        "nginx internal location of the data directory's blobs/ (such as /_blobs/): downloads are answered with "
        "X-Accel-Redirect for nginx to send; empty: the service sends them",
        parse_accel_prefix,
    ),
    Setting("sse_keepalive", "15", "seconds between keepalive comments on /sse event streams", parse_seconds),
    Setting(
        "max_subscribers",
        "20000",
        "most /sse event streams open at once; past it, 503 with Retry-After",
        parse_count,
    ),
    Setting(
        "token_file",
        "",
        "file holding a secret (read once at start): PUT and DELETE then need `Authorization: Bearer <secret>`; "
        "empty: anyone may write",
        parse_token_file,
    ),
    Setting(
        "trusted_proxies",
        "",
        "comma-separated addresses or networks (CIDR) of proxies whose X-Forwarded-For and X-Real-IP are believed "
        "for the client address in the log, and X-Forwarded-Proto and X-Forwarded-Host for the links of feeds "
        "(without --public-url); empty: none",
        parse_networks,
    ),
    Setting(
        "public_url",
        "",
        "the service's public base URL (such as https://radio.example or https://radio.example/archive), which "
        "the absolute links of the podcast feeds start with; empty: the request's scheme and Host (or, from "
        "--trusted-proxies, X-Forwarded-Proto and X-Forwarded-Host)",
        parse_public_url,
    ),
    Setting(
        "timezone",
        "UTC",
        "the IANA time zone (such as Europe/Berlin) of the naive starts of the events whose details name none, "
        "in which the podcast feeds give their dates",
        parse_timezone,
    ),
    Setting(
        "header_timeout",
        "10",
        "seconds a client has to send a request's line and headers (and that a kept-alive connection may wait for "
        "its next request) before the connection is closed",
        parse_seconds,
    ),
    Setting(
        "max_connections",
        "10000",
        "most client connections open at once; past it, a new one is answered 503 (JSON, Retry-After) and closed",
        parse_count,
    ),
    Setting(
        "max_client_streams",
        "100",
        "most /sse and /live streams one client address holds open at once (behind a proxy, set --trusted-proxies "
        "so that each client has its own address); past it, 429 with Retry-After",
        parse_count,
    ),
    Setting(
        "max_resumable_uploads",
        "1000",
        "most resumable uploads (tus, IETF) in progress at once; past it, a new one is refused with 507",
        parse_count,
    ),
    Setting(
        "upload_idle_timeout",
        "60",
        "seconds a request body (an upload's above all) may go without a byte before it is ended as broken (a plain "
        "upload is then discarded; an append keeps what arrived)",
        parse_seconds,
    ),
    Setting(
        "append_takeover",
        "5",
        "seconds a live recorder (an append request) may bring no byte before a standby recorder appending to the "
        "same record takes over (the old request then ends, keeping all it brought); also how long a request for a "
        "resumable upload waits for another process sharing the index to let go of it",
        parse_seconds,
    ),
    Setting(
        "append_join_interval",
        "3",
        "seconds between joins of what a live recorder (an append request) brought to its record, while bytes arrive",
        parse_seconds,
    ),
    Setting(
        "resumable_sync_interval",
        "3",
        "seconds between the moments a resumable upload's bytes are made durable and its offset recorded, while "
        "bytes arrive",
        parse_seconds,
    ),
    Setting(
        "upload_expiry",
        "24h",
        "how long a resumable upload (tus, IETF) may wait for its next bytes before it is removed with what it "
        "received (such as 24h, 30m; units s, m, h, d, w); each request that brings bytes starts it again",
        parse_expiry,
    ),
    Setting(
        "shutdown_grace",
        "30",
        "seconds that uploads and downloads in flight get to finish after SIGTERM or SIGINT, before they are cut off",
        parse_seconds,
    ),
    Setting(
        "retention",
        "",
        "delete the records whose start is older than this (such as 90d, 12h; units s, m, h, d, w), checked at start "
        "and then every hundredth of it (at most hourly); empty: keep every record",
        parse_duration,
    ),
    Setting(
        "webhook",
        "",
        "URL to POST every event to, as JSON (what /sse sends), signed as Standard Webhooks says with "
        "--webhook-secret-file, in order, retried until it answers 2xx (for up to 24 h); repeat the flag for several "
        "URLs (the environment variable takes them comma-separated); empty: none",
        parse_webhooks,
        env="RECORDS_WEBHOOKS",
        repeatable=True,
    ),
    Setting(
        "webhook_secret_file",
        "",
        "file holding the Standard Webhooks secret that signs each webhook delivery (whsec_ and base64 of at least 24 "
        "random bytes; read once at start); needed with --webhook",
        parse_webhook_secret,
    ),
    Setting(
        "webhook_events",
        "all",
        "comma-separated types of the events POSTed to the webhooks (such as record-created,record-deleted); all: "
        "every type",
        parse_event_types,
    ),
    Setting(
        "analysis_workers",
        "1",
        "most audio analyses (duration, loudness, silences, waveform; by ffmpeg, at the lowest CPU priority) running "
        "at once, in the background after each upload; 0: none (records stay pending)",
        parse_workers,
    ),
    Setting(
        "clip_workers",
        "4",
        "most clips (GET .../clip: a range of a record, cut by ffmpeg without re-encoding) being cut at once; one "
        "more is answered 503 with Retry-After; 0: no clips",
        parse_workers,
    ),
    Setting(
        "silence_threshold",
        "-50",
        "level in dBFS below which the analysis, and the live dead-air watch (--dead-air), count audio as silence",
        parse_level,
    ),
    Setting(
        "silence_min",
        "2",
        "seconds of silence, at least, that the analysis reports as a silence",
        parse_seconds,
    ),
    Setting(
        "dead_air",
        "15",
        "seconds of silence (below --silence-threshold) in a live recording (an append request) after which /sse "
        "carries `dead-air`, while it still records, and `dead-air-over` once sound comes back; each live recording "
        "is decoded as it arrives by one ffmpeg at the lowest CPU priority; 0: off",
        parse_seconds_or_off,
    ),
    Setting("log_level", "info", "debug, info, warning or error", parse_log_level),
    Setting("debug", "false", "show tracebacks in error responses and log at debug level", parse_bool, flag_only=True),
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated settings of one running service (fields as SETTINGS names them)."""

    host: str
    port: int
    data_dir: Path
    index: Index
    processes: int
    blobs: str
    s3_endpoint: str
    max_body_size: int
    accel_redirect: str
    sse_keepalive: float
    max_subscribers: int
    token_file: Secret | None
    trusted_proxies: tuple[Network, ...]
    public_url: str
    timezone: str
    header_timeout: float
    max_connections: int
    max_client_streams: int
    max_resumable_uploads: int
    upload_idle_timeout: float
    append_takeover: float
    append_join_interval: float
    resumable_sync_interval: float
    upload_expiry: datetime.timedelta
    shutdown_grace: float
    retention: datetime.timedelta | None
    webhook: tuple[str, ...]
    webhook_secret_file: Secret | None
    webhook_events: frozenset[str] | None
    analysis_workers: int
    clip_workers: int
    silence_threshold: float
    silence_min: float
    dead_air: float
    log_level: str
    debug: bool

    @property
    def logging_level(self) -> int:
        return logging.DEBUG if self.debug else getattr(logging, self.log_level)


def build_config(given: dict[str, str | list[str] | None], environ: dict[str, str]) -> Config:
    """Config from flag values (None where a flag was not given; a list for a repeatable one), then the environment,
    then the defaults."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw, source = given.get(setting.name), setting.flag
        if isinstance(raw, list):
            raw = ",".join(raw)
        if raw is None and setting.env_var in environ:
            raw, source = environ[setting.env_var], setting.env_var
        if raw is None:
            raw, source = setting.default, "default of " + setting.flag
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if values["webhook"] and values["webhook_secret_file"] is None:
        raise ConfigError(
            "--webhook needs --webhook-secret-file (RECORDS_WEBHOOK_SECRET_FILE): deliveries are signed, so that "
            "their receivers can tell them from forgeries"
        )
    return Config(**values)
