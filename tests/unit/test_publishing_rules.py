"""The rules of publishing as pure functions: the details' patterns of records.yaml (one meaning in ECMA-262 and
Python, the spaces they name), the time zones, the feed's settings, the public URL behind trusted proxies, and the
feed's identifiers (podcast:guid as the Podcast Index's own examples give it)."""

from __future__ import annotations

import datetime
import re
import zoneinfo

import pytest

from tornado_records.config import ConfigError, build_config, parse_networks
from tornado_records.document import schema
from tornado_records.http.access import public_base
from tornado_records.publishing.details import LINE_SPACES, SPACES, rules
from tornado_records.publishing.feeds import in_words, podcast_guid

CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}


def test_the_patterns_use_nothing_whose_meaning_differs_between_ecma_262_and_python() -> None:
    for name, part in schema("EventDetailsChange")["properties"].items():
        pattern = part.get("pattern")
        if pattern:
            outside_classes = re.sub(r"\[(?:\\.|[^\]\\])*\]", "", pattern)
            assert not re.search(r"\\[sSwWdDbB]|\.|\(\?[^:]", outside_classes), name
            assert not re.search(r"\\[sSwWdDbBpP]", pattern), name  # nor inside a class


@pytest.mark.parametrize("field, spaces", [("title", SPACES), ("author", SPACES), ("description", SPACES + LINE_SPACES)])
def test_what_a_pattern_calls_space_is_what_the_service_strips(field: str, spaces: str) -> None:
    """Each character of the Basic Multilingual Plane alone: a text (valid) unless a space or a control character;
    between letters, valid unless a control character (a description's tab and line ends aside)."""
    pattern = rules()[field].pattern
    for code in range(0x10000):
        c = chr(code)
        if 0xD800 <= code < 0xE000:
            continue  # surrogates are no characters of a text
        allowed_inside = c not in CONTROLS or c in spaces
        assert bool(pattern.search(c)) == (c not in spaces and c not in CONTROLS), hex(code)
        assert bool(pattern.search(f"a{c}b")) == allowed_inside, hex(code)


def test_every_zone_the_document_names_loads() -> None:
    names = rules()["timezone"].names
    assert names is not None and len(names) > 500
    for name in names:
        assert zoneinfo.ZoneInfo(name).key == name
    assert "localtime" not in names and "Factory" not in names


@pytest.mark.parametrize("value", ["Mars/Olympus", "europe/berlin", "", "../etc/passwd", "localtime"])
def test_a_bad_timezone_setting_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match="^RECORDS_TIMEZONE: .* is not an IANA time zone name"):
        build_config({}, {"RECORDS_TIMEZONE": value})
    assert build_config({}, {}).timezone == "UTC"
    assert build_config({"timezone": "Europe/Berlin"}, {"RECORDS_TIMEZONE": "UTC"}).timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    "value", ["radio.example", "ftp://radio.example", "https://", "https://radio.example/?a=1",
              "https://radio.example/#top", "https://user@radio.example", "https://radio example"],
)  # fmt: skip
def test_a_bad_public_url_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match="^--public-url: "):
        build_config({"public_url": value}, {})


def test_the_public_url_loses_its_trailing_slashes() -> None:
    assert build_config({}, {"RECORDS_PUBLIC_URL": "https://radio.example/archive//"}).public_url == (
        "https://radio.example/archive"
    )
    assert build_config({}, {}).public_url == ""


TRUSTED = parse_networks("10.0.0.0/8")


@pytest.mark.parametrize(
    "peer, proto, host, expected",
    [
        ("10.0.0.2", "https", "radio.example", "https://radio.example"),
        ("10.0.0.2", "HTTPS, http", "radio.example:8443, inner", "https://radio.example:8443"),
        ("10.0.0.2", None, None, "http://127.0.0.1:10700"),
        ("10.0.0.2", "gopher", "[::1]:80", "http://[::1]:80"),
        ("192.0.2.1", "https", "radio.example", "http://127.0.0.1:10700"),  # an untrusted peer's headers are ignored
        ("10.0.0.2", "https", "radio.example/<x>", None),  # not a host: no link is made of it
        ("10.0.0.2", "https", "radio.example@evil", None),
    ],
)  # fmt: skip
def test_the_public_base_behind_trusted_proxies(peer: str, proto: str, host: str, expected: str | None) -> None:
    assert public_base(peer, "http", "127.0.0.1:10700", proto, host, TRUSTED) == expected


def test_podcast_guid_gives_the_podcast_index_examples() -> None:
    assert podcast_guid("https://podnews.net/rss") == "9b024349-ccf0-5f69-a609-6b82873eab3c"
    assert podcast_guid("http://podnews.net/rss/") == "9b024349-ccf0-5f69-a609-6b82873eab3c"
    assert podcast_guid("https://mp3s.nashownotes.com/pc20rss.xml") == "917393e3-1b1e-5cef-ace4-edaa54e1f810"


def test_a_start_in_words_is_english_whatever_the_locale() -> None:
    assert in_words(datetime.datetime(2024, 2, 29, 18, 5)) == "Thursday 29 February 2024, 18:05"
