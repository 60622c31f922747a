"""A small file system of our own, to fill up."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator

from support.components import require_root


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on the new directory `mount` with mount `options` (such as "size=8m"), unmounted at the end;
    root only."""
    require_root("mounting a tmpfs")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)
