"""An event's details (`PUT /records/{event}`: title, description, author, image, timezone) on every engine: set some,
keep the others, take one away with null; shown by `GET /records/{event}` and announced on /sse; refused (400 JSON)
exactly where records.yaml's rules refuse them, and kept by an index made before they existed."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from support.event_schema import conforms
from support.records import EVENT, record_url, run_on_index
from support.sse import listen
from tornado_records.app import close_app, make_app
from tornado_records.config import build_config
from tornado_records.document import schema
from tornado_records.publishing.details import LINE_SPACES, SPACES

UNSET = {"title": None, "description": None, "author": None, "image": None, "timezone": None}
ALL = {
    "title": "Morning show",
    "description": "News, weather and music.\nEvery weekday from six.",
    "author": "Radio Example",
    "image": "https://radio.example/shows/morning.jpg",
    "timezone": "Europe/Berlin",
}


async def put_details(fetch, body: bytes | str | dict, event: str = EVENT):
    """The status and JSON answer of a PUT /records/{event}."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = await fetch(f"/records/{event}", method="PUT", body=data)
    assert response.headers["Content-Type"].startswith("application/json")
    return response.code, json.loads(response.body)


async def shown(fetch, event: str = EVENT) -> dict:
    """The details that GET /records/{event} shows."""
    listing = json.loads((await fetch(f"/records/{event}")).body)
    return {name: listing[name] for name in UNSET}


@pytest.mark.gen_test
async def test_details_are_set_kept_and_taken_away(fetch, port):
    listener = await listen(port)
    assert await put_details(fetch, ALL) == (200, {"event": EVENT, **ALL})
    assert await shown(fetch) == ALL
    _, event = await listener.event_of("event-updated")
    listener.close()
    assert conforms(event)["data"] == {"event": EVENT, **ALL}  # as records.yaml describes it
    # absent members are kept; null takes one away; spaces at the ends of a text are dropped
    assert await put_details(fetch, {"author": "  The morning team \u3000", "image": None}) == (
        200, {"event": EVENT, **ALL, "author": "The morning team", "image": None}
    )  # fmt: skip
    assert await shown(fetch) == {**ALL, "author": "The morning team", "image": None}
    assert (await put_details(fetch, {"title": None, "timezone": None}))[0] == 200
    assert await shown(fetch) == {**ALL, "title": None, "timezone": None, "author": "The morning team", "image": None}
    # an upper-case UUID names the same event
    assert (await put_details(fetch, {"title": "Again"}, EVENT.upper()))[1]["title"] == "Again"
    assert (await shown(fetch))["title"] == "Again"


@pytest.mark.gen_test
async def test_details_stay_without_records_and_the_row_goes_when_the_last_is_taken_away(fetch):
    await fetch(record_url(EVENT), method="PUT", body=b"x")
    assert (await put_details(fetch, {"description": "Kept"}))[0] == 200
    assert (await fetch(record_url(EVENT), method="DELETE")).code == 204
    assert (await shown(fetch))["description"] == "Kept"  # no record: the details stay
    assert (await put_details(fetch, {"description": None}))[0] == 200
    assert await shown(fetch) == UNSET


@pytest.mark.parametrize(
    "body, field",
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "europe/berlin"}, "timezone"),  # names are as the tz database spells them
        ({"timezone": "localtime"}, "timezone"),
        ({"timezone": 1}, "timezone"),
        ({"image": "ftp://radio.example/show.png"}, "image"),
        ({"image": "javascript:alert(1)"}, "image"),
        ({"image": "/shows/morning.jpg"}, "image"),
        ({"image": "https://radio.example/a b.jpg"}, "image"),
        ({"image": "https://user:pass@radio.example/a.jpg"}, "image"),
        ({"image": "https://radio.example/" + "a" * 2000}, "image"),
        ({"title": "t" * 201}, "title"),
        ({"author": "a" * 201}, "author"),
        ({"description": "d" * 4001}, "description"),
        ({"title": "a\u0007b"}, "title"),
        ({"title": "\u0085"}, "title"),  # NEL: a C1 control character
        ({"title": "a\u0085b"}, "title"),
        ({"title": "two\nlines"}, "title"),
        ({"description": "a\u0000b"}, "description"),
        ({"title": "   "}, "title"),
        ({"title": "\u3000\u00a0"}, "title"),  # only spaces
        ({"title": ""}, "title"),
        ({"title": 3}, "title"),
    ],
)  # fmt: skip
@pytest.mark.gen_test
async def test_a_detail_that_breaks_its_rule_is_400_json_and_changes_nothing(fetch, body, field):
    assert (await put_details(fetch, ALL))[0] == 200
    status, answer = await put_details(fetch, {"author": "Not kept", **body})
    assert status == 400 and answer["status_code"] == 400
    assert answer["detail"].startswith(f"{field} must be")
    assert await shown(fetch) == ALL


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"{}", b'{"other": 1}', b'{"title": "x", "other": 1}', b"\xff",
     b'{"title": "\\ud800"}'],  # a lone surrogate: JSON lets it through, no text holds it
)  # fmt: skip
@pytest.mark.gen_test
async def test_a_body_that_is_not_details_is_400_json(fetch, body):
    status, answer = await put_details(fetch, body)
    assert status == 400 and answer["detail"]
    assert await shown(fetch) == UNSET


