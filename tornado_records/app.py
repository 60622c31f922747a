"""make_app(config): the Tornado application with its routes, its store, its event hub and its settings; start_app,
stop_app and close_app for the work it does besides answering requests (retention, webhooks) and what it holds open."""

from __future__ import annotations

import base64
import collections
import hashlib
import logging
import re
import urllib.parse
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.routing
import tornado.web

from tornado_records.config import Config
from tornado_records.document import openapi_document, resource
from tornado_records.storage import sqldb
from tornado_records.eventlog import EventLog, SharedEventLog
from tornado_records.events import CHANGE_EVENTS, EventHub
from tornado_records.audio.analyzer import Analyzer
from tornado_records.audio.deadair import DeadAir
from tornado_records.handlers.audio import PeaksHandler
from tornado_records.handlers.clips import ClipHandler
from tornado_records.audio.clips import Clips
from tornado_records.handlers.base import BadPathHandler, BaseHandler, NotFoundHandler
from tornado_records.handlers.feeds import FeedHandler
from tornado_records.handlers.meta import DocumentHandler, FileHandler, MetricsHandler, PingHandler
from tornado_records.handlers.notices import NoticesHandler
from tornado_records.handlers.listings import EventsHandler, PartsHandler, RecordsHandler
from tornado_records.handlers.live import LiveHandler, UploadsHandler
from tornado_records.handlers.records import RecordHandler
from tornado_records.handlers.resumable import CreationHandler, CreationRequests, UploadHandler
from tornado_records.handlers.room import PAGE_HEADERS, RoomHandler, RoomPageHandler
from tornado_records.http.caching import versioned_links
from tornado_records.handlers.sse import EventStreamHandler
from tornado_records.metrics import Metrics
from tornado_records.uploads.appends import Appends
from tornado_records.uploads.resumables import Resumables
from tornado_records.retention import Retention
from tornado_records.http.eager import EagerDelegate
from tornado_records.http.insides import check as check_tornado
from tornado_records.http.server import RecordsHTTPServer
from tornado_records.storage.store import RecordStore
from tornado_records.webhooks import Webhooks

access_log = logging.getLogger("tornado.access")

log = logging.getLogger("tornado_records")

SCALAR_BUNDLE = "static/scalar/standalone.js"  # vendored, pinned: static/scalar/SOURCE
SMALL_BODY_LIMIT = 1 << 20  # for every route but the upload, which raises its own limit
BODY_IDLE_MARGIN = 1.0  # seconds past --upload-idle-timeout at which the server ends a stalled body itself

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNPRINTABLE = re.compile(r"[^\x21-\x5b\x5d-\x7e]")  # what the access log writes escaped (\xNN)
_PLAIN = re.compile(r"[\w/-]+")  # a route's pattern that matches only itself
_EVENT = r"([^/]+)"
_START = r"([^/]+)"


