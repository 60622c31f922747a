"""Who may write and who is asking, as pure functions: the Bearer token's scheme, a token file that cannot be read, the
client's address behind trusted proxies."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tornado_records.http.access import bearer_token, client_address
from tornado_records.config import ConfigError, build_config


def test_bearer_token_reads_the_scheme_in_any_case_and_nothing_else() -> None:
    assert bearer_token("Bearer abc") == b"abc"
    assert bearer_token("bEaReR   abc  ") == b"abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
    assert bearer_token("Bearer") == b""


def test_an_unreadable_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--token-file: cannot read the token file .*: Is a directory"):
        build_config({"token_file": str(tmp_path)}, {})  # a directory: unreadable even for root


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
