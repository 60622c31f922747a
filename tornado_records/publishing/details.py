"""An event's details as `PUT /records/{event}` takes them (title, description, author, image, timezone), checked
against the rules that records.yaml states for them: its `EventDetailsChange` schema's lengths and patterns, and its
`TimeZone` names, read from the document itself, so that what the document accepts is what the service accepts.

The patterns are written with character classes alone, which mean the same in ECMA-262 (JSON Schema's dialect) and
Python's `re` (`\\s`, `\\S` and `.` do not: Python counts the control character U+0085 as a space, ECMA-262 does
not), and match in linear time. One difference stays: Python's `$` also matches before a last line feed, so a title
ending with one is taken here, as Python's JSON Schema validators (jsonschema, Schemathesis) take it, and the line
feed dropped. Spaces at the ends of a text are dropped: the characters that the patterns call spaces (SPACES, and
LINE_SPACES in a description)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Any

from tornado_records.document import schema

# What the patterns of records.yaml call spaces, besides the tab and line ends that a description may hold
SPACES = " \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
LINE_SPACES = "\t\n\r"
TEXTS = ("title", "description", "author")  # the details that are text for people (the others are names)
EXAMPLE = '{"title": "Morning show", "timezone": "Europe/Berlin"}'


class BadDetails(ValueError):
    """The body is not details the rules accept; the message says why."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one detail may be: null, or text of these lengths that the pattern matches (or one of `names`)."""

    min_length: int
    max_length: int
    pattern: re.Pattern | None
    names: frozenset[str] | None
    explained: str
    text: bool  # spaces at its ends are dropped

    def check(self, name: str, value: Any) -> str | None:
        """The value to keep (text with the spaces at its ends dropped, or None); BadDetails if it breaks the rule."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadDetails(f"{name} must be {self.explained}")
        if not (
            self.min_length <= len(value) <= self.max_length
            and (self.names is None or value in self.names)
            and (self.pattern is None or self.pattern.search(value))  # as the jsonschema package applies it
        ):
            shown = json.dumps(value if len(value) <= 80 else value[:80] + "...")
            raise BadDetails(f"{name} must be {self.explained}, not {shown}")
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate (\ud800), which JSON lets through and no text holds
            raise BadDetails(f"{name} must be Unicode text (it holds a lone surrogate)") from None
        if self.pattern is not None and not self.pattern.fullmatch(value):
            value = value[:-1]  # the line feed that Python's $ let through (see above)
        return value.strip(SPACES + LINE_SPACES) if self.text else value


@functools.cache
def rules() -> dict[str, Rule]:
    """Each detail's rule, as records.yaml states it (its description says it to a client refused)."""
    found = {}
    for name, part in schema("EventDetailsChange")["properties"].items():
        explained = part["description"].strip().rstrip(".")
        if "anyOf" in part:  # null, or a schema of the components (the time zones)
            part = schema(next(p["$ref"] for p in part["anyOf"] if "$ref" in p).rsplit("/", 1)[1])
        names = frozenset(part["enum"]) if "enum" in part else None
        pattern = re.compile(part["pattern"]) if "pattern" in part else None
        text = name in TEXTS
        found[name] = Rule(part.get("minLength", 1), part.get("maxLength", 64), pattern, names, explained, text)
    return found


def zone_names() -> frozenset[str]:
    """The IANA time zone names an event (and --timezone) may give: those records.yaml lists."""
    return rules()["timezone"].names or frozenset()


def parse_changes(body: bytes) -> dict[str, str | None]:
    """The details a PUT body sets (None: taken away), those absent kept; BadDetails if it is not such a body."""
    try:
        given = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadDetails(f"The body must be JSON such as {EXAMPLE}") from None
    known = rules()
    if not isinstance(given, dict) or not given or not set(given) <= set(known):
        raise BadDetails(f"The body must be a JSON object with one or more of {', '.join(known)}, such as {EXAMPLE}")
    return {name: known[name].check(name, value) for name, value in given.items()}