def make_app(config: Config, notices: list[str] | None = None) -> tornado.web.Application:
    """The application serving the records kept in `config.data_dir`, with the `notices` its listening room's page
    shows (cli.py's; none: no /room/notices.json); TornadoChanged if the installed Tornado lacks a private attribute
    the service relies on (http/insides.py)."""
    check_tornado()
    store = RecordStore(config.data_dir, config.index.url, config.blobs, config.s3_endpoint, shares_index(config))
    hub = EventHub(keepalive=config.sse_keepalive, log=event_log(config))
    if hub.log is not None and hub.log.assigns_ids:  # shared: a record's change and its event in one transaction
        store.change_events = hub.write_changes
        hub.written_with_change = CHANGE_EVENTS
        if store.wconn.writes_in_turn:  # SQLite: the log's writer cannot write while a change holds the index, so
            store.wconn.before_begin.append(hub.log.wait_written)  # the uploads' own events are written before it
    dead_air = DeadAir(store, hub, config.dead_air, config.silence_threshold)
    spec_yaml, spec_json = openapi_document(resource("records.yaml"))
    page = versioned_links(resource("static/openapi.html").read_bytes(), "/openapi/", resource(SCALAR_BUNDLE).parent)
    room = versioned_links(resource("static/room/index.html").read_bytes(), "/room/", resource("static/room"))
    app = RecordsApplication(
        [
            (r"/records/?", EventsHandler),
            (rf"/records/{_EVENT}", RecordsHandler),
            tornado.routing.Rule(CreationRequests(rf"/records/{_EVENT}/{_START}$"), CreationHandler),
            (rf"/records?/{_EVENT}/{_START}", RecordHandler),
            (rf"/records/{_EVENT}/{_START}/live", LiveHandler),
            (rf"/records/{_EVENT}/{_START}/parts", PartsHandler),
            (rf"/records/{_EVENT}/{_START}/peaks", PeaksHandler),
            (rf"/feeds/{_EVENT}", FeedHandler),
            (rf"/records/{_EVENT}/{_START}/clip", ClipHandler),
            (r"/uploads/?", UploadsHandler),
            (r"/uploads/([^/]+)", UploadHandler),
            (r"/sse", EventStreamHandler),
            (r"/ping", PingHandler),
            (r"/metrics", MetricsHandler),
            (r"/openapi/?", DocumentHandler, {"body": page, "content_type": "text/html; charset=utf-8",
                                              "headers": page_policy(page)}),  # fmt: skip
            (r"/openapi/openapi\.json", DocumentHandler, {"body": spec_json, "content_type": "application/json"}),
            (r"/openapi/openapi\.yaml", DocumentHandler, {"body": spec_yaml, "content_type": "application/yaml"}),
            (r"/openapi/(standalone\.js)", FileHandler, {"path": resource(SCALAR_BUNDLE).parent}),
            (r"/", RoomPageHandler, {"body": room, "content_type": "text/html; charset=utf-8", "headers": PAGE_HEADERS}),
            *([] if notices is None else [(r"/room/notices\.json", NoticesHandler, {"notices": notices})]),
            (r"/room/(.+)", RoomHandler, {"path": resource("static/room")}),
        ],
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        serve_traceback=config.debug,
        config=config,
        store=store,
        hub=hub,
        resumables=Resumables(
            store, hub, config.upload_expiry.total_seconds(), config.append_takeover, config.resumable_sync_interval
        ),
        appends=Appends(store, config.append_join_interval, config.append_takeover, dead_air),
        dead_air=dead_air,
        analyzer=Analyzer(store, hub, config.analysis_workers, config.silence_threshold, config.silence_min),
        clips=Clips(store.tmp, config.clip_workers),
        metrics=Metrics(hub, config.data_dir, reader(config)),
        retention=None if config.retention is None else Retention(store, hub, reader(config), config.retention),
        webhooks=webhooks(config, hub),
        inflight=set(),  # the requests in flight, that a shutdown waits for
        stream_places=collections.Counter(),  # each client's /sse and /live streams open (--max-client-streams)
        stopping=False,  # set at shutdown: new requests are refused
    )
    if app.settings["webhooks"] is not None:
        app.settings["metrics"].registry.register(app.settings["webhooks"].collector)
    return app


def page_policy(page: bytes) -> dict[str, str]:
    """The headers that keep the /openapi page to this service: its scripts (the bundle, and the page's one inline
    script by its hash), its data, no frames around it."""
    inline = re.search(rb"<script>(.*?)</script>", page, re.DOTALL)
    digest = "" if inline is None else base64.b64encode(hashlib.sha256(inline.group(1)).digest()).decode()
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; script-src 'self' 'sha256-{digest}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
    }


