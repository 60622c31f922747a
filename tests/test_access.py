"""Who may write (--token-file), who is asking (--trusted-proxies) and how many may listen (--max-subscribers): over
real HTTP to an app, and to real processes where the log is what a user observes."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import COMMAND, EVENT, files_in, record_url, wait_until
from rawhttp import exchange, upload
from tornado_records.http.access import bearer_token, client_address
from tornado_records.config import ConfigError, build_config

SECRET = "s3cr3t-t0ken_value.~+/=="


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def settings(token_file: Path) -> dict[str, str]:
    return {"token_file": str(token_file), "max_subscribers": "2"}


def request(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    """One request on its own connection (a refused body closes the connection); returns the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def bearer(token: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the token ---------------------------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("headers", [{}, bearer("wrong"), bearer(SECRET + "x"), {"Authorization": f"Basic {SECRET}"}])
async def test_put_and_delete_without_the_token_are_401_json(fetch, data_dir: Path, headers: dict[str, str]) -> None:
    assert (await upload(fetch, record_url(), b"kept", **bearer())).code == 204
    for method in ("PUT", "DELETE"):
        response = await fetch(record_url(), method=method, headers=headers, **({"body": b"new"} if method == "PUT" else {}))
        assert response.code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="tornado-records"')
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.body) == {"status_code": 401, "detail": json.loads(response.body)["detail"]}
    assert (await fetch(record_url())).body == b"kept"
    assert len(files_in(data_dir / "blobs")) == 1 and files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_a_wrong_token_says_invalid_token_and_none_says_nothing_more(fetch) -> None:
    missing = await fetch(record_url(), method="DELETE")
    wrong = await fetch(record_url(), method="DELETE", headers=bearer("nope"))
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="tornado-records"'
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="tornado-records", error="invalid_token"'


@pytest.mark.gen_test
async def test_the_token_lets_put_and_delete_through_and_reads_stay_open(fetch) -> None:
    assert (await upload(fetch, record_url(), b"audio", **bearer())).code == 204
    assert (await fetch(record_url(), headers={"Authorization": "bearer " + SECRET})).code == 200  # scheme any case
    assert (await fetch(f"/records/{EVENT}")).code == 200
    assert (await fetch(record_url(), method="HEAD")).code == 200
    assert (await fetch("/ping")).code == 204
    assert (await fetch(record_url(), method="DELETE", headers=bearer())).code == 204


@pytest.mark.gen_test
@pytest.mark.parametrize("expect", [True, False])
async def test_401_comes_before_the_body_without_100_continue(http_server, base_url: str, data_dir, expect) -> None:
    headers = {"Content-Length": str(10 << 20), **({"Expect": "100-continue"} if expect else {})}
    answer = await exchange(base_url, "PUT", record_url(), headers)  # the head only: no body byte is sent
    assert answer.status == 401 and not answer.continued
    assert files_in(data_dir / "tmp") == []


@pytest.mark.gen_test
async def test_401_comes_before_any_word_about_the_request(fetch) -> None:
    """Without the token, a bad record name or precondition says nothing: the answer is 401."""
    assert (await fetch("/records/nope/nope", method="PUT", body=b"x")).code == 401
    assert (await fetch(record_url(), method="DELETE", headers={"If-Match": '"x"'})).code == 401


def test_bearer_token_reads_the_scheme_in_any_case_and_nothing_else() -> None:
    assert bearer_token("Bearer abc") == b"abc"
    assert bearer_token("bEaReR   abc  ") == b"abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
    assert bearer_token("Bearer") == b""


