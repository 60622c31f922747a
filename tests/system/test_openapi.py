"""records.yaml is a valid OpenAPI 3.1 document, and the live service conforms to it (Schemathesis, every check)."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from support.paths import TESTS

TOKEN = "schemathesis-secret"


@pytest.mark.parametrize("token", [False, True], ids=["default", "with-token"])
def test_live_service_conforms_to_its_document(service, tmp_path, token):
    config = (TESTS / "schemathesis.toml").read_text()
    if token:
        # Schemathesis writes with the token, and checks (ignored_auth) that PUT and DELETE refuse requests without
        # it or with a wrong one: against the document with the token required, as this service requires it.
        (tmp_path / "token").write_text(TOKEN + "\n")
        proc = service("--token-file", str(tmp_path / "token"))
        location = tmp_path / "openapi.json"
        location.write_text(json.dumps(with_token_required(served_document(proc.url))))
        config += f'\n[auth.openapi.bearerAuth]\nbearer = "{TOKEN}"\n'
    else:
        # A service as it runs by default, and a client that sends no token: the document as served.
        proc = service()
        location = f"{proc.url}/openapi/openapi.json"
    (tmp_path / "schemathesis.toml").write_text(config)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file", str(tmp_path / "schemathesis.toml"),
            "run", str(location), "--url", proc.url,
            "--checks", "all",
            "--max-examples", "60",
            "--exclude-path", "/sse",  # an endless stream: described in the document, not fuzzed
            "--seed", "1",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert "No issues found" in result.stdout or " passed" in result.stdout
    assert "Traceback" not in proc.log


def served_document(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/openapi/openapi.json", timeout=30) as response:
        return json.load(response)


def with_token_required(document: dict) -> dict:
    """The document as it holds for a service run with --token-file: writing needs the bearer token."""
    for operation in (document["paths"]["/records/{event}/{start}"][method] for method in ("put", "delete")):
        assert operation["security"] == [{}, {"bearerAuth": []}]  # optional, as by default
        operation["security"] = [{"bearerAuth": []}]
    return document


