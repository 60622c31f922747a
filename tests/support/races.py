"""Writers racing on one record through two processes."""

from __future__ import annotations

import threading

from support.rawhttp import request
from support.records import record_url


def race_writers(a, b, bodies: list[bytes]) -> list[int]:  # noqa: ANN001
    """PUT each body with `If-None-Match: *` to the one record at once, in turn through process a and b; the
    statuses, in the bodies' order."""
    statuses = [0] * len(bodies)

    def put(n: int) -> None:
        target = (a, b)[n % 2]
        statuses[n] = request(target.url, "PUT", record_url(), bodies[n], {"If-None-Match": "*"})[0]

    threads = [threading.Thread(target=put, args=(n,)) for n in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses
