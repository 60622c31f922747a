"""The real components a test drives (curl, nginx, ffmpeg, chromium, PostgreSQL...): where one is missing the test
skips, but fails when RECORDS_TEST_REQUIRE_ALL is set (as .ci/run sets it), so that CI never skips one silently.
Outside pytest (bench/), a missing component raises pytest's Skipped or Failed exception all the same."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn


def missing(message: str) -> NoReturn:
    """Skip the test for a missing real component, but fail it when RECORDS_TEST_REQUIRE_ALL is set."""
    import pytest

    if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
        pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
    pytest.skip(message)


def require(program: str) -> str:
    """The path of a real component (curl, nginx, ffmpeg, chromium); skips the test where it is missing, but
    fails it when RECORDS_TEST_REQUIRE_ALL is set (see `missing`)."""
    path = shutil.which(program)
    if path is None:
        missing(f"{program} is not installed")
    return path


def require_root(why: str) -> None:
    """Skip the test unless it runs as root (CI does); fail it instead when RECORDS_TEST_REQUIRE_ALL is set."""
    if os.geteuid() != 0:
        missing(f"{why} needs root")
