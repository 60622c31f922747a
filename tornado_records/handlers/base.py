"""What every handler shares: JSON errors (store errors mapped to statuses in one place) and byte counting."""

from __future__ import annotations

import collections
import email.utils
import functools
import http
import json
import logging
import time
import traceback
from typing import Any

import tornado.web

from tornado_records import __version__
from tornado_records.http.access import bearer_token, client_address
from tornado_records.http.caching import NEVER
from tornado_records.http.insides import begin_answer, buffered_bytes, finished
from tornado_records.http.semantics import served_type
from tornado_records.storage.model import (
    BlobsUnavailable,
    Busy,
    ContentDamaged,
    DigestMismatch,
    PreconditionFailed,
    RecordNotFound,
    StorageFull,
    StoreError,
)
from tornado_records.storage.sqldb import IndexUnavailable

log = logging.getLogger("tornado_records.handlers")

CHALLENGE = 'Bearer realm="tornado-records"'  # the WWW-Authenticate of a 401 (RFC 6750 §3)
SERVER = f"tornado-records/{__version__}"  # the Server header of every answer
RETRY_AFTER_STREAMS = 10  # seconds a client refused for holding too many streams is asked to wait

# The one place where the store's exceptions become HTTP statuses.
STATUS_OF_ERROR: dict[type[Exception], int] = {
    RecordNotFound: 404,
    DigestMismatch: 400,
    PreconditionFailed: 412,
    StorageFull: 507,
    Busy: 423,  # as tusd answers an upload locked by another request; tus-js-client tries again
    IndexUnavailable: 503,  # a PostgreSQL index out of reach (restarting): the next request connects again
    BlobsUnavailable: 503,  # the object store out of reach, or refusing
    ContentDamaged: 500,
}


