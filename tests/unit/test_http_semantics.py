"""The precondition and range rules of RFC 9110, on their own (no server): tornado_records.http.semantics."""

from __future__ import annotations

import email.utils

import pytest

from tornado_records.http.semantics import (
    ByteRange,
    RangeNotSatisfiable,
    Validators,
    entity_tags,
    has_preconditions,
    http_date,
    parse_range,
    precondition_status,
    requested_range,
    strong_match,
    weak_match,
)

MODIFIED = 1_700_000_000
CURRENT = Validators(etag='"abc"', last_modified=MODIFIED, size=1000)
LATER = MODIFIED + 3600


def date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


# -- comparisons and parsing -------------------------------------------------------------------------------------


def test_entity_tags_reads_a_list_and_skips_garbage() -> None:
    assert entity_tags('"a", W/"b" ,"c"') == ['"a"', 'W/"b"', '"c"']
    assert entity_tags("a, b") == []
    assert entity_tags('"x"') == ['"x"']


def test_strong_and_weak_comparison() -> None:
    # The table of RFC 9110 §8.8.3.2.
    assert not strong_match('W/"1"', 'W/"1"') and weak_match('W/"1"', 'W/"1"')
    assert not strong_match('W/"1"', 'W/"2"') and not weak_match('W/"1"', 'W/"2"')
    assert not strong_match('W/"1"', '"1"') and weak_match('W/"1"', '"1"')
    assert strong_match('"1"', '"1"') and weak_match('"1"', '"1"')


def test_http_date_reads_the_three_forms_and_refuses_others() -> None:
    assert http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert http_date("Sun Nov  6 08:49:37 1994") == 784111777
    assert http_date("yesterday") is None
    assert http_date('"abc"') is None
    assert http_date(None) is None
    assert http_date("Sun, 06 Nov 1994 08:49:37 GMT" + " " * 100) is None


def test_has_preconditions() -> None:
    assert not has_preconditions({})
    assert not has_preconditions({"If-Modified-Since": date(MODIFIED)})  # only matters to GET and HEAD
    assert has_preconditions({"If-Match": "*"})
    assert has_preconditions({"If-None-Match": "*"})
    assert has_preconditions({"If-Unmodified-Since": date(MODIFIED)})


# -- preconditions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, headers, current, expected",
    [
        ("GET", {}, CURRENT, None),
        # If-Match (§13.1.1): strong comparison, "*" needs a current representation.
        ("PUT", {"If-Match": '"abc"'}, CURRENT, None),
        ("PUT", {"If-Match": '"x", "abc"'}, CURRENT, None),
        ("PUT", {"If-Match": '"x"'}, CURRENT, 412),
        ("PUT", {"If-Match": 'W/"abc"'}, CURRENT, 412),
        ("PUT", {"If-Match": "*"}, CURRENT, None),
        ("PUT", {"If-Match": "*"}, None, 412),
        ("PUT", {"If-Match": '"abc"'}, None, 412),
        ("DELETE", {"If-Match": '"abc"'}, None, 412),
        ("GET", {"If-Match": '"x"'}, CURRENT, 412),
        # If-None-Match (§13.1.2): weak comparison; 304 for GET/HEAD, 412 for others.
        ("GET", {"If-None-Match": '"abc"'}, CURRENT, 304),
        ("HEAD", {"If-None-Match": 'W/"abc"'}, CURRENT, 304),
        ("GET", {"If-None-Match": '"x", W/"abc"'}, CURRENT, 304),
        ("GET", {"If-None-Match": '"x"'}, CURRENT, None),
        ("GET", {"If-None-Match": "*"}, CURRENT, 304),
        ("PUT", {"If-None-Match": "*"}, CURRENT, 412),
        ("PUT", {"If-None-Match": "*"}, None, None),
        ("PUT", {"If-None-Match": '"abc"'}, CURRENT, 412),
        ("DELETE", {"If-None-Match": 'W/"abc"'}, CURRENT, 412),
        ("PUT", {"If-None-Match": '"x"'}, CURRENT, None),
        # If-Modified-Since (§13.1.3): GET/HEAD only, ignored with If-None-Match or a bad date.
        ("GET", {"If-Modified-Since": date(MODIFIED)}, CURRENT, 304),
        ("GET", {"If-Modified-Since": date(LATER)}, CURRENT, 304),
        ("GET", {"If-Modified-Since": date(MODIFIED - 1)}, CURRENT, None),
        ("GET", {"If-Modified-Since": "not a date"}, CURRENT, None),
        ("PUT", {"If-Modified-Since": date(LATER)}, CURRENT, None),
        ("GET", {"If-Modified-Since": date(LATER), "If-None-Match": '"x"'}, CURRENT, None),
        # If-Unmodified-Since (§13.1.4): ignored with If-Match or a bad date, or without a representation.
        ("PUT", {"If-Unmodified-Since": date(MODIFIED)}, CURRENT, None),
        ("PUT", {"If-Unmodified-Since": date(MODIFIED - 1)}, CURRENT, 412),
        ("GET", {"If-Unmodified-Since": date(MODIFIED - 1)}, CURRENT, 412),
        ("PUT", {"If-Unmodified-Since": date(MODIFIED - 1), "If-Match": '"abc"'}, CURRENT, None),
        ("PUT", {"If-Unmodified-Since": "soon"}, CURRENT, None),
        ("PUT", {"If-Unmodified-Since": date(MODIFIED - 1)}, None, None),
        # §13.2.2 order: If-Match is decided before If-None-Match.
        ("GET", {"If-Match": '"x"', "If-None-Match": '"abc"'}, CURRENT, 412),
        ("GET", {"If-Match": '"abc"', "If-None-Match": '"abc"'}, CURRENT, 304),
    ],
)
def test_precondition_status(method: str, headers: dict, current: Validators | None, expected: int | None) -> None:
    assert precondition_status(method, headers, current) == expected


