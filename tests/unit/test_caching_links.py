"""http/caching.py: a page's links to its own files get the files' versions; nothing else in the page changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tornado_records.http.caching import body_etag, content_version, versioned_links


def test_links_to_files_under_the_root_name_their_version(tmp_path: Path) -> None:
    (tmp_path / "vendor").mkdir()
    (tmp_path / "app.js").write_bytes(b"one")
    (tmp_path / "vendor" / "lib.min.js").write_bytes(b"two")
    page = (
        b'<link rel="stylesheet" href="/room/missing.css"><script src="/room/app.js" defer></script>'
        b'<script src="/room/vendor/lib.min.js"></script><a href="/openapi">API</a><a href="#">top</a>'
        b'<script src="/other/app.js"></script><script src="/room/../app.js"></script>'
    )
    one = content_version(str(tmp_path / "app.js"))
    two = content_version(str(tmp_path / "vendor" / "lib.min.js"))
    assert one == hashlib.sha256(b"one").hexdigest()[:20] and two != one
    assert versioned_links(page, "/room/", tmp_path) == (
        b'<link rel="stylesheet" href="/room/missing.css">'  # no such file: as it was
        b'<script src="/room/app.js?v=' + one.encode() + b'" defer></script>'
        b'<script src="/room/vendor/lib.min.js?v=' + two.encode() + b'"></script><a href="/openapi">API</a>'
        b'<a href="#">top</a><script src="/other/app.js"></script><script src="/room/../app.js"></script>'
    )


def test_a_body_etag_is_strong_and_names_the_bytes() -> None:
    assert body_etag(b"a") == body_etag(b"a") != body_etag(b"b")
    assert body_etag(b"a").startswith('"') and body_etag(b"a").endswith('"') and "W/" not in body_etag(b"a")