class ApiError(tornado.web.HTTPError):
    """An error answered to the client as `{"status_code": ..., "detail": ...}`, with any extra `headers`."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code)
        self.detail = detail
        self.headers = headers or {}


def quoted(text: str, limit: int = 80) -> str:
    """Client text, quoted and cut short, for use in an error detail."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class BaseHandler(tornado.web.RequestHandler):
    """Base of all handlers: errors as JSON and not to be stored (also while a body arrives), ETags hashed from the
    body only where a handler asks, a count of bytes sent."""

    bytes_sent = 0
    tagged_by_body = False  # a 200 to GET or HEAD gets an ETag hashed from its body, and If-None-Match a 304
    refused = False  # an error was answered while the body was still arriving (see refuse_body)
    stream_place: str | None = None  # the client whose /sse or /live place this request holds

    @functools.cached_property
    def client(self) -> str:
        """The address of the client: the peer, or the client behind a trusted proxy (access.client_address)."""
        headers = self.request.headers
        return client_address(
            self.request.remote_ip or "",
            headers.get_list("X-Forwarded-For"),
            headers.get("X-Real-IP"),
            self.settings["config"].trusted_proxies,
        )

    def take_stream_place(self) -> None:
        """Hold one of the client's places for long-lived streams (/sse, /live) until the request ends; 429 when it
        holds --max-client-streams already."""
        places: collections.Counter[str] = self.settings["stream_places"]
        limit = self.settings["config"].max_client_streams
        if places[self.client] >= limit:
            raise ApiError(
                429, f"This client holds {limit} event and live streams already: close one, or retry later",
                {"Retry-After": str(RETRY_AFTER_STREAMS)},
            )  # fmt: skip
        places[self.client] += 1
        self.stream_place = self.client

    def _leave_stream_place(self) -> None:
        if self.stream_place is not None:
            places: collections.Counter[str] = self.settings["stream_places"]
            places[self.stream_place] -= 1
            if places[self.stream_place] <= 0:
                del places[self.stream_place]
            self.stream_place = None

    def clear(self) -> None:
        # Tornado's clear(), with the headers every answer begins with made once a second, not at every request
        begin_answer(self, first_headers())
        self.set_default_headers()

    def set_served_type(self, stored: str) -> None:
        """Headers for a record's bytes stored with type `stored`: the type itself when it is a passive media type,
        else application/octet-stream as an attachment; and a sandbox, so that nothing in them runs on this origin."""
        content_type, attachment = served_type(stored)
        self.set_header("Content-Type", content_type)
        if attachment:
            self.set_header("Content-Disposition", "attachment")
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")

    def prepare(self) -> Any:
        if self.settings["stopping"]:  # a request on a kept-alive connection, after SIGTERM: begin nothing new
            raise ApiError(503, "The service is shutting down")
        self.settings["inflight"].add(self)

    def on_finish(self) -> None:
        self.settings["inflight"].discard(self)
        self._leave_stream_place()

    def on_connection_close(self) -> None:
        self.settings["inflight"].discard(self)
        self._leave_stream_place()
        super().on_connection_close()

    def require_writer(self) -> None:
        """Refuse the request (401) unless it carries the service's bearer token, when the service has one."""
        secret = self.settings["config"].token_file
        if secret is None:
            return
        token = bearer_token(self.request.headers.get("Authorization"))
        if token is None:
            raise ApiError(401, "This needs an Authorization: Bearer token", {"WWW-Authenticate": CHALLENGE})
        if not secret.matches(token):
            raise ApiError(
                401, "The bearer token is not valid", {"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'}
            )

    def answered(self) -> bool:
        """Whether the answer was finished."""
        return finished(self)

    def compute_etag(self) -> str | None:
        # A record's validators are its own; an answer built from the index (a listing) is tagged by a hash of its
        # bytes, where the handler says so: a derived tag would have to change with every fact the answer shows.
        return super().compute_etag() if self.tagged_by_body else None

    def flush(self, include_footers: bool = False) -> Any:
        if self.request.method != "HEAD":
            self.bytes_sent += buffered_bytes(self)
        return super().flush(include_footers)

    def refuse_body(self, exc: Exception) -> None:
        """Answer an error while the client is still sending its body (from `data_received`), and end the request.

        As with any answer given before the body is read (a refusal from `prepare` too), the connection is then
        closed with a lingering close (see server.Linger), so that a client still sending reads the answer. The rest
        of the body is not delivered to the handler.
        """
        self.log_exception(type(exc), exc, exc.__traceback__)
        self.refused = True
        self.clear()
        status = exc.status_code if isinstance(exc, tornado.web.HTTPError) else 500
        self.finish(self._error_body(status, (type(exc), exc, exc.__traceback__)))

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements."""
        return [
            method
            for method in self.SUPPORTED_METHODS
            if getattr(type(self), method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())
        ]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(self._error_body(status_code, kwargs.get("exc_info")))

    def _error_body(self, status_code: int, exc_info: Any) -> bytes:
        """Set the status and headers of an error answer; return its JSON body."""
        exc = exc_info[1] if exc_info else None
        status_code = _status_of(exc, status_code)
        self.set_status(status_code)
        self.set_header("Cache-Control", NEVER)  # an error says how things are at this moment only
        if isinstance(exc, ApiError):
            detail = exc.detail
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, StoreError):
            detail = str(exc) if _status_of(exc, 500) != 500 else "Internal server error"
        elif isinstance(exc, (IndexUnavailable, BlobsUnavailable)):
            detail = exc.public  # the engine and the failure; the log has the rest
        elif status_code == 405:
            detail = f"Method {self.request.method} is not allowed on {self.request.path}"
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            detail = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            detail = _phrase(status_code)
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        body: dict[str, Any] = {"status_code": status_code, "detail": detail}
        if self.settings.get("serve_traceback") and exc_info and status_code >= 500:
            body["traceback"] = "".join(traceback.format_exception(*exc_info))
        self.set_header("Content-Type", "application/json")
        return json.dumps(body).encode()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        status = _status_of(value, 0)
        if isinstance(value, tornado.web.HTTPError) or 0 < status < 500:
            return  # an answer to the client, already in the access log
        if status:  # a known condition of the server (a full disk, a damaged record), not a bug: one line
            cause = f" ({value.__cause__})" if value.__cause__ else ""
            level = logging.ERROR if status == 500 else logging.WARNING
            log.log(level, "%s %s: %s%s", self.request.method, self.request.uri, value, cause)
            return
        super().log_exception(typ, value, tb)


def first_headers() -> dict[str, str]:
    """The headers every answer begins with: those of Tornado's `clear`, with our Server, and no sniffing."""
    return _first_headers(int(time.time()))


@functools.lru_cache(maxsize=1)
def _first_headers(second: int) -> dict[str, str]:
    return {
        "Server": SERVER,
        "Content-Type": "text/html; charset=UTF-8",
        "Date": email.utils.formatdate(second, usegmt=True),
        "X-Content-Type-Options": "nosniff",  # a type is what it says: no answer is sniffed into HTML
    }


def _phrase(status_code: int) -> str:
    try:
        return http.HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def _status_of(exc: BaseException | None, default: int) -> int:
    for error, status in STATUS_OF_ERROR.items():
        if isinstance(exc, error):
            return status
    return default


# Why an upload stopped, as its `upload-aborted` event says: by the error's class first, else by the status it
# answers with (a store error's status comes from STATUS_OF_ERROR).
ABORT_REASON_OF_ERROR: dict[type[Exception], str] = {DigestMismatch: "digest-mismatch"}
ABORT_REASON_OF_STATUS: dict[int, str] = {412: "precondition-failed", 413: "too-large", 507: "disk-full"}


def abort_reason(exc: BaseException | None, status: int) -> str:
    """The short reason an upload stopped with `exc` (answered with `status`): too-large, disk-full, ... or error."""
    for error, reason in ABORT_REASON_OF_ERROR.items():
        if isinstance(exc, error):
            return reason
    return ABORT_REASON_OF_STATUS.get(_status_of(exc, status), "error")


class NotFoundHandler(BaseHandler):
    """Any path no route matches: 404 for every method."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"No route for {self.request.path}")


class BadPathHandler(BaseHandler):
    """A path holding a control character (NUL, CR, LF, ...), raw or percent-encoded: 400 for every method, on every
    route, before any handler or file is looked up."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(400, "The path holds a control character (such as %00): no resource has such a name")
