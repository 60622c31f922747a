"""Bad input over raw sockets to a real `tornado-records` process: a corpus of known-bad requests, and a property-based
fuzz (hypothesis) of paths, query strings, headers and bodies. Never a 5xx, never a traceback, every refusal a JSON
error (those Tornado makes on its own too), and nothing stored: blobs/, tmp/ and the listing stay as they were.

Paths on disk are never built from request text: the store names each blob by a fresh uuid4 and uploads in flight
by a random name (see store.py); event and start are only ever SQLite parameters."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.request
import re
import socket
import time
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.rawsocket import assert_json_error, assert_no_server_error, parse_reply, send, stored_state
from support.records import EVENT, START, files_in, record_url
from support.service import Service
from support.waiting import wait_until

OLD = b"the earlier version, which must stay whole"
# Examples per fuzzed part of the request (five parts), the same ones on every run; RECORDS_FUZZ_EXAMPLES=2000 runs
# that many fresh random ones instead, for a longer hunt.
EXAMPLES = int(os.environ.get("RECORDS_FUZZ_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One real process for the module, holding one record (so that a replacement would show)."""
    proc = Service(tmp_path_factory.mktemp("bad-input") / "data")
    reply = send(proc.port, put_request(record_url(), OLD))
    assert reply.status == 204
    # the record's analysis ends first (it is `unsupported`: not audio), so that the listing then stays as it is
    listed = lambda: json.loads(urllib.request.urlopen(f"{proc.url}/records/{EVENT}", timeout=10).read())  # noqa: E731
    assert wait_until(lambda: listed()["records"][0]["analysis"] != "pending", timeout=60)
    proc.baseline = stored_state(proc.port, proc.data_dir)
    yield proc
    assert proc.stop() == 0
    assert "Traceback (most recent call last)" not in proc.log


@pytest.fixture
def unchanged(target: Service) -> Iterator[None]:
    """Asserts at the end of a test that nothing was stored, changed or left in flight, and the process lives."""
    yield
    assert target.proc.poll() is None
    assert wait_until(lambda: stored_state(target.port, target.data_dir) == target.baseline, timeout=5)
    assert send(target.port, request("GET", record_url())).body.endswith(OLD)


def request(method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    """A request with Host and `Connection: close`, and `headers` as given (duplicates allowed), as bytes."""
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers or [])]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


