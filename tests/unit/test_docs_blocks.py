"""The shell blocks of docs/running.md, operations.md and scale-out.md: each runs in a test or says why not, and
names only the paths a test gives a root."""

from __future__ import annotations

import re
from pathlib import Path

from support.docs_shell import Block, blocks
from support.paths import REPO

RUNNING = REPO / "docs" / "running.md"
OPERATIONS = REPO / "docs" / "operations.md"
SCALE_OUT = REPO / "docs" / "scale-out.md"


def test_every_page_marks_the_blocks_it_does_not_run_and_names_only_the_paths_a_test_gives_a_root() -> None:
    """Each shell block of the three pages either runs in a test, or says why not; the paths the blocks write are
    those a test replaces (tests/support/docs_shell.py's ROOT_PATHS), so no block touches the machine running the tests."""
    from support.docs_shell import ROOT_PATHS, SKIPPED

    for page in (RUNNING, OPERATIONS, SCALE_OUT):
        found = blocks(page)
        assert found, page
        for block in found:
            if block.why is not None:
                assert block.why.strip(), f"{page.name}: {block}"
                assert "systemctl" in block.why or any(word in block.why for word in SKIPPED), f"{page.name}: {block}"
                continue
            for path in re.findall(r"(?<![\w.$-])(/(?:etc|var|opt|srv|run|usr)/[\w./@-]*)", block.text):
                assert any(path.startswith(known) for known in ROOT_PATHS), f"{page.name}: {block}: {path}"


def test_a_block_marked_not_run_is_found_as_such(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A\n\n<!-- not run in the tests: systemctl -->\n```sh\nsystemctl start x\n```\n\n## B\n\n"
                    "```sh\necho hi\n```\n\n```ini\n[Unit]\n```\n")  # fmt: skip
    assert blocks(page) == [Block("sh", "systemctl start x\n", "systemctl", 4, "A"), Block("sh", "echo hi\n", None, 10, "B")]
