"""4. /ping under wrk, and beside it, in the same runs, a baseline install (--baseline) of an earlier version."""

from __future__ import annotations

import contextlib

from harness import Bench, cpu_seconds
from table import Row, Target, compare, repeat
from transfers import wrk

CONNECTIONS = 50
TARGET_SPEED_UP = Target(">=", 3)  # issue 27: three times the requests/s of the version before it
TARGET_P99 = Target("<", 20, " ms")


def run(bench: Bench) -> list[Row]:
    """4. /ping under wrk (2 threads, 50 connections): requests/s, p99 latency and the server's CPU time per request
    (user + system, all its threads: less sensitive than the rate to what else runs on the machine), beside nginx's
    `return 204`; with --baseline, the baseline's too (each run measures all three, one after the other) and ours /
    baseline."""
    seconds = bench.options.ping_seconds
    baseline = bench.options.baseline
    with contextlib.ExitStack() as servers:
        service, nginx = servers.enter_context(bench.service()), servers.enter_context(bench.reference())
        before = None if baseline is None else servers.enter_context(bench.service(command=baseline))
        order = [("ours", service), ("nginx", nginx), *([] if before is None else [("baseline", before)])]

        def measure() -> dict[str, float]:
            m = {}
            for name, server in order:
                cpu = cpu_seconds(server)
                load = wrk(server.url("/ping"), 2, CONNECTIONS, seconds)
                m[name], m[name + "_p99"] = load.rps, load.p99 * 1e3
                m[name + "_cpu"] = (cpu_seconds(server) - cpu) / (load.rps * seconds) * 1e6
            if before is not None:
                m["speed_up"] = m["ours"] / m["baseline"]  # each run's own ratio; the row shows their median
            order.reverse()  # the next run measures them the other way round
            return m

        m = repeat(bench.options.runs, measure)
    rows = [
        compare(f"/ping, {CONNECTIONS} connections (requests/s)", m["ours"], m["nginx"], "{:.0f}"),
        compare(f"/ping, {CONNECTIONS} connections, p99 (ms)", m["ours_p99"], m["nginx_p99"], "{:.2f}", TARGET_P99,
                judge_ratio=False),  # fmt: skip
        compare("/ping: server CPU per request (µs)", m["ours_cpu"], m["nginx_cpu"], "{:.0f}"),
    ]
    if before is not None:
        rows += [
            compare(f"baseline: /ping, {CONNECTIONS} connections (requests/s)", m["baseline"], m["nginx"], "{:.0f}"),
            compare(f"baseline: /ping, {CONNECTIONS} connections, p99 (ms)", m["baseline_p99"], m["nginx_p99"],
                    "{:.2f}"),  # fmt: skip
            compare("baseline: /ping: server CPU per request (µs)", m["baseline_cpu"], m["nginx_cpu"], "{:.0f}"),
            Row(f"/ping, {CONNECTIONS} connections: ours / baseline (requests/s)",
                f"{m['ours']:.0f} / {m['baseline']:.0f}", ratio=f"{m['speed_up']:.2f}x", target=str(TARGET_SPEED_UP),
                verdict=TARGET_SPEED_UP.verdict(m["speed_up"])),  # fmt: skip
        ]
    return rows
