"""Who may write: the test's secret, its Bearer header, and one request on its own connection (a refused body closes the
connection)."""

from __future__ import annotations

import http.client

SECRET = "s3cr3t-t0ken_value.~+/=="


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
