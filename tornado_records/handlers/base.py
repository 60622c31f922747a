"""What every handler shares: JSON errors (store errors mapped to statuses in one place) and byte counting."""

from __future__ import annotations

import http
import json
import traceback
from typing import Any

import tornado.web

from tornado_records import __version__
from tornado_records.store import RecordNotFound, StoreError

# The one place where the store's exceptions become HTTP statuses.
STATUS_OF_ERROR: dict[type[Exception], int] = {
    RecordNotFound: 404,
}


class ApiError(tornado.web.HTTPError):
    """An error answered to the client as `{"status_code": ..., "detail": ...}`."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code)
        self.detail = detail


def quoted(text: str, limit: int = 80) -> str:
    """Client text, quoted and cut short, for use in an error detail."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class BaseHandler(tornado.web.RequestHandler):
    """Base of all handlers: errors as JSON, no automatic ETags, and a count of the body bytes sent."""

    bytes_sent = 0

    def set_default_headers(self) -> None:
        self.set_header("Server", f"tornado-records/{__version__}")

    def prepare(self) -> Any:
        self.settings["inflight"].add(self)

    def on_finish(self) -> None:
        self.settings["inflight"].discard(self)

    def on_connection_close(self) -> None:
        self.settings["inflight"].discard(self)
        super().on_connection_close()

    def compute_etag(self) -> str | None:
        return None  # validators are the records' own, never a hash of a JSON answer

    def flush(self, include_footers: bool = False) -> Any:
        if self.request.method != "HEAD":
            self.bytes_sent += sum(len(part) for part in self._write_buffer)
        return super().flush(include_footers)

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements."""
        return [
            method
            for method in self.SUPPORTED_METHODS
            if getattr(type(self), method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())
        ]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs["exc_info"][1] if "exc_info" in kwargs else None
        status_code = _status_of(exc, status_code)
        self.set_status(status_code)
        if isinstance(exc, ApiError):
            detail = exc.detail
        elif isinstance(exc, StoreError):
            detail = str(exc) if status_code < 500 else "Internal server error"
        elif status_code == 405:
            detail = f"Method {self.request.method} is not allowed on {self.request.path}"
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            detail = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            detail = _phrase(status_code)
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        body: dict[str, Any] = {"status_code": status_code, "detail": detail}
        if self.settings.get("serve_traceback") and "exc_info" in kwargs and status_code >= 500:
            body["traceback"] = "".join(traceback.format_exception(*kwargs["exc_info"]))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError) or _status_of(value, 500) < 500:
            return  # an answer to the client, already in the access log
        super().log_exception(typ, value, tb)


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
ABORT_REASON_OF_ERROR: dict[type[Exception], str] = {}
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
