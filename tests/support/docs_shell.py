"""The operator's guide as a test runs it: the shell blocks of a page of docs/, in order, as written, on a throwaway
root (tests/system/test_docs_run.py).

A block that cannot run in a test is marked in the page by a comment just before it, saying why:
`<!-- not run in the tests: systemctl -->`. The others run with bash (`-euo pipefail`), each in its own shell, with
the paths and ports of the page replaced by the test's (`Root.sub`): `/etc/tornado-records` becomes a directory
under the test's own, and so on. The checkout the page copies files from (`/opt/tornado-records`) is the
repository's deploy/ with the same replacements, and its `.venv/bin/tornado-records` is the one running the tests.
In place of a systemd unit started by a `systemctl` block, the test runs what systemd would: the unit's `ExecStart`
(`Root.unit_command`), with its environment file and its credentials directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from support.nginx import TEMP_PATHS
from support.paths import REPO
from support.ports import free_port
from support.waiting import wait_until

BLOCK = re.compile(
    r"(?:<!-- not run in the tests: (?P<why>[^\n]*?) -->\n)?^```(?P<lang>[\w-]*)\n(?P<text>.*?)^```", re.S | re.M
)


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced block of a page: its language, its text, and why it is not run (None: it is run)."""

    lang: str
    text: str
    why: str | None
    line: int
    heading: str = ""  # the heading of the section it is in

    def __str__(self) -> str:
        return f"the block at line {self.line} ({self.heading})"


def blocks(page: Path, lang: str = "sh") -> list[Block]:
    """The fenced blocks of `page` in `lang` (`sh`: the shell's), in order."""
    text = page.read_text()
    found = []
    for match in BLOCK.finditer(text):
        if match.group("lang") == lang:
            line = text.count("\n", 0, match.start("text"))
            headings = re.findall(r"^#+ (.*)$", text[: match.start()], re.M)
            found.append(Block(lang, match.group("text"), match.group("why"), line, headings[-1] if headings else ""))
    return found


# The blocks that a test does not run and does nothing for: what it cannot do on the machine running the tests.
SKIPPED = ("apt-get", "useradd", "journalctl", "pip", "git clone", "git pull", "userdel", "benchmark", "page cache")


def walk(root: "Root", page: Path, actions: dict, after: dict | None = None, headings: tuple[str, ...] = ()) -> None:
    """Run the blocks of `page` in order (only those under `headings`, if given). In place of a block that is not
    run, the action whose key the block holds (`actions`: text -> function), unless the block says it is skipped
    (SKIPPED); after a block that runs, the function whose key it holds (`after`)."""
    for block in blocks(page):
        if headings and not block.heading.startswith(headings):
            continue
        if block.why is None:
            root.run(block)
            for key, then in (after or {}).items():
                if key in block.text:
                    then()
        elif not any(word in block.why for word in SKIPPED):
            matched = [action for key, action in actions.items() if key in block.text]
            assert matched, f"{page.name}: {block} is not run, and the test does nothing in its place"
            matched[0]()


# The paths of the pages (and of deploy/) that a test gives a directory of its own, under its root.
ROOT_PATHS = (
    "/etc/tornado-records",
    "/etc/seaweedfs",
    "/etc/systemd/system",
    "/etc/logrotate.d",
    "/var/lib/tornado-records",
    "/var/lib/seaweedfs",
    "/var/log/tornado-records",
    "/var/www/html",
    "/opt/tornado-records",
    "/opt/seaweedfs",
    "/srv/backups",
    "/run/tornado-records-nginx.pid",
    "/usr/local/bin",
)


