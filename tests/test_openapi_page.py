"""The /openapi page, rendered by a real headless Chromium with every outside host unreachable."""

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from shutil import ignore_patterns

import tornado_records

from conftest import Service, headless_chromium

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
OPERATIONS = [
    "List an event's records",
    "Upload a record, or replace it",
    "Download a record",
    "Delete a record",
    "Check that the service is up",
    "Live events of records and uploads",
]


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on `url`; no name outside loopback resolves, so nothing is fetched from the internet."""
    return subprocess.run(
        [
            *headless_chromium(profile),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_scalar_page_renders_the_operations_offline(service, tmp_path):
    proc = service()
    dom = chromium(f"{proc.url}/openapi", tmp_path / "profile-dom", "--dump-dom").stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    for operation in OPERATIONS:
        assert operation in text, operation
    # The bundle came from this service, not from a CDN.
    assert "GET /openapi/standalone.js 200" in proc.log

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "openapi.png"
    shot.unlink(missing_ok=True)
    chromium(f"{proc.url}/openapi", tmp_path / "profile-shot", "--window-size=1280,1600", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


def test_without_a_local_bundle_the_page_uses_the_pinned_cdn_and_says_so_once(tmp_path):
    # The service as a source tree without static/node_modules, run from there.
    tree = tmp_path / "tree"
    shutil.copytree(Path(tornado_records.__file__).parent, tree / "tornado_records", ignore=ignore_patterns("_data"))
    shutil.copy2(REPO / "records.yaml", tree / "records.yaml")
    shutil.copytree(REPO / "static", tree / "static", ignore=ignore_patterns("node_modules"))
    proc = Service(tmp_path / "data", command=[sys.executable, "-m", "tornado_records"], env={"PYTHONPATH": str(tree)}, cwd=tree)
    try:
        page = urllib.request.urlopen(f"{proc.url}/openapi").read().decode()
        version = json.loads((REPO / "static" / "package.json").read_text())["dependencies"]["@scalar/api-reference"]
        assert f'src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@{version}/dist/browser/standalone.js"' in page
        assert proc.log.count("no local Scalar bundle") == 1
    finally:
        assert proc.stop() == 0
