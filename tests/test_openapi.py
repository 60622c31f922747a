"""records.yaml is a valid OpenAPI 3.1 document, and the live service conforms to it (Schemathesis, every check)."""

import os
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

TESTS = Path(__file__).resolve().parent


def test_records_yaml_is_valid_openapi_3_1():
    document, _ = read_from_filename(str(TESTS.parent / "records.yaml"))
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation


def test_live_service_conforms_to_its_document(service, tmp_path):
    # With a token, so that Schemathesis also checks that PUT and DELETE refuse requests without it (ignored_auth).
    (tmp_path / "token").write_text("schemathesis-secret\n")
    proc = service("--token-file", str(tmp_path / "token"))
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file", str(TESTS / "schemathesis.toml"),
            "run", f"{proc.url}/openapi/openapi.json",
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
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": str(TESTS),
            "RECORDS_TEST_TOKEN": "schemathesis-secret",  # schemathesis.toml gives it as the bearerAuth token
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert "No issues found" in result.stdout or " passed" in result.stdout
    assert "Traceback" not in proc.log
