"""bench/soak.py's bounds: each holds at its limit and each can fail."""

from __future__ import annotations

import collections

import pytest

from support.soak import soak


def figures(**changes) -> "soak.Figures":  # noqa: ANN003
    tally = soak.Tally(collections.Counter(ping=10), events=5)
    values = dict(seconds=10, warm_up=1, concurrency=2, tally=tally, rss_peaks=[100, 100, 100, 110], fds_before=9, fds_after=9,
                  fds_left=collections.Counter(), log_errors=[])  # fmt: skip
    return soak.Figures(**{**values, **changes})


def test_the_bounds_hold_at_their_limits() -> None:
    assert figures().failures() == []


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"rss_peaks": [100, 100, 100, 111]}, "peak RSS grew 11.0%"),
        ({"fds_after": 10, "fds_left": collections.Counter(socket=1)}, "descriptors 9 before, 10 after"),
        ({"log_errors": ["Traceback (most recent call last):"]}, "1 error lines in the log"),
        ({"tally": soak.Tally(collections.Counter(ping=1), collections.Counter(ping=1), events=1)}, "1 errors"),
        ({"tally": soak.Tally(collections.Counter(ping=1))}, "no event reached"),
    ],
)
def test_each_bound_can_fail(changes: dict, says: str) -> None:
    failed = figures(**changes)
    assert any(says in failure for failure in failed.failures()), failed.failures()
    assert failed.report().splitlines()[-1].startswith("FAILED")
