"""What a cache (a browser's, a CDN's, a proxy's) may keep of each answer (RFC 9111), named once: every GET and HEAD
of the service says one of these in `Cache-Control`, and docs/api.md ("Caching") says which and why.

- REVALIDATE (`no-cache`): kept, but asked about again before each use, with the answer's validator (`ETag`,
  `Last-Modified`): a 304 when nothing changed. Records, listings, parts, peaks, documents, unversioned files.
- NEVER (`no-store`): not kept at all. What is only true at the moment it is said: event and live streams, metrics,
  the ping, uploads in flight, errors.
- IMMUTABLE (a year, `immutable`): a file asked for by a URL that names its content (`?v=<version>`, as the pages
  the service renders link them): another content has another URL, so a kept copy is never stale.

Also the versions themselves (a hash of a file's bytes) and the pages whose links carry them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

REVALIDATE = "no-cache"
NEVER = "no-store"
IMMUTABLE = "public, max-age=31536000, immutable"

VERSION_ARGUMENT = "v"  # the query argument naming a file's version: /room/room.js?v=<version>

_LINK = re.compile(rb'(?P<attribute>\b(?:src|href)=")(?P<prefix>/[a-z]+/)(?P<name>[A-Za-z0-9_./-]+)"')


@functools.cache
def content_version(path: str) -> str:
    """The version of a shipped file: the start of the SHA-256 of its bytes (read once a process, as Tornado keeps
    its static files' versions; a new version comes with a new release, and so a restart)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def body_etag(body: bytes) -> str:
    """A strong entity tag for exactly these bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def versioned_links(page: bytes, prefix: str, root: Path) -> bytes:
    """The HTML `page` with each `src="<prefix>name"` and `href="<prefix>name"` of a file under `root` given that
    file's version (`<prefix>name?v=<version>`): what the page loads can then be kept for good, and a release that
    changes a file changes the link to it. Links to anything else are left as they are."""

    def versioned(match: re.Match[bytes]) -> bytes:
        name = match["name"].decode()
        path = root / name
        if match["prefix"].decode() != prefix or ".." in name.split("/") or not path.is_file():
            return match[0]
        version = content_version(str(path))
        return match["attribute"] + f'{prefix}{name}?{VERSION_ARGUMENT}={version}"'.encode()

    return _LINK.sub(versioned, page)