# Texts at the edges of the rules: what the document's schema accepts, the service accepts, and the other way round
EDGES = ["\u0085", "a\u0085", "\u0085a", "\u00a0a\u00a0", "\ufeff", "\ufeffa", "a\u2028b", "\u2028", " \u200b ",
         "\u009f", "\u00a0", "\u00a1", "é", "😀", "\u007f", "x\u007e", "a\tb", "\u1680", "\u202f", "tab\t",
         "line\n", "line\n\n", "\nline"]  # fmt: skip


@pytest.mark.parametrize("text", EDGES, ids=[repr(text) for text in EDGES])
@pytest.mark.gen_test
async def test_the_service_refuses_a_text_exactly_when_the_document_does(fetch, text):
    properties = schema("EventDetailsChange")["properties"]
    for field in ("title", "author", "description"):
        valid = jsonschema.Draft202012Validator(properties[field]).is_valid(text)
        status, answer = await put_details(fetch, {field: text})
        assert status == (200 if valid else 400), (field, answer)
        if valid:
            assert answer[field] == text.strip(SPACES + LINE_SPACES)


@pytest.mark.gen_test
async def test_an_image_url_ending_with_a_line_feed_is_taken_without_it(fetch):
    """What Python's JSON Schema validators take (their `$` matches before a last line feed), kept without it."""
    image = schema("EventDetailsChange")["properties"]["image"]
    assert jsonschema.Draft202012Validator(image).is_valid("https://radio.example/a.jpg\n")
    assert (await put_details(fetch, {"image": "https://radio.example/a.jpg\n"}))[1]["image"] == (
        "https://radio.example/a.jpg"
    )


@pytest.mark.gen_test
async def test_each_zone_of_the_document_is_taken(fetch):
    zones = schema("TimeZone")["enum"]
    assert {"UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "US/Eastern"} <= set(zones)
    for zone in zones[:: len(zones) // 40]:  # forty of them, spread across the list
        assert (await put_details(fetch, {"timezone": zone}))[0] == 200, zone


@pytest.mark.gen_test
async def test_an_index_from_before_the_details_gets_them_at_start(data_dir, engine):
    """An index that a service from before the details left (no such columns) starts, keeps its titles, and takes
    the details: the start adds the columns, on SQLite and PostgreSQL."""
    config = build_config({"data_dir": str(data_dir), **engine}, {})
    close_app(make_app(config))  # today's tables, then made as they were before issue 26
    run_on_index(
        engine, data_dir,
        *(f"ALTER TABLE catalogue DROP COLUMN {column}"
          for column in ("description", "author", "image", "timezone", "details_modified")),
        "ALTER TABLE analyses DROP COLUMN analysed",
        f"INSERT INTO catalogue (event, title) VALUES ('{EVENT}', 'Old title')",
    )  # fmt: skip
    app = make_app(config)
    try:
        store = app.settings["store"]
        assert store.details(uuid.UUID(EVENT)).to_json() == {**UNSET, "title": "Old title"}
        changed = await store.set_details(uuid.UUID(EVENT), {"timezone": "Europe/Berlin", "author": "Kept"})
        assert changed.to_json() == {**UNSET, "title": "Old title", "timezone": "Europe/Berlin", "author": "Kept"}
    finally:
        close_app(app)
