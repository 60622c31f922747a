"""The shipped nginx configuration, as nginx itself reads it."""

import subprocess

from conftest import REPO, require


def test_nginx_accepts_the_shipped_configuration():
    result = subprocess.run(
        [require("nginx"), "-t", "-c", str(REPO / "deploy" / "nginx.conf")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
