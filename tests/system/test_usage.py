"""Every curl command of the usage document (tests/USAGE.md, kept as written), run against a real process."""

import json
import os
import re
import subprocess

from support.components import require
from support.paths import REPO, TESTS

USAGE = TESTS / "USAGE.md"
README = REPO / "README.md"


def usage_commands() -> list[str]:
    """The shell commands of the usage document, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", USAGE.read_text(), re.DOTALL)
    return [block.replace("\\\n", " ").strip() for block in blocks]


def name_of(command: str) -> str:
    """`records:PUT` for a PUT to /records/...: the route's first segment and the method."""
    route = re.search(r"localhost:10700/(\w+)", command).group(1)
    method = re.search(r"--request (\w+)", command).group(1)
    return f"{route}:{method}"


def test_usage_commands_work_as_written(service, tmp_path):
    run_usage_commands(service().port, tmp_path)


def test_usage_commands_work_through_nginx(service, nginx, tmp_path):
    run_usage_commands(nginx(service()).port, tmp_path)


def run_usage_commands(port: int, tmp_path) -> None:
    """Run each command of the usage document against localhost:`port` and check what curl gets back."""
    require("curl")
    work = tmp_path / "work"
    work.mkdir()
    original = os.urandom(3 << 20)
    (work / "record.ogg").write_bytes(original)

    def curl(command: str) -> subprocess.CompletedProcess:
        command = command.replace("localhost:10700", f"localhost:{port}")
        return subprocess.run(["bash", "-c", command], cwd=work, capture_output=True, timeout=60)

    commands = {name_of(command): command for command in usage_commands()}
    assert len(commands) == len(usage_commands()) == 7

    listed = curl(commands["records:GET"])
    assert listed.returncode == 0 and json.loads(listed.stdout)["count"] == 0

    uploaded = curl(commands["records:PUT"])
    assert uploaded.returncode == 0 and uploaded.stdout == b""
    listed = json.loads(curl(commands["records:GET"]).stdout)
    assert listed["count"] == 1
    assert listed["records"][0]["type"] == "audio/ogg" and listed["records"][0]["size"] == len(original)

    (work / "record.ogg").unlink()
    downloaded = curl(commands["record:GET"])
    assert downloaded.returncode == 0 and (work / "record.ogg").read_bytes() == original

    deleted = curl(commands["records:DELETE"])
    assert deleted.returncode == 0 and deleted.stdout == b""
    assert json.loads(curl(commands["records:GET"]).stdout)["count"] == 0

    pinged = curl(commands["ping:HEAD"])
    assert pinged.returncode == 0 and pinged.stdout.startswith(b"HTTP/1.1 204 No Content")

    document = curl(commands["openapi:GET"])
    assert document.returncode == 0 and json.loads(document.stdout)["openapi"].startswith("3.1")

    # The event stream, watched while a record is uploaded and deleted: curl shows each event as it happens.
    watcher = subprocess.Popen(
        ["bash", "-c", commands["sse:GET"].replace("localhost:10700", f"localhost:{port}")],
        cwd=work,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout.readline().startswith("retry:")
        assert curl(commands["records:PUT"]).returncode == 0
        assert curl(commands["records:DELETE"]).returncode == 0
        types = []
        while "record-deleted" not in types:
            line = watcher.stdout.readline()
            if line.startswith("data:"):
                types.append(json.loads(line[5:])["type"])
        # the record's analysis may end between its creation and its deletion (record-analyzed)
        assert [t for t in types if t != "record-analyzed"] == ["upload-started", "record-created", "record-deleted"]
    finally:
        watcher.kill()