class RecordsApplication(tornado.web.Application):
    """The service's routes; a path holding a control character, raw or percent-encoded, is a 400 whatever route it
    would reach (no handler, nor a file on disk, is looked up for it). A path that a route names as it is (`/ping`,
    `/sse`, `/metrics`, `/`) is looked up in a dict, ahead of any route added later (`add_handlers`), rather than
    by each route's pattern in turn. A request's handler is started at once (http/eager.py)."""

    def __init__(self, handlers: list, **settings: Any) -> None:
        super().__init__(handlers, **settings)
        self.plain_routes = plain_routes(self.wildcard_router.rules)

    def find_handler(self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        path = request.path
        if _CONTROL.search(path) or ("%" in path and _CONTROL.search(urllib.parse.unquote(path, "latin1"))):
            return self.get_handler_delegate(request, BadPathHandler)
        plain = self.plain_routes.get(path)
        if plain is not None:
            return self.get_handler_delegate(request, *plain)
        return super().find_handler(request, **kwargs)

    def get_handler_delegate(
        self,
        request: tornado.httputil.HTTPServerRequest,
        target_class: type[tornado.web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> EagerDelegate:
        return EagerDelegate(self, request, target_class, target_kwargs, path_args, path_kwargs)


def plain_routes(rules: list[tornado.routing.Rule]) -> dict[str, tuple[type, dict[str, Any]]]:
    """The routes whose pattern is a plain path (letters, digits, `/`, `-`, `_`) that no route before them matches:
    their handler and its arguments, by path."""
    found: dict[str, tuple[type, dict[str, Any]]] = {}
    for index, rule in enumerate(rules):
        if type(rule.matcher) is not tornado.routing.PathMatches:  # a matcher of its own (CreationRequests) looks
            continue  # at more than the path
        path = rule.matcher.regex.pattern.removesuffix("$")
        earlier = (other.matcher for other in rules[:index] if isinstance(other.matcher, tornado.routing.PathMatches))
        if _PLAIN.fullmatch(path) and not any(matcher.regex.match(path) for matcher in earlier):
            found[path] = (rule.target, rule.target_kwargs)
    return found


def reader(config: Config) -> sqldb.Database:
    """A read-only connection to the index."""
    return sqldb.connect(config.index.url, config.data_dir, read_only=True)


def shares_index(config: Config) -> bool:
    """Whether the process shares a SQLite index with others (--processes N; a PostgreSQL index is always shared)."""
    return config.processes > 1


def event_log(config: Config) -> EventLog:
    """The event log in the index: this process's, or that of every process sharing the index."""
    index = sqldb.connect(config.index.url, config.data_dir, shared=shares_index(config))
    if index.shared:
        return SharedEventLog(index, sqldb.connect(config.index.url, config.data_dir, shared=True))
    return EventLog(index)


def webhooks(config: Config, hub: EventHub) -> Webhooks | None:
    """The deliveries of the events to the --webhook URLs (None without any)."""
    if not config.webhook or config.webhook_secret_file is None:
        return None
    secret = config.webhook_secret_file.value
    return Webhooks(
        config.webhook, secret, config.webhook_events, config.index.url, config.data_dir, hub.log, shares_index(config)
    )


def start_app(app: tornado.web.Application) -> None:
    """Begin the application's own work (the retention sweeps, if set); call on the event loop."""
    if app.settings["retention"] is not None:
        app.settings["retention"].start()
    app.settings["resumables"].start()
    app.settings["store"].start()
    app.settings["analyzer"].start()
    if app.settings["webhooks"] is not None:
        app.settings["webhooks"].start()


async def stop_app(app: tornado.web.Application) -> None:
    """End the application's own work (a retention sweep stops after the delete in progress)."""
    if app.settings["retention"] is not None:
        await app.settings["retention"].stop()
    app.settings["resumables"].stop()
    app.settings["store"].stop()
    await app.settings["analyzer"].stop()
    app.settings["clips"].stop()
    await app.settings["dead_air"].stop()
    if app.settings["webhooks"] is not None:
        await app.settings["webhooks"].stop()


def close_app(app: tornado.web.Application) -> None:
    """Close what the application holds open: the store, the event log (written out first), the index readers."""
    app.settings["store"].close()
    app.settings["hub"].log.close()
    app.settings["metrics"].close()
    if app.settings["retention"] is not None:
        app.settings["retention"].close()
    if app.settings["webhooks"] is not None:
        app.settings["webhooks"].close()


# The route label of each handler in the metrics: a route's template, never the request's path (unbounded).
ROUTE_OF_HANDLER: dict[type, str] = {
    EventsHandler: "/records",
    RecordsHandler: "/records/{event}",
    RecordHandler: "/records/{event}/{start}",
    CreationHandler: "/records/{event}/{start}",
    LiveHandler: "/records/{event}/{start}/live",
    PartsHandler: "/records/{event}/{start}/parts",
    PeaksHandler: "/records/{event}/{start}/peaks",
    FeedHandler: "/feeds/{event}",
    ClipHandler: "/records/{event}/{start}/clip",
    UploadsHandler: "/uploads",
    UploadHandler: "/uploads/{id}",
    EventStreamHandler: "/sse",
    PingHandler: "/ping",
    MetricsHandler: "/metrics",
    DocumentHandler: "/openapi",
    FileHandler: "/openapi",
    RoomHandler: "/room",
    RoomPageHandler: "/room",
}


def make_server(app: tornado.web.Application) -> tornado.httpserver.HTTPServer:
    """The HTTP server for the application, with the limits the service runs with (its own refusals are JSON)."""
    config: Config = app.settings["config"]
    return RecordsHTTPServer(
        app,
        max_body_size=SMALL_BODY_LIMIT,
        header_timeout=config.header_timeout,
        # every body's bound; an upload's handler applies the same bound itself, and answers first, with its reason
        body_idle_timeout=config.upload_idle_timeout + BODY_IDLE_MARGIN,
        max_connections=config.max_connections,
    )


def log_request(handler: tornado.web.RequestHandler) -> None:
    """One access-log line per request: method, path, status, body bytes sent, duration, client (the one behind a
    trusted proxy)."""
    request = handler.request
    status = handler.get_status()
    ours = isinstance(handler, BaseHandler)
    sent = handler.bytes_sent if ours else 0
    handler.settings["metrics"].observe(ROUTE_OF_HANDLER.get(type(handler), "other"), request.method, status, sent)
    level = logging.WARNING if status >= 500 else logging.INFO
    if not access_log.isEnabledFor(level):  # the line's fields cost more than the check: made only when written
        return
    client = handler.client if ours else request.remote_ip
    access_log.log(
        level,
        "%s %s %d %dB %.1fms %s",
        request.method,
        _escaped(request.uri or ""),
        status,
        sent,
        1000.0 * request.request_time(),
        client,
    )


def _escaped(text: str) -> str:
    """Text from a request line (bytes read as latin1), for a log line: anything but visible ASCII, and the
    backslash, written as \\xNN."""
    return _UNPRINTABLE.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
