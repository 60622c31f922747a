"""`GET /room/notices.json`: what the listening room's page tells whoever opens it about the service itself, such as
writes open to the network with no token (the same lines the start logged as warnings)."""

from __future__ import annotations

from tornado_records.http.caching import NEVER
from tornado_records.handlers.base import BaseHandler


class NoticesHandler(BaseHandler):
    """`GET|HEAD /room/notices.json`: `{"notices": ["...", ...]}`, each one line of text (none: an empty list)."""

    def initialize(self, notices: list[str]) -> None:
        self.notices = notices

    def get(self) -> None:
        self.set_header("Cache-Control", NEVER)
        self.write({"notices": self.notices})

    head = get
