"""The Scalar bundle shipped in static/scalar/ is the published npm package's, byte for byte, at the version that
static/package.json pins; its licence and its one-line source note say so.

npm's own copy comes from `npm ci --prefix static --ignore-scripts` (as .ci/run does), which checks the package's
tarball against the sha512 in static/package-lock.json. Without that copy the comparison is skipped, or fails when
RECORDS_TEST_REQUIRE_ALL is set (as .ci/run sets it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.paths import REPO

STATIC = REPO / "static"
VENDORED = STATIC / "scalar"
NPM = STATIC / "node_modules" / "@scalar"


def pinned_version() -> str:
    """The version of @scalar/api-reference that static/package.json pins."""
    return json.loads((STATIC / "package.json").read_text())["dependencies"]["@scalar/api-reference"]


def npm_package(name: str) -> Path:
    """npm's installed copy of @scalar/`name`; skips (fails with RECORDS_TEST_REQUIRE_ALL) where it is missing."""
    path = NPM / name
    if not (path / "package.json").exists():
        message = f"{path} is missing (npm ci --prefix static --ignore-scripts)"
        if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
            pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
        pytest.skip(message)
    return path


def test_the_pin_the_lock_and_the_source_note_agree():
    lock = json.loads((STATIC / "package-lock.json").read_text())["packages"]["node_modules/@scalar/api-reference"]
    version = pinned_version()
    assert lock["version"] == version
    assert lock["license"] == "MIT"
    # The lock carries the tarball's integrity, so that npm ci refuses any other bytes.
    assert lock["resolved"] == f"https://registry.npmjs.org/@scalar/api-reference/-/api-reference-{version}.tgz"
    assert lock["integrity"].startswith("sha512-")
    source = (VENDORED / "SOURCE").read_text()
    assert source.startswith(f"@scalar/api-reference {version} (MIT, LICENSE): dist/browser/standalone.js of ")
    assert lock["resolved"] in source and lock["integrity"] in source
    assert (VENDORED / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2023-present Scalar\n")


def test_the_vendored_bundle_is_the_published_package():
    package = npm_package("api-reference")
    assert json.loads((package / "package.json").read_text())["version"] == pinned_version()
    published = (package / "dist" / "browser" / "standalone.js").read_bytes()
    assert (VENDORED / "standalone.js").read_bytes() == published


def test_the_vendored_licence_is_scalars():
    # @scalar/api-reference names MIT in its package.json but ships no licence file; its dependency
    # @scalar/api-client, bundled into standalone.js, ships Scalar's, which is the one vendored.
    reference = npm_package("api-reference")
    assert json.loads((reference / "package.json").read_text())["license"] == "MIT"
    client = npm_package("api-client")
    assert json.loads((client / "package.json").read_text())["license"] == "MIT"
    assert (VENDORED / "LICENSE").read_bytes() == (client / "LICENSE").read_bytes()
