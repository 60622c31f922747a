"""About the service: the ping, the metrics, and the API's own documents."""

from __future__ import annotations

import asyncio
import functools

import tornado.web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from tornado_records.handlers.base import BaseHandler
from tornado_records.http.caching import IMMUTABLE, NEVER, REVALIDATE, VERSION_ARGUMENT, body_etag, content_version


class PingHandler(BaseHandler):
    """`GET|HEAD /ping`: 204 while the service is up."""

    def get(self) -> None:
        self.set_header("Cache-Control", NEVER)
        self.set_status(204)

    head = get


class MetricsHandler(BaseHandler):
    """`GET|HEAD /metrics`: the service's metrics in the Prometheus text format."""

    async def get(self) -> None:
        body = await asyncio.get_running_loop().run_in_executor(None, self.settings["metrics"].exposition)
        self.set_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
        self.set_header("Cache-Control", NEVER)
        self.write(body)

    head = get


class DocumentHandler(BaseHandler):
    """A document read once at start: the OpenAPI document (JSON and YAML) and the pages (the room's, the one that
    shows the document). Revalidated at each use (its ETag, a 304): a new release changes it."""

    def initialize(self, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        for name, value in self.headers.items():
            self.set_header(name, value)
        self.set_header("Cache-Control", REVALIDATE)
        self.set_header("ETag", document_etag(self.body))
        if self.check_etag_header():
            self.set_status(304)
            return
        self.write(self.body)

    head = get


@functools.lru_cache(maxsize=16)
def document_etag(body: bytes) -> str:
    """The ETag of a document, hashed once (a bytes object keeps its own hash, so the look-up costs nothing)."""
    return body_etag(body)


class FileHandler(BaseHandler, tornado.web.StaticFileHandler):
    """Files shipped with the service (the room's, the Scalar bundle): Tornado's validators and Range support, our
    JSON errors. Kept for good when asked for by their current version (`?v=`, as the pages link them), else
    revalidated at each use."""

    def compute_etag(self) -> str | None:
        return f'"{content_version(self.absolute_path)}"'  # the file's, not BaseHandler's none

    def get_cache_time(self, path: str, modified: object, mime_type: str) -> int:
        return 0  # no max-age or Expires of Tornado's own: set_extra_headers says what may be cached

    def set_extra_headers(self, path: str) -> None:
        current = self.get_query_argument(VERSION_ARGUMENT, None) == content_version(self.absolute_path)
        self.set_header("Cache-Control", IMMUTABLE if current else REVALIDATE)
