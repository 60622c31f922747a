"""make_app(config): the Tornado application with its routes, its store, its event hub and its settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import tornado.httpserver
import tornado.web
import yaml

from tornado_records.access import client_address
from tornado_records.config import Config
from tornado_records.events import EventHub
from tornado_records.handlers.base import BaseHandler, NotFoundHandler
from tornado_records.handlers.meta import DocumentHandler, FileHandler, PingHandler
from tornado_records.handlers.records import RecordHandler, RecordsHandler
from tornado_records.handlers.sse import EventStreamHandler
from tornado_records.server import RecordsHTTPServer
from tornado_records.store import RecordStore

access_log = logging.getLogger("tornado.access")

log = logging.getLogger("tornado_records")

SCALAR_BUNDLE = "static/node_modules/@scalar/api-reference/dist/browser/standalone.js"
SMALL_BODY_LIMIT = 1 << 20  # for every route but the upload, which raises its own limit

_EVENT = r"([^/]+)"
_START = r"([^/]+)"


def resource(name: str) -> Path:
    """A file shipped with the service (records.yaml, static/...): inside the installed package, or in the checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "_data" / name
    return installed if installed.exists() else package.parent / name


def make_app(config: Config) -> tornado.web.Application:
    """The application serving the records kept in `config.data_dir`."""
    store = RecordStore(config.data_dir)
    spec_yaml = resource("records.yaml").read_bytes()
    spec_json = json.dumps(yaml.safe_load(spec_yaml), indent=2).encode()
    bundle = resource(SCALAR_BUNDLE)
    scalar_src = "/openapi/" + bundle.name if bundle.exists() else scalar_cdn_url()
    if not bundle.exists():
        log.warning("no local Scalar bundle (npm ci --prefix static): /openapi loads it from %s", scalar_src)
    page = resource("static/openapi.html").read_text().replace("{{scalar_src}}", scalar_src).encode()
    return tornado.web.Application(
        [
            (rf"/records/{_EVENT}", RecordsHandler),
            (rf"/records?/{_EVENT}/{_START}", RecordHandler),
            (r"/sse", EventStreamHandler),
            (r"/ping", PingHandler),
            (r"/openapi/?", DocumentHandler, {"body": page, "content_type": "text/html; charset=utf-8"}),
            (r"/openapi/openapi\.json", DocumentHandler, {"body": spec_json, "content_type": "application/json"}),
            (r"/openapi/openapi\.yaml", DocumentHandler, {"body": spec_yaml, "content_type": "application/yaml"}),
            (r"/openapi/(standalone\.js)", FileHandler, {"path": bundle.parent}),
        ],
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        serve_traceback=config.debug,
        config=config,
        store=store,
        hub=EventHub(keepalive=config.sse_keepalive),
        inflight=set(),  # the requests in flight, that a shutdown waits for
        stopping=False,  # set at shutdown: new requests are refused
    )


def scalar_cdn_url() -> str:
    """The CDN address of the Scalar bundle at the version static/package.json pins."""
    version = json.loads(resource("static/package.json").read_text())["dependencies"]["@scalar/api-reference"]
    return f"https://cdn.jsdelivr.net/npm/@scalar/api-reference@{version}/dist/browser/standalone.js"


def make_server(app: tornado.web.Application) -> tornado.httpserver.HTTPServer:
    """The HTTP server for the application, with the limits the service runs with (its own refusals are JSON)."""
    return RecordsHTTPServer(app, max_body_size=SMALL_BODY_LIMIT)


def log_request(handler: tornado.web.RequestHandler) -> None:
    """One access-log line per request: method, path, status, body bytes sent, duration, client (the one behind a
    trusted proxy)."""
    request = handler.request
    status = handler.get_status()
    headers = request.headers
    client = client_address(
        request.remote_ip,
        headers.get_list("X-Forwarded-For"),
        headers.get("X-Real-IP"),
        handler.settings["config"].trusted_proxies,
    )
    access_log.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "%s %s %d %dB %.1fms %s",
        request.method,
        request.uri,
        status,
        handler.bytes_sent if isinstance(handler, BaseHandler) else 0,
        1000.0 * request.request_time(),
        client,
    )