# -- ranges ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=100-199", (100, 200)),
        ("bytes=990-", (990, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=900-5000", (900, 1000)),
        ("bytes=999-999", (999, 1000)),
        ("BYTES = 5-6", (5, 7)),
        ("bytes= 5-6 ", (5, 7)),
        # Ignored: malformed, another unit, several ranges.
        ("bytes=9-5", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes 1-2", None),
        ("items=0-1", None),
        ("bytes=0-1,5-6", None),
        ("bytes=", None),
    ],
)
def test_parse_range(header: str, expected: tuple[int, int] | None) -> None:
    part = parse_range(header, 1000)
    assert (None if part is None else (part.start, part.stop)) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=5000-5001"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, 1000)
    assert caught.value.content_range == "bytes */1000"


def test_byte_range_content_range() -> None:
    part = ByteRange(100, 200, 1000)
    assert part.length == 100
    assert part.content_range == "bytes 100-199/1000"


NOW = MODIFIED + 60


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"Range": "bytes=10-19"}, (10, 20)),
        # A range covering everything is answered whole (200), as browsers playing audio expect.
        ({"Range": "bytes=0-"}, None),
        ({"Range": "bytes=0-999"}, None),
        ({"Range": "bytes=-1000"}, None),
        ({"Range": "bytes=1-"}, (1, 1000)),
        # If-Range (§13.1.5): strong ETag comparison, or an exact Last-Modified date.
        ({"Range": "bytes=10-19", "If-Range": '"abc"'}, (10, 20)),
        ({"Range": "bytes=10-19", "If-Range": '"old"'}, None),
        ({"Range": "bytes=10-19", "If-Range": 'W/"abc"'}, None),
        ({"Range": "bytes=10-19", "If-Range": date(MODIFIED)}, (10, 20)),
        ({"Range": "bytes=10-19", "If-Range": date(MODIFIED + 1)}, None),
        ({"Range": "bytes=10-19", "If-Range": date(MODIFIED - 1)}, None),
        ({"Range": "bytes=10-19", "If-Range": "garbage"}, None),
        # A false If-Range means the whole body, even when the range would be unsatisfiable.
        ({"Range": "bytes=5000-", "If-Range": '"old"'}, None),
    ],
)
def test_requested_range(headers: dict, expected: tuple[int, int] | None) -> None:
    part = requested_range(headers, CURRENT, NOW)
    assert (None if part is None else (part.start, part.stop)) == expected


def test_if_range_date_needs_a_strong_last_modified() -> None:
    # §8.8.2.2: a Last-Modified less than a second old is weak, so an If-Range date cannot match it.
    headers = {"Range": "bytes=10-19", "If-Range": date(MODIFIED)}
    assert requested_range(headers, CURRENT, MODIFIED + 0.5) is None
    assert requested_range(headers, CURRENT, MODIFIED + 1) == ByteRange(10, 20, 1000)


def test_requested_range_unsatisfiable_and_empty() -> None:
    with pytest.raises(RangeNotSatisfiable):
        requested_range({"Range": "bytes=1000-"}, CURRENT, NOW)
    empty = Validators('"e"', MODIFIED, 0)
    assert requested_range({"Range": "bytes=0-"}, empty, NOW) is None
    assert requested_range({"Range": "bytes=5-"}, empty, NOW) is None
