"""The operator's guide works as written: the shell blocks of docs/running.md, docs/operations.md and
docs/scale-out.md run in order on a throwaway root (tests/support/docs_shell.py), with a real nginx, real recorders (curl,
ffmpeg, Liquidsoap), PostgreSQL and SeaweedFS where the page uses them. What a block marked "not run in the tests"
would start (a systemd unit), the test starts as systemd would."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.components import require
from support.docs_shell import Root, walk
from support.paths import REPO
from support.records import EVENT
from support.waiting import wait_until

RUNNING = REPO / "docs" / "running.md"
OPERATIONS = REPO / "docs" / "operations.md"
SCALE_OUT = REPO / "docs" / "scale-out.md"


def https(root: Root, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """A request through nginx over HTTPS, trusting the page's self-signed certificate: (status, headers, body)."""
    context = ssl.create_default_context(cafile=root.path("/etc/tornado-records") / "tls" / "fullchain.pem")
    request = urllib.request.Request(root.url(path), data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def record(root: Root, start: str) -> dict | None:
    """The listing's entry of the record of EVENT at `start` (None: there is none), through nginx."""
    listed = json.loads(https(root, f"/records/{EVENT}?limit=100")[2])["records"]
    return next((entry for entry in listed if entry["start"] == start), None)


def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2, context=context).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_service(root: Root, port: int) -> subprocess.Popen:
    """tornado-records@PORT as systemd runs it, once it answers."""
    proc = root.start("tornado-records@.service", instance=str(port))
    assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/ping") or proc.poll() is not None, timeout=30)
    assert proc.poll() is None, (root.work / f"tornado-records@.service{port}.log").read_text()
    return proc


def start_nginx(root: Root) -> None:
    """tornado-records-nginx as systemd runs it (Type=forking: ExecStartPre, then ExecStart, which daemonizes)."""
    for key in ("ExecStartPre", "ExecStart"):
        command, env, cwd = root.unit_command("tornado-records-nginx.service", key)
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    context = ssl.create_default_context(cafile=root.path("/etc/tornado-records") / "tls" / "fullchain.pem")
    assert wait_until(lambda: answers(root.url("/ping"), context), timeout=10)


def reload_nginx(root: Root) -> None:
    """`systemctl reload tornado-records-nginx`: the unit's ExecReload lines, in order."""
    for line in root.unit("tornado-records-nginx.service")["ExecReload"]:
        done = subprocess.run(line.split(), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def start_recorder(root: Root) -> subprocess.Popen:
    """tornado-records-recorder as systemd runs it, the script as the page wrote it, but for the sound card (a test
    tone instead) and root (which Liquidsoap refuses unless told)."""
    script = root.path("/etc/tornado-records") / "recorder.liq"
    text = script.read_text()
    assert "radio = input.alsa()" in text
    script.write_text("settings.init.allow_root.set(true)\n" + text.replace("input.alsa()", "sine(440.)"))
    return root.start("tornado-records-recorder.service")


def test_running_md_recipe_serves_behind_nginx_over_https_with_the_token_and_the_recorders_store_their_type(
    tmp_path: Path,
) -> None:
    for program in ("curl", "nginx", "openssl", "ffmpeg", "liquidsoap"):
        require(program)
    root = Root(tmp_path)
    root.checkout()
    show = root.work / "show.mp3"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=330:duration=2",
                    "-c:a", "libmp3lame", "-b:a", "128k", str(show)], check=True)  # fmt: skip
    port = root.ports[10700]
    started: dict[str, subprocess.Popen] = {}

    def nginx() -> None:
        start_nginx(root)
        reload_nginx(root)

    try:
        walk(root, RUNNING, {
            "systemctl enable --now tornado-records@10700": lambda: started.update(service=start_service(root, port)),
            "systemctl enable --now tornado-records-nginx": nginx,
            "systemctl enable --now tornado-records-recorder": lambda: started.update(recorder=start_recorder(root)),
        })  # fmt: skip
        service, recorder = started["service"], started["recorder"]

        # The token is required through nginx; the file and the ffmpeg stream are stored with their type.
        assert https(root, f"/records/{EVENT}/2030-01-01T00:00:00", "PUT", b"x", {"Content-Type": "audio/mpeg"})[0] == 401
        status, headers, body = https(root, f"/records/{EVENT}/2024-01-01T00:00:00")
        assert status == 200 and body == show.read_bytes() and headers["Content-Type"] == "audio/mpeg"
        streamed = record(root, "2024-01-01T01:00:00")
        assert streamed["type"] == "audio/mpeg" and streamed["size"] > 20_000  # 2 s at 128 kbit/s, whole

        # Liquidsoap records; a `systemctl restart` of the service during the recording takes a few seconds, keeps
        # what arrived, and the recorder goes on in the same record.
        assert wait_until(lambda: (record(root, "2024-01-01T02:00:00") or {}).get("size", 0) > 0, timeout=30)
        before = record(root, "2024-01-01T02:00:00")
        assert before["type"] == "audio/mpeg"
        began = time.monotonic()
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
        service = start_service(root, port)
        assert wait_until(lambda: (record(root, "2024-01-01T02:00:00") or {}).get("size", 0) > before["size"] + 20_000,
                          timeout=30)  # fmt: skip
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(timeout=30)
        status, headers, body = https(root, "/records/{}/2024-01-01T02:00:00".format(EVENT))
        assert status == 200 and headers["Content-Type"] == "audio/mpeg" and len(body) > before["size"]

        # nginx's logs, rotated by the logrotate file's command: nginx (this one, by its pid file) reopens them.
        logs = root.path("/var/log/tornado-records")
        (logs / "nginx-access.log").rename(logs / "nginx-access.log.1")
        rotate = root.path("/opt/tornado-records") / "deploy" / "tornado-records-nginx.logrotate"
        script = re.search(r"postrotate\n(.*?)\n\s*endscript", rotate.read_text(), re.S).group(1)
        subprocess.run(["sh", "-c", script], check=True)
        assert wait_until(lambda: (logs / "nginx-access.log").exists())
        https(root, "/ping")
        assert wait_until(lambda: "/ping" in (logs / "nginx-access.log").read_text())
    finally:
        root.stop_all()


