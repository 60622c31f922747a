"""A short run of the soak (bench/soak.py) against a real process, so that `.ci/run` runs it; and its bounds, which
must be able to fail."""

from __future__ import annotations

import subprocess
import sys

from support.soak import SOAK, soak


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


