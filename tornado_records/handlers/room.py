"""The listening room: the page at `/` and its files under `/room/`, as shipped in static/room/.

The page is static (HTML, CSS, plain JavaScript, no build step); it talks to the service only through the public
HTTP API and `/sse`, like any client. Its Content-Security-Policy lets it load nothing from anywhere but here.
The page at `/` is served with links that name each file's version (`/room/room.js?v=...`, http/caching.py), so
that its files are kept for good and the page itself, revalidated at each use, shows a new release at once.
"""

from __future__ import annotations

from tornado_records.handlers.meta import DocumentHandler, FileHandler

# Everything from this service only: no CDN, no inline code, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}


class RoomPageHandler(DocumentHandler):
    """`GET|HEAD /`: the page (static/room/index.html, its links versioned), with its ETag, revalidated."""


class RoomHandler(FileHandler):
    """`GET|HEAD /room/{file}` (the page's scripts, styles and vendored files): Tornado's validators and Range
    support, our JSON errors, and a policy that keeps what they show to this service."""

    def set_extra_headers(self, path: str) -> None:
        super().set_extra_headers(path)
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