@pytest.mark.parametrize(
    "content, says",
    [(None, "cannot read"), ("", "is empty"), ("  \n", "is empty"), ("two words\n", "Bearer token"), ("a\nb", "Bearer")],
)
def test_a_bad_token_file_fails_at_start_with_one_clear_line(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [*COMMAND, "--port", "0", "--data-dir", str(tmp_path / "data"), "--token-file", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("tornado-records: error: --token-file:") and says in lines[0]


def test_an_unreadable_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--token-file: cannot read the token file .*: Is a directory"):
        build_config({"token_file": str(tmp_path)}, {})  # a directory: unreadable even for root


def test_the_secret_is_not_in_the_config_repr(token_file: Path) -> None:
    config = build_config({}, {"RECORDS_TOKEN_FILE": str(token_file)})
    assert config.token_file is not None and config.token_file.matches(SECRET.encode())
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_the_token_is_never_in_the_log_even_at_debug_level(service, token_file: Path) -> None:
    proc = service("--log-level", "debug", "--token-file", str(token_file))
    tried = [SECRET, "wrong-" + SECRET, SECRET[:-3]]
    for token in tried:
        for method, body in (("PUT", b"audio"), ("DELETE", None), ("GET", None)):
            request(proc.port, method, record_url() + "?token=no", body, bearer(token))
    request(proc.port, "PUT", "/records/nope/nope", b"x", bearer())
    assert wait_until(lambda: proc.log.count("tornado.access") >= 10)
    assert proc.stop() == 0
    assert " 401 " in proc.log and " 204 " in proc.log  # both kinds of answer were logged
    for token in tried:
        assert token not in proc.log
    assert SECRET[:8] not in proc.log


# -- the client behind trusted proxies --------------------------------------------------------------------------

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1"))


@pytest.mark.parametrize(
    "peer, forwarded, real_ip, client",
    [
        ("192.0.2.7", ["203.0.113.9"], None, "192.0.2.7"),  # an untrusted peer: its headers are ignored
        ("127.0.0.1", ["203.0.113.9"], None, "203.0.113.9"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.9, 10.1.2.3"], None, "203.0.113.9"),  # rightmost untrusted
        ("127.0.0.1", ["198.51.100.1", "203.0.113.9"], None, "203.0.113.9"),  # two headers: one list
        ("127.0.0.1", ["10.0.0.1, 10.0.0.2"], None, "10.0.0.1"),  # all trusted: the leftmost
        ("127.0.0.1", ["spoofed, 203.0.113.9"], None, "203.0.113.9"),
        ("127.0.0.1", ["203.0.113.9, junk"], None, "127.0.0.1"),  # nothing vouched for beyond the junk
        ("127.0.0.1", [], "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", [], "junk", "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.9"], "198.51.100.1", "203.0.113.9"),  # X-Forwarded-For first
        ("::ffff:127.0.0.1", ["203.0.113.9"], None, "203.0.113.9"),  # a dual-stack socket's IPv4 peer
        ("::1", ["2001:db8::1"], None, "2001:db8::1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], real_ip: str | None, client: str) -> None:
    assert client_address(peer, forwarded, real_ip, TRUSTED) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9"], "198.51.100.1", ()) == "127.0.0.1"


def access_line(proc, marker: str) -> str:  # noqa: ANN001
    line = wait_until(lambda: next((l for l in proc.lines if marker in l and "tornado.access" in l), None))
    assert line, proc.log
    return line.strip()


@pytest.mark.parametrize("trusted, shown", [("127.0.0.1", "203.0.113.9"), ("10.0.0.0/8, ::1", "127.0.0.1")])
def test_the_access_log_shows_the_client_behind_a_trusted_proxy(service, trusted: str, shown: str) -> None:
    proc = service(env={"RECORDS_TRUSTED_PROXIES": trusted})
    for marker, headers in (
        ("xff", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}),
        ("realip", {"X-Real-IP": "203.0.113.9"}),
    ):
        assert request(proc.port, "GET", f"/ping?{marker}", None, headers) == 204
        assert access_line(proc, f"/ping?{marker}").endswith(f" {shown}")


def test_trusted_proxies_flag_wins_and_bad_values_fail(tmp_path: Path) -> None:
    config = build_config({"trusted_proxies": "127.0.0.1,10.0.0.0/8"}, {"RECORDS_TRUSTED_PROXIES": "::1"})
    assert [str(n) for n in config.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(ConfigError, match=r"RECORDS_TRUSTED_PROXIES: 'localhost' is not an IP address"):
        build_config({}, {"RECORDS_TRUSTED_PROXIES": "127.0.0.1, localhost"})


# -- the cap on subscribers -------------------------------------------------------------------------------------


async def open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


@pytest.mark.gen_test
async def test_past_max_subscribers_sse_is_503_json_with_retry_after(http_server, http_port: int, app) -> None:
    first = await open_stream(http_port)
    second = await open_stream(http_port)
    assert first[2].startswith(b"HTTP/1.1 200") and second[2].startswith(b"HTTP/1.1 200")
    reader, writer, head = await open_stream(http_port)
    assert head.startswith(b"HTTP/1.1 503")
    assert re.search(rb"\r\nRetry-After: \d+\r\n", head) and b"Content-Type: application/json" in head
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert json.loads(await reader.readexactly(length))["status_code"] == 503
    writer.close()
    first[1].close()  # one leaves: there is room again
    hub = app.settings["hub"]
    assert await asyncio.wait_for(_until(lambda: len(hub.subscribers) == 1), 10)
    third = await open_stream(http_port)
    assert third[2].startswith(b"HTTP/1.1 200")
    for stream in (second, third):
        stream[1].close()


async def _until(condition) -> bool:  # noqa: ANN001
    while not condition():
        await asyncio.sleep(0.01)
    return True


def test_max_subscribers_default_is_above_issue_8s_10000_and_bad_values_fail() -> None:
    assert build_config({}, {}).max_subscribers > 10_000
    assert build_config({}, {"RECORDS_MAX_SUBSCRIBERS": "7"}).max_subscribers == 7
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(ConfigError, match="--max-subscribers"):
            build_config({"max_subscribers": bad}, {})
