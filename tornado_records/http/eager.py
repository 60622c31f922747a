"""A request's handler started at once: Tornado's `_HandlerDelegate`, whose `execute` runs the handler's coroutine
right away, in the call that hands it the request, rather than in a Task of its own on a later turn of the loop.

A handler that answers without waiting (`/ping`, a 404, a refusal in `prepare`) is then done, its answer written and
its connection ready for the next request, before Tornado's connection looks at it again: no Task, no future to wait
for, no close callback set on the stream and taken off again (each of which re-registers the socket with the loop).
A handler that waits for something is carried on by a Task from where it first waited, as Python 3.12's eager tasks
do. What the handler does, and in what order, is Tornado's own: only when its first step runs changes.
"""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any, Awaitable, Coroutine, Generator

import tornado.concurrent
import tornado.web

app_log = logging.getLogger("tornado.application")


class EagerDelegate(tornado.web._HandlerDelegate):
    """Tornado's delegate from a request to its RequestHandler, starting the handler at once."""

    def execute(self) -> Awaitable[None] | None:
        handler = self.handler = self.handler_class(self.application, self.request, **self.handler_kwargs)
        transforms = [transform(self.request) for transform in self.application.transforms]
        if self.stream_request_body:  # a body read as it arrives: its reading waits until prepare() has run
            handler._prepared_future = tornado.concurrent.Future()
        start(handler._execute(transforms, *self.path_args, **self.path_kwargs))
        return handler._prepared_future


def start(coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run `coroutine` now until it first waits; a Task carries it on from there. Its end is not awaited: an
    exception it lets out is logged, as the loop logs one from a Task nobody awaits."""
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return
    except Exception:
        app_log.error("Uncaught exception in a handler", exc_info=True)
        return
    task = asyncio.ensure_future(_carry_on(coroutine, waiting))
    task.add_done_callback(lambda done: done.cancelled() or done.result())


async def _carry_on(coroutine: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    return await _rest(coroutine, waiting)


@types.coroutine
def _rest(coroutine: Coroutine[Any, Any, Any], waiting: Any) -> Generator[Any, Any, Any]:
    """The rest of a started coroutine: what it waits for goes to the Task, what the Task sends or throws (a
    cancellation) goes to the coroutine."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:
            try:
                waiting = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value
