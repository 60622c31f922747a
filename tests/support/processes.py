"""The processes of a `tornado-records` service of --processes N (support.service.Service), as the system sees them."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from support.waiting import wait_until


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (those of a service of --processes N)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def kill_9(svc) -> None:  # noqa: ANN001
    """SIGKILL to the service's process, and at once to those it forked (--processes N): none of them ends well."""
    children = children_of(svc.proc.pid)
    svc.proc.send_signal(signal.SIGKILL)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    svc.proc.wait()
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children))
