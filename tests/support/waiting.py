"""Waiting for a condition rather than for a fixed time."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def wait_until(condition, timeout: float = 10.0):  # noqa: ANN001, ANN201
    """Poll `condition()` until it is true or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


async def eventually(condition, timeout: float = 10.0):  # noqa: ANN001, ANN201
    """Like wait_until, for async tests: polls while the event loop keeps serving."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return value


async def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
