"""Secrets kept out of log lines and messages: passwords in database URLs in each of libpq's forms, and the values of
the secrets the service was given (a PostgreSQL password, S3 keys, the write token).

Pure functions and a logging formatter; nothing here knows of HTTP. What reaches a client never carries a URL at all
(handlers/base.py): this is for what an operator reads.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable

MASK = "***"
# A password in a URL's user information: scheme://user:password@host (each part bounded, so that a long line costs
# time in proportion to its length, never its square)
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s/@:]{0,256}):[^\s/@]{0,1024}@")
# A password or secret as a key=value setting: in a URL's query (?password=...), or a libpq keyword string
_SETTING = re.compile(
    r"\b((?:password|pgpassword|passwd|pwd|passfile|secret|sslpassword|aws_secret_access_key|aws_session_token|token)\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|[^\s&;,]*)",
    re.IGNORECASE,
)
# Environment variables whose values are secrets wherever they appear
SECRET_VARIABLES = ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SHORTEST_SECRET = 4  # a value shorter than this is not searched for (it would mask ordinary words)


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every password of a URL or a key=value setting, and every one of `secrets`, replaced by ***."""
    for secret in secrets:
        if len(secret) >= SHORTEST_SECRET:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _SETTING.sub(rf"\g<1>{MASK}", text)


def secrets_of_environment(environ: dict[str, str] | None = None) -> list[str]:
    """The secret values held by the environment's SECRET_VARIABLES."""
    environ = os.environ if environ is None else environ
    return [environ[name] for name in SECRET_VARIABLES if environ.get(name)]


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines (messages and tracebacks alike) have their secrets masked."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.secrets = sorted(set(secrets), key=len, reverse=True)  # a secret inside a longer one: the longer first

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self.secrets)
