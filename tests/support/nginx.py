"""A real nginx in front of the service: deploy/nginx.conf with only its addresses and paths changed for the test,
and a test certificate made with openssl. Plain classes and functions (the `nginx` fixture is in
tests/system/conftest.py), so that bench/ can start the same nginx."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
from pathlib import Path

from support.components import require
from support.paths import REPO
from support.ports import free_port
from support.waiting import wait_until


class Nginx:
    """A real nginx running deploy/nginx.conf, with only its addresses and paths changed for the test: its HTTPS
    server on a free port of 127.0.0.1, plain HTTP there unless `tls` (the certificate is a test one, made with
    openssl; `url` is then https://localhost:PORT), and its HTTP server, which sends clients to HTTPS, on `http_port`."""

    def __init__(self, workdir: Path, upstream_ports: list[int], data_dir: Path, tls: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        self.tls = tls
        self.certificate, key = make_certificate(workdir / "tls")
        self.error_log = workdir / "logs" / "nginx-error.log"
        for _ in range(5):  # a port found free may be taken before nginx binds it (by any process): then others
            self.port = free_port()
            self.http_port = free_port()
            self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"
            self.conf = workdir / "nginx.conf"
            self.conf.write_text(nginx_conf(
                (REPO / "deploy" / "nginx.conf").read_text(),
                upstream_ports=upstream_ports, data_dir=data_dir, workdir=workdir, port=self.port,
                http_port=self.http_port, tls=tls, certificate=self.certificate, key=key,
            ))  # fmt: skip
            self.proc = subprocess.Popen(
                [require("nginx"), "-p", str(workdir), "-c", str(self.conf), "-g", "daemon off;"],
                stderr=subprocess.PIPE,
                text=True,
            )
            if not wait_until(self._answering, timeout=30):
                self.proc.kill()
                raise RuntimeError("nginx did not answer on its port")
            if self.proc.poll() is None:
                return
            error = self.proc.stderr.read()
            if "Address already in use" not in error:
                raise RuntimeError("nginx did not start: " + error)
        raise RuntimeError("nginx found no free port: " + error)

    def _answering(self) -> bool:
        """Whether nginx itself answers on its port (its internal location /_blobs/: 404, from no upstream), or it
        has exited (as it does after a while when the port is taken)."""
        if self.proc.poll() is not None:
            return True
        if self.tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=5, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("HEAD", "/_blobs/")
            return conn.getresponse().getheader("Server", "").startswith("nginx")
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def nginx_conf(
    conf: str,
    *,
    upstream_ports: list[int],
    data_dir: Path,
    workdir: Path,
    port: int,
    http_port: int,
    tls: bool,
    certificate: Path,
    key: Path,
) -> str:
    """deploy/nginx.conf's text with the test's addresses and paths (each place asserted to be there)."""
    for old, new in [
        ("server 127.0.0.1:10700;", " ".join(f"server 127.0.0.1:{port};" for port in upstream_ports)),
        ("/var/lib/tornado-records", str(data_dir)),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port}{' ssl' if tls else ''};"),
        ("listen [::]:443 ssl;", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("/etc/tornado-records/tls/fullchain.pem", str(certificate)),
        ("/etc/tornado-records/tls/privkey.pem", str(key)),
        ("user www-data;", "user root;" if os.geteuid() == 0 else ""),
        ("/run/tornado-records-nginx.pid", str(workdir / "nginx.pid")),
        ("/var/log/tornado-records/", str(workdir / "logs") + "/"),
        ("/var/www/html", str(workdir / "acme")),
        ("http {", "http {\n" + "".join(f"    {kind}_temp_path {workdir / kind};\n" for kind in TEMP_PATHS)),
    ]:
        assert old in conf, old
        conf = conf.replace(old, new)
    return conf


def make_certificate(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `name` (and 127.0.0.1) and its key, made with openssl in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [require("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return certificate, key


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
