"""The README shows every curl command of the usage document (tests/USAGE.md)."""

import re

from support.paths import REPO, TESTS

USAGE = TESTS / "USAGE.md"
README = REPO / "README.md"


def test_readme_shows_every_usage_command():
    readme = README.read_text()
    for command in re.findall(r"```sh\n(.*?)```", USAGE.read_text(), re.DOTALL):
        assert command.strip() in readme
