"""Who is asking, and who may write: the bearer token of a request, its client behind trusted proxies, and the
public URL it came to. Pure functions of header values; they know nothing of Tornado."""

from __future__ import annotations

import ipaddress
import re

from tornado_records.config import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def bearer_token(authorization: str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), as the bytes sent; None if the
    header is absent or of another scheme."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip().encode("latin1")  # header values reach Python decoded as latin1: these are the bytes sent


def client_address(peer: str, forwarded_for: list[str], real_ip: str | None, trusted: tuple[Network, ...]) -> str:
    """The client a request comes from: the peer, unless the peer is a trusted proxy; then the rightmost address of
    X-Forwarded-For that is not a trusted proxy (as nginx's realip module does with `real_ip_recursive on`), or
    else X-Real-IP. `forwarded_for` holds each X-Forwarded-For header's value. An address taken from a header is
    given as parsed (its canonical text), never as the header wrote it.

    Walking X-Forwarded-For from the right stops at an entry that is not an address; the client is then the last
    address walked past, since only trusted proxies vouched for it."""
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    if not hops:
        address = _address(real_ip.strip()) if real_ip else None
        return peer if address is None else str(address)
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = str(address)  # the address as parsed, never the header's text
        if not _within(hop, trusted):
            break
    return client


# A host as a URL names it: a name or IPv4 address, or an IPv6 address in brackets; with a port or not
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def public_base(peer: str, scheme: str, host: str, forwarded_proto: str | None, forwarded_host: str | None,
                trusted: tuple[Network, ...]) -> str | None:  # fmt: skip
    """The scheme and host (`https://radio.example`) that a request came to: its own, unless the peer is a trusted
    proxy that says otherwise (the first of X-Forwarded-Proto's values if http or https, the first of
    X-Forwarded-Host's); None if the host is not a host name (a link must not be made of it)."""
    if trusted and _within(peer, trusted):
        given = (forwarded_proto or "").split(",")[0].strip().lower()
        scheme = given if given in ("http", "https") else scheme
        host = (forwarded_host or "").split(",")[0].strip() or host
    return f"{scheme}://{host}" if _HOST.fullmatch(host) else None


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
    return address


def _within(text: str, networks: tuple[Network, ...]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in networks)
