"""The listening room: the page at `/` and its files under `/room/`, as shipped in static/room/.

The page is static (HTML, CSS, plain JavaScript, no build step); it talks to the service only through the public
HTTP API and `/sse`, like any client. Its Content-Security-Policy lets it load nothing from anywhere but here.
"""

from __future__ import annotations

from tornado_records.handlers.meta import FileHandler

# Everything from this service only: no CDN, no inline code, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class RoomHandler(FileHandler):
    """`GET|HEAD /` (the page, static/room/index.html) and `/room/{file}` (its scripts, styles and vendored files):
    Tornado's validators and Range support, our JSON errors, and a policy that keeps the page to this service."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")  # revalidated (304) each time: a new version shows at once
