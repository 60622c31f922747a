"""Several processes serving one port and one data directory (`--processes N`): the parent binds, forks the children
and watches over them; each child builds its own application (connections, threads, event loop) after the fork.

The parent serves nothing. A child that dies is replaced; one that cannot start (it exits with an error within
STARTING seconds, not killed) ends them all, with its status. SIGTERM or SIGINT to the parent ends the children as
one process ends at such a signal (gracefully: the parent closes the pipe that each child watches, see `watch_parent`,
so that a child that also had the signal itself, from a terminal or a service manager, sees it once); a second one
kills them at once. A child whose parent dies, however, ends by itself too (the pipe closes then).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import Callable

log = logging.getLogger("tornado_records")

STARTING = 10.0  # seconds: a child that exits with an error this soon after its fork could not start
RESPAWN_PAUSE = 1.0  # seconds between replacing a child that lived less than this and its next fork
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


def supervise(count: int, run: Callable[[int], int], listening: list[socket.socket]) -> int:
    """Fork `count` children, each running `run(parent)` (`parent`: the read end of the pipe that closes when the
    parent ends or asks them to end; returns its exit status), and keep them running until a signal; the exit status
    for the parent. The `listening` sockets are closed when the children are asked to end, so that new connections
    are refused once the children have stopped listening too, as one process refuses them."""
    parent, asking = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, float] = {}  # pid -> when it was forked (monotonic)

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(_child(run, parent, asking))
        children[pid] = time.monotonic()

    for _ in range(count):
        fork()
    status, stopping, respawn_at, wanted = 0, False, 0.0, 0
    while children or wanted:
        received = signal.sigtimedwait(_SIGNALS, 0.2 if wanted else 1.0)
        if received is not None and received.si_signo != signal.SIGCHLD:
            name = signal.Signals(received.si_signo).name
            if stopping:
                log.warning("second %s: killing the %d process(es) at once", name, len(children))
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                status = 1
            else:
                log.info("%s: ending the %d process(es)", name, len(children))
                stopping, wanted = True, 0
                _ask_to_end(asking, listening)
        for pid, ended in _reaped():
            forked = children.pop(pid)
            if stopping:
                continue
            if os.WIFEXITED(ended) and os.WEXITSTATUS(ended) != 0 and time.monotonic() - forked < STARTING:
                log.error("process %d could not start: ending the others", pid)
                status, stopping, wanted = os.WEXITSTATUS(ended), True, 0
                _ask_to_end(asking, listening)
                continue
            log.warning("process %d ended (%s): starting another", pid, _how(ended))
            wanted += 1
            if time.monotonic() - forked < RESPAWN_PAUSE:
                respawn_at = time.monotonic() + RESPAWN_PAUSE
        while wanted and not stopping and time.monotonic() >= respawn_at:
            fork()
            wanted -= 1
    return status


def _ask_to_end(asking: int, listening: list[socket.socket]) -> None:
    os.close(asking)
    for sock in listening:
        sock.close()


def _child(run: Callable[[int], int], parent: int, asking: int) -> int:
    """In a child just forked: run, and the status it ends with (it never returns to the parent's code)."""
    try:
        os.close(asking)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        return run(parent)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("a serving process failed")
        return 1
    finally:
        logging.shutdown()
        sys.stderr.flush()


def _reaped() -> list[tuple[int, int]]:
    """The children that have ended (pid, wait status), reaped."""
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, status))


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return f"status {os.WEXITSTATUS(status)}"


def watch_parent(parent: int, gone: Callable[[], None]) -> None:
    """Call `gone` on the running event loop once the parent ends or asks this child to end (its pipe closes)."""
    loop = asyncio.get_running_loop()

    def closed() -> None:
        loop.remove_reader(parent)
        gone()

    loop.add_reader(parent, closed)
