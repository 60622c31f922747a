"""An index that fills the disk at commit: 507, and no blob left (an app on a real socket)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.records import EVENT, files_in, record_url


@pytest.mark.gen_test
async def test_index_full_at_commit_is_507_and_leaves_no_blob(app, fetch, data_dir: Path) -> None:
    # SQLite's max_page_count makes the index itself full (SQLITE_FULL, as a full disk does) at the commit step,
    # after the body was written, synced and renamed: no root needed.
    for day in range(1, 31):
        assert (await fetch(record_url(start=f"2024-01-{day:02}T00:00:00"), method="PUT", body=b"x")).code == 204
    index = app.settings["store"].wconn  # the writer's connection: the pragma holds for it only
    (pages,) = index.execute("PRAGMA page_count").fetchone()
    index.execute(f"PRAGMA max_page_count = {pages}")
    statuses = []
    for minute in range(200):  # until a new row needs a page more
        url = record_url(start=f"2024-02-01T{minute // 60:02}:{minute % 60:02}:00")
        response = await fetch(url, method="PUT", body=b"y")
        statuses.append(response.code)
        if response.code != 204:
            break
    assert statuses[-1] == 507, statuses
    assert json.loads(response.body)["status_code"] == 507
    assert (await fetch(url)).code == 404
    listed = json.loads((await fetch(f"/records/{EVENT}?limit=1000")).body)["count"]
    assert len(files_in(data_dir / "blobs")) == listed  # the renamed blob was removed again
    assert files_in(data_dir / "tmp") == []
    index.execute("PRAGMA max_page_count = 1073741823")
    assert (await fetch(record_url(start="2024-03-01T00:00:00"), method="PUT", body=b"z")).code == 204
    assert (await fetch(record_url(start="2024-01-01T00:00:00"))).body == b"x"
