"""A short run of the soak (bench/soak.py) against a real process, so that `.ci/run` runs it; and its bounds, which
must be able to fail."""

from __future__ import annotations

import collections
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def load_soak():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


soak = load_soak()


def test_a_short_soak_passes_its_bounds() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "10", "--concurrency", "20", "--warm-up", "2"], capture_output=True, text=True, timeout=120
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout and result.stdout.rstrip().endswith("PASSED")
    for kind in soak.WEIGHTS:
        count = int(result.stdout.split(f"{kind} ", 1)[1].split(",")[0].split()[0])
        assert count > 0, kind  # every kind of request was made


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
