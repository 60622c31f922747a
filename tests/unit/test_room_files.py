"""The listening room's files: the vendored ones are the npm packages' own, and the page loads only its own files,
with no code inline."""

from __future__ import annotations

import html.parser
import json
import os

import pytest

from support.paths import REPO

VENDORED = REPO / "static" / "room" / "vendor"
TUS_PACKAGE = REPO / "tests" / "clients" / "node_modules" / "tus-js-client"


def test_vendored_tus_js_client_is_the_npm_package_file() -> None:
    if not (TUS_PACKAGE / "dist" / "tus.min.js").exists():
        message = "tus-js-client is not installed (npm ci --prefix tests/clients --ignore-scripts)"
        if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
            pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
        pytest.skip(message)
    assert (VENDORED / "tus.min.js").read_bytes() == (TUS_PACKAGE / "dist" / "tus.min.js").read_bytes()
    assert (VENDORED / "LICENSE").read_bytes() == (TUS_PACKAGE / "LICENSE").read_bytes()
    version = json.loads((TUS_PACKAGE / "package.json").read_text())["version"]
    assert f"**{version}**" in (VENDORED / "README.md").read_text()


ROOM = REPO / "static" / "room"


class Page(html.parser.HTMLParser):
    """What index.html loads (scripts, styles) and any code written inline, which the room's Content-Security-Policy
    (handlers/room.py: `default-src 'self'`, no 'unsafe-inline') would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.inline += [f"{tag} {name}" for name in attributes if name == "style" or name.startswith("on")]
        if tag == "script":
            self._in_script = True
            self.scripts.append(attributes.get("src") or "")
        elif tag == "style":
            self.inline.append("style element")
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.styles.append(attributes["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script body")


def test_the_page_loads_its_own_files_in_order_and_nothing_inline() -> None:
    page = Page()
    page.feed((ROOM / "index.html").read_text())
    assert page.inline == []
    # waveform.js and clips.js first: room.js uses them
    assert page.scripts == ["/room/vendor/tus.min.js", "/room/waveform.js", "/room/clips.js", "/room/room.js"]
    assert page.styles == ["/room/room.css"]
    for path in page.scripts + page.styles:
        assert (ROOM / path.removeprefix("/room/")).is_file(), path
    for script in ("room.js", "waveform.js", "clips.js"):  # inline styles set as attributes are refused too; el.style.x is not
        source = (ROOM / script).read_text()
        assert "setAttribute('style'" not in source and "innerHTML" not in source and "eval(" not in source, script