def etag(content: bytes) -> str:
    return f'"{hashlib.sha256(content).hexdigest()}"'


def test_operations_md_as_written_checks_backs_up_restores_and_rotates_the_token(tmp_path: Path) -> None:
    require("curl")
    root = Root(tmp_path)
    root.checkout()
    walk(root, RUNNING, {}, headings=("2. The token",))  # the token and the settings, as the set-up made them
    port = root.ports[10700]
    local = f"http://127.0.0.1:{port}"
    started = {"service": start_service(root, port)}
    old_token = root.path("/etc/tornado-records").joinpath("token").read_text().strip()

    def put(start: str, body: bytes, token: str) -> int:
        request = urllib.request.Request(f"{local}/records/{EVENT}/{start}", data=body, method="PUT",
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "audio/ogg"})
        try:
            return urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as error:
            return error.code

    def get(start: str) -> str | None:
        """The record's ETag (the service answers GET with X-Accel-Redirect for nginx: HEAD says what it holds)."""
        try:
            request = urllib.request.Request(f"{local}/records/{EVENT}/{start}", method="HEAD")
            return urllib.request.urlopen(request, timeout=30).headers["ETag"]
        except urllib.error.HTTPError:
            return None

    kept, lost = b"kept " * 1000, b"lost after the backup " * 1000
    assert put("2024-01-01T00:00:00", kept, old_token) == 204 and put("2024-01-02T00:00:00", lost, old_token) == 204

    def stop() -> None:
        started["service"].send_signal(signal.SIGTERM)
        assert started["service"].wait(timeout=30) == 0

    def start() -> None:
        started["service"] = start_service(root, port)

    def damage() -> None:  # after the backup: a record deleted, which the restore brings back
        request = urllib.request.Request(f"{local}/records/{EVENT}/2024-01-02T00:00:00", method="DELETE",
                                         headers={"Authorization": f"Bearer {old_token}"})  # fmt: skip
        assert urllib.request.urlopen(request, timeout=30).status == 204

    try:
        walk(root, OPERATIONS, {
            "systemctl stop tornado-records@10700": stop,
            "systemctl start tornado-records@10700": start,
            "systemctl restart tornado-records@10700": lambda: (stop(), start()),
        }, after={"tornado-records backup /srv/backups/records-": damage})  # fmt: skip

        assert get("2024-01-01T00:00:00") == etag(kept) and get("2024-01-02T00:00:00") == etag(lost)  # restored
        assert root.path("/var/lib/tornado-records.damaged").is_dir()
        backups = sorted(path.name for path in root.path("/srv/backups").iterdir())
        assert [name.split("-")[0] for name in backups] == ["before", "records"], backups
        new_token = root.path("/etc/tornado-records").joinpath("token").read_text().strip()
        assert new_token != old_token
        assert put("2024-01-03T00:00:00", b"x", old_token) == 401 and put("2024-01-03T00:00:00", b"x", new_token) == 204
    finally:
        root.stop_all()