def put_request(path: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> bytes:
    return request("PUT", path, [("Content-Length", str(len(body))), *(headers or [])], body)


WRONG_DIGEST = "sha-256=:" + base64.b64encode(hashlib.sha256(b"something else").digest()).decode() + ":"
REC = record_url()
LIST = f"/records/{EVENT}"
HEAD = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"

# (name, raw request, expected status or None for any 4xx): each must be refused with a JSON error, storing nothing.
CORPUS: list[tuple[str, bytes, int | None]] = [
    # The request line and paths
    ("garbage request line", b"HELLO\r\n\r\n", 400),
    ("HTTP/2.0 on an HTTP/1.1 socket", b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ("no Host in HTTP/1.1", b"GET /ping HTTP/1.1\r\n\r\n", 400),
    ("unknown method", request("BREW", "/ping"), 405),
    ("lower-case method", request("get", "/ping"), 405),
    ("traversal in the path", request("GET", "/records/../../etc/passwd"), 404),
    ("encoded traversal as event", request("GET", "/records/%2e%2e%2f%2e%2e%2fetc%2fpasswd/x"), 400),
    ("encoded traversal as start", put_request(f"/records/{EVENT}/..%2f..%2fblobs%2fx", b"x"), 400),
    ("NUL in start", put_request(f"/records/{EVENT}/{START}%00", b"x"), 400),
    ("start with an offset", put_request(f"/records/{EVENT}/{START}Z", b"x"), 400),
    ("invalid UTF-8, encoded", request("GET", "/records/%ff%fe"), 400),
    ("invalid UTF-8, raw", b"GET /records/\xff\xfe/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
    ("a long path", request("GET", "/records/" + "a" * 60_000), 400),
    ("a path over the head limit", request("GET", "/records/" + "a" * 70_000), 431),
    # Query strings
    ("negative limit", request("GET", LIST + "?limit=-1"), 400),
    ("huge limit", request("GET", LIST + "?limit=" + "9" * 40), 400),
    ("huge offset", request("GET", LIST + "?offset=" + "9" * 40), 400),
    ("bad after", request("GET", LIST + "?after=2024-13-01"), 400),
    ("after with offset", request("GET", LIST + "?after=2024-01-01T00:00:00%2B01:00"), 400),
    ("bad order", request("GET", LIST + "?order=sideways"), 400),
    ("invalid UTF-8 in a query argument", request("GET", LIST + "?limit=%ff"), 400),
    # Headers
    ("header over the head limit", request("GET", "/ping", [("X-Big", "a" * 70_000)]), 431),
    ("header line without a colon", HEAD + b"nocolon\r\n\r\n", 400),
    ("space in a header name", HEAD + b"Bad Header: x\r\n\r\n", 400),
    ("NUL in a header value", HEAD + b"X-A: a\x00b\r\n\r\n", 400),
    ("unequal duplicate Content-Length", HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("negative Content-Length", put_request(REC, b"").replace(b"Content-Length: 0", b"Content-Length: -1"), 400),
    ("Content-Length not a number", request("PUT", REC, [("Content-Length", "1e3")]), 400),
    ("Content-Length in hex", request("PUT", REC, [("Content-Length", "0x10")]), 400),
    ("Content-Length beyond any disk", request("PUT", REC, [("Content-Length", "9" * 30)]), 413),
    ("Content-Length and chunked", request("PUT", REC, [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]), 400),
    ("Transfer-Encoding gzip", request("PUT", REC, [("Transfer-Encoding", "gzip")]), 400),
    ("Transfer-Encoding chunked twice", request("PUT", REC, [("Transfer-Encoding", "chunked, chunked")]), 400),
    ("invalid UTF-8 in Content-Type", put_request(REC, b"x", [("Content-Type", "audio/\udcff\udcfe"), ("Content-Digest", WRONG_DIGEST)]), 400),
    ("control character in Content-Type", put_request(REC, b"x", [("Content-Type", "audio/ogg\x01")]), 400),
    ("malformed digest", put_request(REC, b"x", [("Content-Digest", "sha-256=:not base64:")]), 400),
    ("malformed Range, unsatisfiable", request("GET", REC, [("Range", "bytes=99999999999999999999-")]), 416),
    ("If-Match that never matches", request("DELETE", REC, [("If-Match", '"nope"')]), 412),
    ("If-None-Match * on an existing record", put_request(REC, b"x", [("If-None-Match", "*")]), 412),
    # Bodies
    ("a digest that does not match", put_request(REC, b"new", [("Content-Digest", WRONG_DIGEST)]), 400),
    ("Content-MD5 not ASCII", put_request(REC, b"x", [("Content-MD5", "\udcff" * 22 + "==")]), 400),
    ("an MD5 that does not match", put_request(REC, b"new", [("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")]), 400),
    ("Content-Length over the limit of a small route", request("GET", "/ping", [("Content-Length", "2000000")]), 413),
    ("body over the limit of a list", request("GET", LIST, [("Content-Length", str(1 << 21))]), 413),
    ("chunk size not hex", request("PUT", REC, [("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size line too long", request("PUT", REC, [("Transfer-Encoding", "chunked")], b"1" * 100 + b"\r\n"), 400),
    ("chunk not terminated", request("PUT", REC, [("Transfer-Encoding", "chunked")], b"5\r\nhelloXX0\r\n\r\n"), 400),
    ("bad chunk after 100 Continue", request("PUT", REC, [("Transfer-Encoding", "chunked"), ("Expect", "100-continue")], b"zz\r\n"), 400),
    ("chunked body on a small route", request("GET", "/ping", [("Transfer-Encoding", "chunked")], b"zz\r\n"), 400),
]


@pytest.mark.parametrize("raw, expected", [pytest.param(raw, exp, id=name) for name, raw, exp in CORPUS])
def test_corpus_is_refused_with_a_json_error_and_nothing_stored(target, unchanged, raw, expected) -> None:
    reply = send(target.port, raw)
    assert_json_error(reply)
    if expected is not None:
        assert reply.status == expected, reply.raw[:300]


def test_bodies_that_tornado_refuses_are_json_413_and_400(target, unchanged) -> None:
    """Past the 1 MiB limit of a route that takes no upload: a Content-Length is 413 before the body; a chunked body
    that grows past it is 400 (Tornado stops reading it; which of its refusals it was is not told)."""
    assert send(target.port, request("GET", "/ping", [("Content-Length", str(1 << 20 | 1))])).status == 413
    body = (b"%x\r\n" % (1 << 19) + bytes(1 << 19) + b"\r\n") * 3 + b"0\r\n\r\n"
    assert_json_error(reply := send(target.port, request("GET", "/ping", [("Transfer-Encoding", "chunked")], body)))
    assert reply.status == 400
    assert send(target.port, request("GET", "/ping", [("Content-Length", str(1 << 20))], bytes(1 << 20))).status == 204


def test_a_refused_head_closes_the_connection_after_its_answer(target) -> None:
    """The JSON answer that replaces Tornado's bare 400 says `Connection: close`, and the connection is closed."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-A: \x00\r\n\r\n")
        raw = b""
        while part := sock.recv(65536):
            raw += part
    reply = parse_reply(raw)
    assert reply.status == 400 and reply.headers["connection"] == "close"
    assert int(reply.headers["content-length"]) == len(reply.body)


def test_a_client_that_vanishes_mid_body_stores_nothing(target, unchanged) -> None:
    for raw in (put_request(REC, b"0123456789")[:-5], request("PUT", REC, [("Transfer-Encoding", "chunked")], b"a\r\n01")):
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
            sock.sendall(raw)
            time.sleep(0.05)


def test_keep_alive_still_works_after_a_refusal_on_another_connection(target) -> None:
    send(target.port, b"HELLO\r\n\r\n")
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 204")


# -- the fuzz ----------------------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize="RECORDS_FUZZ_EXAMPLES" not in os.environ,  # by default reproducible: CI never flaky
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

path_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n ?#"), max_size=80)
raw_bytes = st.binary(max_size=120)
# \udc80 and \udcff become the raw bytes 0x80 and 0xff (invalid UTF-8) when the request is encoded
token_chars = st.sampled_from(list("abcXYZ019-_.~%/:;,=*\"'\\ \t\x00\x7f\x80\xff\udc80\udcff"))
header_value = st.text(token_chars, max_size=60) | st.sampled_from(
    ["", "-1", "0x10", "1e3", "9" * 40, "5, 6", "chunked", "gzip", "chunked, gzip", "identity", "bytes=abc",
     "bytes=9-5", "bytes=-", "bytes=0-0,0-0,0-0", "*", '"x"', "W/", "Bearer", "sha-256=:x:"]
)  # fmt: skip
header_name = st.sampled_from(
    ["Content-Length", "Transfer-Encoding", "Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since",
     "If-Unmodified-Since", "Content-Type", "Content-Digest", "Repr-Digest", "Content-MD5", "Expect", "Connection",
     "Last-Event-ID", "Authorization", "X-Forwarded-For", "Host", "X-Whatever"]
)  # fmt: skip
method = st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "PATCH", "get", "BREW"])


def quote_bytes(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


@FUZZ
@given(method=method, path=path_text)
def test_fuzzed_paths(target, method: str, path: str) -> None:
    prefix = ["/records/", f"/records/{EVENT}/", "/record/", "/", "/openapi/", f"/records/{EVENT}/{START}/"]
    for base in prefix:
        check(target, request(method, base + path.replace("%", "%25"), [("Content-Length", "0")]))


@FUZZ
@given(path=raw_bytes, query=raw_bytes)
def test_fuzzed_encoded_bytes_in_paths_and_queries(target, path: bytes, query: bytes) -> None:
    check(target, request("GET", f"/records/{quote_bytes(path)}/{START}"))
    check(target, request("PUT", f"/records/{EVENT}/{quote_bytes(path)}", [("Content-Length", "0")]))
    check(target, request("GET", f"{LIST}?{quote_bytes(query)}=1&limit={quote_bytes(query)}"))


@FUZZ
@given(args=st.lists(st.tuples(st.sampled_from(["limit", "offset", "after", "before", "order", "x"]), path_text), max_size=6))
def test_fuzzed_query_strings(target, args: list[tuple[str, str]]) -> None:
    query = "&".join(f"{k}={v.replace('%', '%25').replace('&', '%26')}" for k, v in args)
    check(target, request("GET", f"{LIST}?{query}"))


@FUZZ
@given(
    method=method,
    headers=st.lists(st.tuples(header_name, header_value), max_size=8),  # names repeat: duplicated headers
    pad=st.sampled_from([0, 0, 0, 1000, 65_000, 66_000, 200_000]),  # around the 64 KiB limit of the head
)
def test_fuzzed_headers(target, method: str, headers: list[tuple[str, str]], pad: int) -> None:
    # A PUT must not store: a wrong digest comes last, so that a request the fuzz happens to make valid is refused.
    extra = [("Content-Digest", WRONG_DIGEST)] if method == "PUT" else []
    if pad:
        headers = [*headers, ("X-Pad", "p" * pad)]
    path = REC if method != "DELETE" else f"/records/{EVENT}/1999-01-01T00:00:00"
    check(target, request(method, path, headers + extra, b"body"))


@FUZZ
@given(body=raw_bytes, chunked=st.booleans(), framing=st.sampled_from(["exact", "short", "long", "raw"]))
def test_fuzzed_bodies(target, body: bytes, chunked: bool, framing: str) -> None:
    headers = [("Content-Digest", WRONG_DIGEST)]
    if framing == "raw":  # the bytes as they come, as if chunked
        raw = request("PUT", REC, [*headers, ("Transfer-Encoding", "chunked")], body)
    elif chunked:
        raw = request("PUT", REC, [*headers, ("Transfer-Encoding", "chunked")], b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    else:
        size = len(body) + {"exact": 0, "short": -1, "long": 1}[framing]
        raw = request("PUT", REC, [*headers, ("Content-Length", str(max(size, 0)))], body)
    check(target, raw, complete=framing not in ("raw", "long"))


def check(target: Service, raw: bytes, complete: bool = True) -> None:
    """The request is answered without a 5xx or traceback (an error as JSON), and nothing was stored.

    An incomplete request (`complete=False`: its body may be shorter than it says) is sent and then the sending side
    is shut: the server may answer it, or rightly close without an answer."""
    reply = send(target.port, raw, half_close=not complete)
    if complete or reply.status:
        assert_no_server_error(reply)
    assert target.proc.poll() is None
    assert wait_until(lambda: stored_state(target.port, target.data_dir) == target.baseline, timeout=5)


def test_the_fuzz_can_see_a_stored_record(target) -> None:
    """The fuzz's own check fails when something is stored (so its passing means something)."""
    path = f"/records/{EVENT}/2030-01-01T00:00:00"
    assert send(target.port, put_request(path, b"stored")).status == 204
    try:
        with pytest.raises(AssertionError):
            check(target, request("GET", "/ping"))  # waits its 5 s for the state to come back
    finally:
        assert send(target.port, request("DELETE", path)).status == 204


def test_names_on_disk_never_come_from_the_request(target) -> None:
    """Blobs are named by uuid4 whatever the request said (here a start, and a Content-Type full of dots that is still
    a media type: a Content-Type that is not one, such as ../../etc/passwd, is refused, see test_hostile.py)."""
    path = f"/records/{EVENT}/2031-01-01T00:00:00.000001"
    assert send(target.port, put_request(path, b"x", [("Content-Type", "../..;name=..")])).status == 204
    try:
        names = [*files_in(target.data_dir / "blobs"), *files_in(target.data_dir / "tmp")]
        assert len(names) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", name) for name in names), names
    finally:
        assert send(target.port, request("DELETE", path)).status == 204
