"""`pip install .` from a copy of the repository, with no Node.js or npm to be found, gives a `tornado-records` that
serves the listening room and its files, the /openapi page, the Scalar bundle it ships and the OpenAPI document,
from any working directory.

The copy leaves out what a fresh clone lacks (.git, .venv, static/node_modules, build output). The install is the
README's, in a fresh virtual environment whose PATH holds nothing but its own bin/; pip fetches only its build tools
(setuptools, wheel) from the package index, and the service's dependencies come from the environment running the
tests (a .pth file), so that no dependency is downloaded again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import yaml

from support.paths import REPO
from support.service import Service

NOT_IN_A_CLONE = {".git", ".venv", "build", "dist", "data", "test-artifacts", ".pytest_cache"}


def copy_of_the_repository(target: Path) -> Path:
    """The repository's files as a fresh clone has them (plus uncommitted changes), without what npm or pip made."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n in ("node_modules", "__pycache__") or n.endswith(".egg-info")}
        return ignored | (NOT_IN_A_CLONE & set(names) if Path(directory) == REPO else set())

    shutil.copytree(REPO, target, ignore=ignore)
    return target


def test_pip_install_without_node_serves_the_room_and_the_scalar_reference(tmp_path):
    source = copy_of_the_repository(tmp_path / "source")
    assert not (source / "static" / "node_modules").exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site_packages = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    path = str(venv / "bin")  # no node, no npm
    assert shutil.which("node", path=path) is None and shutil.which("npm", path=path) is None
    env = {"PATH": path, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run(
        [venv / "bin" / "pip", "install", "--no-deps", "--quiet", "."],
        cwd=source,
        env={**os.environ, **env},  # the rest of it: a proxy to the package index, if any
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    # The package carries the bundle, its licence and its source note: the service needs nothing from the checkout.
    shipped = site_packages / "tornado_records" / "_data" / "static" / "scalar"
    for name in ("standalone.js", "LICENSE", "SOURCE"):
        assert (shipped / name).read_bytes() == (REPO / "static" / "scalar" / name).read_bytes(), name
    shutil.rmtree(source)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = Service(tmp_path / "data", command=[str(venv / "bin" / "tornado-records")], env=env, cwd=elsewhere)
    try:
        page = urllib.request.urlopen(f"{proc.url}/openapi", timeout=30).read()
        [link] = re.findall(rb'<script src="(/openapi/standalone\.js\?v=[0-9a-f]+)"></script>', page)
        bundle = urllib.request.urlopen(f"{proc.url}{link.decode()}", timeout=30)
        assert bundle.status == 200
        assert bundle.read() == (REPO / "static" / "scalar" / "standalone.js").read_bytes()
        document = json.load(urllib.request.urlopen(f"{proc.url}/openapi/openapi.json", timeout=30))
        assert document == yaml.safe_load((REPO / "records.yaml").read_text())
        # The listening room, with every file its page loads.
        room = urllib.request.urlopen(f"{proc.url}/", timeout=30).read()
        # the shipped page, each of its links naming the file's version (docs/api.md, "Caching")
        assert re.sub(rb"\?v=[0-9a-f]+", b"", room) == (REPO / "static" / "room" / "index.html").read_bytes()
        for name in ("room.css", "room.js", "vendor/tus.min.js"):
            assert f'"/room/{name}?v='.encode() in room
            served = urllib.request.urlopen(f"{proc.url}/room/{name}", timeout=30).read()
            assert served == (REPO / "static" / "room" / name).read_bytes(), name
    finally:
        assert proc.stop() == 0
    # the one warning allowed: this environment's PATH has no ffmpeg, and the service says so (docs/api.md)
    warnings = [line for line in proc.lines if " WARNING " in line and "ffmpeg and ffprobe not found" not in line]
    assert "Traceback" not in proc.log and warnings == [] and " ERROR " not in proc.log