def test_scale_out_md_as_written_migrates_into_postgresql_and_seaweedfs_and_two_processes_serve(
    tmp_path: Path, postgres
) -> None:
    import botocore.session
    from psycopg import sql

    from support.engines import weed_program

    for program in ("curl", "nginx", "openssl", "ffmpeg", "runuser", "psql", "createdb"):
        require(program)
    weed_program()
    root = Root(tmp_path)
    root.checkout()
    root.env.update(PGHOST="127.0.0.1", PGPORT=str(postgres.port))  # the tests' PostgreSQL, for psql and the service
    show = root.work / "show.mp3"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=330:duration=2",
                    "-c:a", "libmp3lame", "-b:a", "128k", str(show)], check=True)  # fmt: skip
    ports = [root.ports[port] for port in (10700, 10701, 10702)]
    processes: dict[int, subprocess.Popen] = {}

    def start(*which: int) -> None:
        for port in which:
            processes[port] = start_service(root, port)

    def stop(*which: int) -> None:
        for port in which:
            processes[port].send_signal(signal.SIGTERM)
            assert processes[port].wait(timeout=30) == 0

    def settings() -> dict[str, str]:
        from support.docs_shell import read_environment_file

        return read_environment_file(root.path("/etc/tornado-records") / "environment")

    def s3():  # noqa: ANN202
        given = settings()
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=given["RECORDS_S3_ENDPOINT"], region_name="us-east-1",
            aws_access_key_id=given["AWS_ACCESS_KEY_ID"], aws_secret_access_key=given["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def seaweedfs() -> None:
        root.start("seaweedfs.service")
        client = s3()

        def ready() -> bool:
            try:
                client.head_bucket(Bucket="station-archive")
                return True
            except Exception:  # noqa: BLE001 - not up yet, or the bucket not made yet
                return False

        assert wait_until(ready, timeout=90), (root.work / "seaweedfs.service.log").read_text()[-3000:]

    try:
        walk(root, RUNNING, {
            "systemctl enable --now tornado-records@10700": lambda: start(ports[0]),
            "systemctl enable --now tornado-records-nginx": lambda: start_nginx(root),
            "systemctl enable --now tornado-records-recorder": lambda: None,  # not needed here
        })  # fmt: skip
        starts = ("2024-01-01T00:00:00", "2024-01-01T01:00:00")
        # analysed first: the migration carries the analyses over, and the listing items are compared whole
        assert wait_until(lambda: all((record(root, s) or {}).get("analysis") == "done" for s in starts), timeout=60)
        before = {start: record(root, start) for start in starts}

        walk(root, SCALE_OUT, {
            "systemctl enable --now seaweedfs": seaweedfs,
            "systemctl disable --now tornado-records@10700": lambda: stop(ports[0]),
            "systemctl enable --now tornado-records@10701 tornado-records@10702": lambda: start(*ports[1:]),
            "systemctl reload tornado-records-nginx": lambda: reload_nginx(root),
            "systemctl stop tornado-records@10701 tornado-records@10702": lambda: stop(*ports[1:]),
            "systemctl start tornado-records@10701 tornado-records@10702": lambda: start(*ports[1:]),
        })  # fmt: skip

        # Two processes on PostgreSQL and SeaweedFS serve the records as the one process did, through nginx.
        for start_, entry in before.items():
            assert record(root, start_) == entry
            for port in ports[1:]:
                listed = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/records/{EVENT}").read())
                assert [r["etag"] for r in listed["records"] if r["start"] == start_] == [entry["etag"]]
        status, headers, body = https(root, f"/records/{EVENT}/2024-01-01T00:00:00")
        assert status == 200 and body == show.read_bytes() and headers["Content-Type"] == "audio/mpeg"
        keys = [item["Key"] for item in s3().list_objects_v2(Bucket="station-archive").get("Contents", [])]
        assert keys and all(key.startswith("records/") for key in keys)
        assert "postgresql://tornado-records:" in settings()["RECORDS_INDEX"]
        [backup] = root.path("/srv/backups").iterdir()
        assert (backup / "records.sqlite3").exists()
    finally:
        root.stop_all()
        postgres.execute(sql.SQL("DROP DATABASE IF EXISTS records WITH (FORCE)"))
        postgres.execute(sql.SQL('DROP ROLE IF EXISTS "tornado-records"'))
