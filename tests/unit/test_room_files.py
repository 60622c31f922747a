"""The listening room's vendored files are the npm packages' own."""

from __future__ import annotations

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
