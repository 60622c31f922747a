"""About the service: the ping, and the API's own documents."""

from __future__ import annotations

import tornado.web

from tornado_records.handlers.base import BaseHandler


class PingHandler(BaseHandler):
    """`GET|HEAD /ping`: 204 while the service is up."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_status(204)

    head = get


class DocumentHandler(BaseHandler):
    """A document read once at start: the OpenAPI document (JSON and YAML) and the page that shows it."""

    def initialize(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type

    def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        self.write(self.body)

    head = get


class FileHandler(BaseHandler, tornado.web.StaticFileHandler):
    """Files shipped with the service (the Scalar bundle): Tornado's caching and Range support, our JSON errors."""
