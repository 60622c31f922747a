"""The names that processes sharing a SQLite index hold (sqldb.SharedSqlite): another process's are refused while it
lives, and free once it ends, however it ends (the kernel lets go of its locks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tornado_records.storage import sqldb

HOLDER = """
import sys, time
from pathlib import Path
from tornado_records.storage import sqldb
index = sqldb.SharedSqlite(Path(sys.argv[1]))
assert index.claim(7, wait=False) and index.hold("upload-1")
print("held", flush=True)
time.sleep(60)
"""


def test_the_names_another_process_holds_are_refused_while_it_lives_and_free_once_it_is_killed(tmp_path: Path) -> None:
    path = tmp_path / sqldb.SQLITE_FILE
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        index = sqldb.SharedSqlite(path)
        assert not index.claim(7, wait=False) and not index.hold("upload-1")
        assert index.claim(9, wait=False) and index.hold("upload-2")  # names of its own
    finally:
        holder.kill()
        holder.wait()
    assert index.claim(7, wait=False) and index.hold("upload-1")
    index.release(7)
    index.let_go("upload-1")
    index.close()
