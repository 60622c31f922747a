"""About the service: the ping, the metrics, and the API's own documents."""

from __future__ import annotations

import asyncio

import tornado.web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from tornado_records.handlers.base import BaseHandler


class PingHandler(BaseHandler):
    """`GET|HEAD /ping`: 204 while the service is up."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_status(204)

    head = get


class MetricsHandler(BaseHandler):
    """`GET|HEAD /metrics`: the service's metrics in the Prometheus text format."""

    async def get(self) -> None:
        body = await asyncio.get_running_loop().run_in_executor(None, self.settings["metrics"].exposition)
        self.set_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
        self.set_header("Cache-Control", "no-store")
        self.write(body)

    head = get


class DocumentHandler(BaseHandler):
    """A document read once at start: the OpenAPI document (JSON and YAML) and the page that shows it."""

    def initialize(self, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        for name, value in self.headers.items():
            self.set_header(name, value)
        self.write(self.body)

    head = get


class FileHandler(BaseHandler, tornado.web.StaticFileHandler):
    """Files shipped with the service (the Scalar bundle): Tornado's caching and Range support, our JSON errors."""