class Root:
    """A throwaway root for the pages: the paths above under `dir`, the ports of the pages mapped to free ones
    (`ports`: the page's port -> the test's), and records.example.org to localhost."""

    def __init__(self, tmp_path: Path, ports: tuple[int, ...] = (10700, 10701, 10702, 8333)) -> None:
        self.dir = tmp_path / "root"
        self.work = tmp_path / "work"  # the shell's working directory
        self.work.mkdir(parents=True)
        self.ports = {port: free_port() for port in ports}
        self.https, self.http = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}
        for path in ROOT_PATHS:
            target = self.path(path)
            (target.parent if path.endswith(".pid") else target).mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp" / "nginx").mkdir(parents=True)

    def path(self, path: str) -> Path:
        """Where the page's `path` is under the root."""
        return self.dir / path.lstrip("/")

    def sub(self, text: str) -> str:
        """The text with the page's paths, ports and host name replaced by the test's."""
        for path in ROOT_PATHS:
            text = text.replace(path, str(self.path(path)))
        for port, free in self.ports.items():
            text = re.sub(rf"(?<!\d){port}(?!\d)", str(free), text)
        text = text.replace("https://records.example.org", f"https://localhost:{self.https}")
        text = text.replace("http://records.example.org", f"http://localhost:{self.http}")
        return text.replace("records.example.org", "localhost")

    def url(self, path: str = "") -> str:
        """The HTTPS address of `path` in front (nginx)."""
        return f"https://localhost:{self.https}{path}"

    # -- the checkout --------------------------------------------------------------------------------------------

    def checkout(self) -> Path:
        """/opt/tornado-records: deploy/ as the test's (paths, ports, and what nginx needs to run as a test's), and
        the tornado-records of the tests' environment in .venv/bin/ and /usr/local/bin/."""
        opt = self.path("/opt/tornado-records")
        (opt / "deploy").mkdir(parents=True)
        for source in (REPO / "deploy").iterdir():
            text = self.sub(source.read_text())
            if source.name == "nginx.conf":
                text = self.nginx_conf(text)
            (opt / "deploy" / source.name).write_text(text)
        command = Path(sys.executable).with_name("tornado-records")
        (opt / ".venv" / "bin").mkdir(parents=True)
        (opt / ".venv" / "bin" / "tornado-records").symlink_to(command)
        self.path("/usr/local/bin").joinpath("tornado-records").symlink_to(command)
        if command.with_name("weed").exists():  # SeaweedFS's weed of the test extras, where docs/scale-out.md puts it
            self.path("/opt/seaweedfs").joinpath("bin").mkdir()
            self.path("/opt/seaweedfs").joinpath("bin", "weed").symlink_to(command.with_name("weed"))
        return opt

    def nginx_conf(self, text: str) -> str:
        """deploy/nginx.conf (its paths already the test's) on the test's ports of 127.0.0.1, run by root (the test's
        files are root's), with its temporary files under the root."""
        for old, new in [
            ("listen 443 ssl;", f"listen 127.0.0.1:{self.https} ssl;"),
            ("listen [::]:443 ssl;", ""),
            ("listen 80;", f"listen 127.0.0.1:{self.http};"),
            ("listen [::]:80;", ""),
            ("user www-data;", "user root;" if os.geteuid() == 0 else ""),
            ("http {", "http {\n" + "".join(f"    {k}_temp_path {self.dir / 'tmp' / 'nginx' / k};\n" for k in TEMP_PATHS)),
        ]:
            assert old in text, old
            text = text.replace(old, new)
        return text

    # -- running -------------------------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The environment of the page's shell: the root's /usr/local/bin first on PATH, curl trusting the test's
        certificate, and what the test adds (`env`)."""
        return {
            **os.environ,
            "PATH": f"{self.path('/usr/local/bin')}:{os.environ['PATH']}",
            "HOME": str(self.work),
            "CURL_CA_BUNDLE": str(self.path("/etc/tornado-records") / "tls" / "fullchain.pem"),
            **self.env,
        }

    def run(self, block: Block, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a block with bash; AssertionError (with its output) if it fails."""
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.sub(block.text)],
            cwd=self.work, env=self.environment(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, f"{block} failed ({done.returncode}):\n{block.text}\n{done.stdout}{done.stderr}"
        return done

    def unit(self, name: str) -> dict[str, list[str]]:
        """The [Service] settings of a unit of the checkout's deploy/ (its paths the test's), each with its values."""
        settings: dict[str, list[str]] = {}
        text = self.path("/opt/tornado-records").joinpath("deploy", name).read_text()
        section = ""
        for line in text.splitlines():
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
        return settings

    def unit_command(self, name: str, key: str = "ExecStart", instance: str = "") -> tuple[list[str], dict, Path]:
        """What systemd would run for the unit's `key`: the command line (`%i` the instance, `%d` its credentials
        directory), its environment (the unit's environment file) and its working directory."""
        settings = self.unit(name)
        credentials = self.credentials(settings)
        env = self.environment()
        for file in settings.get("EnvironmentFile", []):
            path = Path(file.lstrip("-"))
            if path.exists():
                env.update(read_environment_file(path))
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
        line = settings[key][0].replace("%i", instance).replace("%d", str(credentials))
        cwd = Path(settings.get("WorkingDirectory", [str(self.work)])[0])
        cwd.mkdir(parents=True, exist_ok=True)
        return shlex.split(line.lstrip("-")), env, cwd

    def credentials(self, settings: dict[str, list[str]]) -> Path:
        """The unit's credentials directory, as systemd would make it: a copy of each LoadCredential= file."""
        directory = self.dir / "run" / "credentials" / f"unit{len(self.processes)}-{free_port()}"
        directory.mkdir(parents=True)
        for credential in settings.get("LoadCredential", []):
            name, _, path = credential.partition(":")
            shutil.copy(path, directory / name)
        return directory

    def start(self, name: str, instance: str = "", log: Path | None = None) -> subprocess.Popen:
        """Start the unit's ExecStart as systemd would (its log in `log`)."""
        command, env, cwd = self.unit_command(name, instance=instance)
        out = open(log or self.work / f"{name}{instance}.log", "ab")  # noqa: SIM115 (kept open for the process)
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        """End every process the test started (SIGTERM, then SIGKILL after 30 s), and the nginx it daemonized."""
        pid_file = self.path("/run/tornado-records-nginx.pid")
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
            wait_until(lambda: not pid_file.exists(), timeout=10)
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def read_environment_file(path: Path) -> dict[str, str]:
    """The variables of a systemd EnvironmentFile (KEY=VALUE lines; # comments)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip().strip('"')
    return found
