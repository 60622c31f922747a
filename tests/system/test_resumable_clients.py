"""Resumable uploads with real clients through links that break: tus-js-client (Node) in its `tus-v1` and
`ietf-draft-05` modes, with a known length and with `uploadLengthDeferred` (a stream, as a live source gives), and
tuspy. Each uploads tens of MB through a proxy that resets the connection several times mid-body; the client resumes
by itself and the record is byte-exact. The bytes that went through the proxy more than once are measured: the
service keeps every byte it received, so only what was in flight at a break is sent again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from tusclient.client import TusClient

from support.chopping_proxy import ChoppingProxy
from support.components import require
from support.paths import TESTS
from support.rawhttp import request
from support.records import EVENT

CLIENTS = TESTS / "clients"
SIZE = 40_000_000
BREAKS = 4
HEAD_ROOM = 2048  # bytes of request heads per request, allowed beyond the body in the proxy's count
TOKEN = "resumable-secret"


def require_tus_js_client() -> list[str]:
    """The command that runs tests/clients/tus_upload.cjs; skips (fails with RECORDS_TEST_REQUIRE_ALL) where Node or
    the npm packages (`npm ci --prefix tests/clients`) are missing."""
    node = require("node")
    if not (CLIENTS / "node_modules" / "tus-js-client").is_dir():
        message = "tus-js-client is not installed (npm ci --prefix tests/clients)"
        if os.environ.get("RECORDS_TEST_REQUIRE_ALL"):
            pytest.fail(message + " and RECORDS_TEST_REQUIRE_ALL is set")
        pytest.skip(message)
    return [node, str(CLIENTS / "tus_upload.cjs")]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "show.wav"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def proc(service, tmp_path: Path):  # noqa: ANN001, ANN201
    (tmp_path / "token").write_text(TOKEN)
    return service("--token-file", str(tmp_path / "token"))


def stored(url: str, start: str) -> tuple[int, str, bytes]:
    status, headers, body = request(url, "GET", f"/records/{EVENT}/{start}")
    return status, headers.get("Content-Type", ""), body


def run_tus_js_client(endpoint: str, source: Path, protocol: str, deferred: bool, token: str = TOKEN) -> dict:
    options = {
        "endpoint": endpoint, "file": str(source), "protocol": protocol, "deferred": deferred, "type": "audio/wav",
        "headers": {"Authorization": f"Bearer {token}"},
    }  # fmt: skip
    result = subprocess.run(
        [*require_tus_js_client(), json.dumps(options)], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout + result.stderr
    return json.loads(lines[-1]) | {"exit": result.returncode}


@pytest.mark.parametrize("deferred", [False, True], ids=["known-length", "deferred-length"])
@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-05"])
def test_tus_js_client_resumes_through_breaks(proc, source: Path, protocol: str, deferred: bool) -> None:  # noqa: ANN001
    start = "2024-05-01T10:00:00"
    proxy = ChoppingProxy(proc.port, every=7 << 20, breaks=BREAKS)
    try:
        outcome = run_tus_js_client(f"{proxy.url}/records/{EVENT}/{start}", source, protocol, deferred)
    finally:
        proxy.close()
    assert outcome["ok"] and outcome["exit"] == 0, outcome
    assert proxy.broken == BREAKS and outcome["retries"] >= BREAKS
    status, content_type, body = stored(proc.url, start)
    assert status == 200 and content_type == "audio/wav"
    assert hashlib.sha256(body).digest() == hashlib.sha256(source.read_bytes()).digest()
    resent = proxy.carried - SIZE  # what reached the service's side of the link more than once, heads included
    sent_again = outcome["sent"] - SIZE  # what the client sent more than once, also what its socket held at a reset
    print(f"{protocol} deferred={deferred}: {BREAKS} breaks; beyond the file, {sent_again} bytes left the client "
          f"({sent_again / BREAKS:.0f} per break) and {resent} went through the link ({resent / BREAKS:.0f} per break), "
          "request heads included")  # fmt: skip
    assert resent < BREAKS * (1 << 20), "more than what was in flight was sent again"
    assert "Traceback" not in proc.log


def test_tus_js_client_needs_the_token(proc, source: Path) -> None:  # noqa: ANN001
    outcome = run_tus_js_client(f"{proc.url}/records/{EVENT}/2024-05-01T11:00:00", source, "tus-v1", False, "wrong")
    assert not outcome["ok"] and "401" in outcome["error"]
    assert stored(proc.url, "2024-05-01T11:00:00")[0] == 404


def test_tus_js_client_behind_nginx(proc, nginx, source: Path) -> None:  # noqa: ANN001
    """deploy/nginx.conf passes PATCH bodies through unbuffered, and the IETF creation works without the 104 (the
    service sends none to a proxied request; nginx 1.22 would take it for the final answer)."""
    front = nginx(proc)
    proxy = ChoppingProxy(front.port, every=7 << 20, breaks=2)
    try:
        for protocol, start in (("ietf-draft-05", "2024-05-02T10:00:00"), ("tus-v1", "2024-05-02T11:00:00")):
            outcome = run_tus_js_client(f"{proxy.url}/records/{EVENT}/{start}", source, protocol, False)
            assert outcome["ok"], outcome
            assert hashlib.sha256(stored(front.url, start)[2]).digest() == hashlib.sha256(source.read_bytes()).digest()
    finally:
        proxy.close()
    assert proxy.broken == 2
    assert "Traceback" not in proc.log


def test_tuspy_resumes_through_breaks(proc, source: Path) -> None:  # noqa: ANN001
    start = "2024-05-03T10:00:00"
    proxy = ChoppingProxy(proc.port, every=5 << 20, breaks=BREAKS)
    try:
        client = TusClient(f"{proxy.url}/records/{EVENT}/{start}", headers={"Authorization": f"Bearer {TOKEN}"})
        uploader = client.uploader(
            str(source), chunk_size=8 << 20, retries=10, retry_delay=0, metadata={"filetype": "audio/wav"}
        )
        uploader.upload()
    finally:
        proxy.close()
    assert proxy.broken == BREAKS
    status, content_type, body = stored(proc.url, start)
    assert status == 200 and content_type == "audio/wav"
    assert hashlib.sha256(body).digest() == hashlib.sha256(source.read_bytes()).digest()
    resent = proxy.carried - SIZE
    print(f"tuspy: {BREAKS} breaks, {resent} bytes through the proxy beyond the file (request heads included)")
    assert resent < BREAKS * (1 << 20) + 64 * HEAD_ROOM
    assert "Traceback" not in proc.log
