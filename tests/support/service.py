"""A real `tornado-records` process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from support.waiting import wait_until

COMMAND = [str(Path(sys.executable).with_name("tornado-records"))]


class Service:
    """A running `tornado-records` process on a free port; its log lines are collected as they come."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        command: list[str] = COMMAND,
    ) -> None:
        self.lines: list[str] = []
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir), *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        line = wait_until(lambda: next((l for l in self.lines if "serving on" in l), None), timeout=20)
        if not line:
            self.proc.kill()
            raise RuntimeError("tornado-records did not start:\n" + "".join(self.lines))
        self.port = int(re.search(r"serving on http://[^:]+:(\d+)", line).group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=60)
