"""Who may write (--token-file), who is asking (--trusted-proxies) and how many may listen (--max-subscribers): over
real HTTP to an app, and to real processes where the log is what a user observes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from support.access import SECRET, bearer
from support.rawhttp import exchange, upload
from support.records import EVENT, files_in, record_url
from tornado_records.config import build_config


@pytest.fixture
def settings(token_file: Path) -> dict[str, str]:
    return {"token_file": str(token_file), "max_subscribers": "2"}


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


def test_the_secret_is_not_in_the_config_repr(token_file: Path) -> None:
    config = build_config({}, {"RECORDS_TOKEN_FILE": str(token_file)})
    assert config.token_file is not None and config.token_file.matches(SECRET.encode())
    assert SECRET not in repr(config) and SECRET not in str(config)


# -- the client behind trusted proxies --------------------------------------------------------------------------


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


