"""GET /records (the events that have records) and PUT /records/{event} (an event's title; its other details are
tested in tests/http/test_event_details.py), through real HTTP
against a real `tornado-records` process: totals kept with every change, order, paging, the filter, the title in
lists and on /sse, bad input (400) and the write token (401)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from support.event_schema import conforms
from support.rawhttp import open_event_stream, read_until, request
from support.records import record_url, run_on_index

EVENTS = [str(uuid.UUID(int=n)) for n in (0x1111, 0x2222, 0x3333)]
UNSET = {"description": None, "author": None, "image": None, "timezone": None}  # the details besides the title


def get_json(url: str, path: str) -> dict:
    status, headers, body = request(url, "GET", path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(body)


def put(url: str, path: str, body: bytes, headers: dict | None = None) -> int:
    return request(url, "PUT", path, body, headers)[0]


def title(url: str, event: str, value: str | None, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = request(url, "PUT", f"/records/{event}", json.dumps({"title": value}).encode(), headers)
    return status, json.loads(body)


def test_events_list_counts_sizes_and_bounds_follow_every_change(service) -> None:
    svc = service()
    assert get_json(svc.url, "/records") == {"count": 0, "limit": 10, "offset": 0, "events": []}
    first, second, _ = EVENTS
    assert put(svc.url, record_url(first, "2024-01-02T06:00:00"), b"x" * 100) == 204
    assert put(svc.url, record_url(first, "2024-01-01T06:00:00"), b"y" * 10) == 204
    assert put(svc.url, record_url(second, "2024-03-01T06:00:00"), b"z" * 7) == 204
    assert put(svc.url, record_url(first, "2024-01-02T06:00:00"), b"w" * 40) == 204  # replaced: 100 -> 40 bytes
    body = get_json(svc.url, "/records")
    assert body["count"] == 2
    assert [e["event"] for e in body["events"]] == [first, second]  # the last change (the replacement) first
    one = body["events"][0]
    assert one == {
        "event": first, "title": None, "records": 2, "bytes": 50, "first_start": "2024-01-01T06:00:00",
        "last_start": "2024-01-02T06:00:00", "modified": one["modified"], "duration": None,
    }  # fmt: skip  (duration: its records are not audio, so none has one)
    assert body["events"][1]["records"] == 1 and body["events"][1]["bytes"] == 7
    # An append adds its bytes; a delete takes the record away; the last record's delete takes the event away.
    status, _, _ = request(svc.url, "PUT", record_url(second, "2024-03-01T06:00:00") + "?append=true", b"more")
    assert status == 204
    body = get_json(svc.url, "/records")
    assert body["events"][0]["event"] == second and body["events"][0]["bytes"] == 11
    assert request(svc.url, "DELETE", record_url(first, "2024-01-01T06:00:00"))[0] == 204
    body = get_json(svc.url, "/records?order=asc")
    assert [(e["event"], e["records"], e["bytes"]) for e in body["events"]] == [(second, 1, 11), (first, 1, 40)]
    assert body["events"][1]["first_start"] == "2024-01-02T06:00:00"
    assert request(svc.url, "DELETE", record_url(first, "2024-01-02T06:00:00"))[0] == 204
    assert [e["event"] for e in get_json(svc.url, "/records")["events"]] == [second]


def test_totals_survive_a_restart_and_are_counted_again_at_start(service, engine, tmp_path: Path) -> None:
    svc = service()
    for n, event in enumerate(EVENTS):
        for hour in range(n + 1):
            assert put(svc.url, record_url(event, f"2024-01-01T0{hour}:00:00"), b"a" * (hour + 1)) == 204
    expected = get_json(svc.url, "/records?limit=100")
    assert svc.stop() == 0
    again = service()
    assert get_json(again.url, "/records?limit=100") == expected
    assert again.stop() == 0
    counted = {EVENTS[0]: (1, 1), EVENTS[1]: (2, 3), EVENTS[2]: (3, 6)}
    # The totals are counted again at each start: from an index made by a version of the service without the list,
    # and over totals that something changed behind the service's back (a title stays).
    run_on_index(engine, tmp_path / "data", "DROP TABLE catalogue")
    restarted = service()
    assert {e["event"]: (e["records"], e["bytes"]) for e in get_json(restarted.url, "/records")["events"]} == counted
    assert title(restarted.url, EVENTS[0], "Kept")[0] == 200
    assert restarted.stop() == 0
    run_on_index(
        engine,
        tmp_path / "data",
        "UPDATE catalogue SET records = records + 7, bytes = 0",
        "INSERT INTO catalogue (event, records, bytes, modified) VALUES ('stray', 5, 5, 0)",
    )
    healed = get_json(service().url, "/records")["events"]
    assert {e["event"]: (e["records"], e["bytes"]) for e in healed} == counted
    assert [e["title"] for e in healed if e["event"] == EVENTS[0]] == ["Kept"]


def test_paging_order_and_filter(service) -> None:
    svc = service()
    events = [str(uuid.uuid4()) for _ in range(12)]
    for event in events:  # one change per event, in this order: the most recent change is the last event's
        assert put(svc.url, record_url(event, "2024-01-01T00:00:00"), b"a") == 204
    newest_first = [e["event"] for e in get_json(svc.url, "/records?limit=1000")["events"]]
    assert sorted(newest_first) == sorted(events)
    page = get_json(svc.url, "/records?limit=5&offset=10")
    assert page["count"] == 12 and page["limit"] == 5 and page["offset"] == 10
    assert [e["event"] for e in page["events"]] == newest_first[10:]
    assert [e["event"] for e in get_json(svc.url, "/records?limit=3&order=asc")["events"]] == newest_first[::-1][:3]
    assert get_json(svc.url, "/records?limit=0")["events"] == []
    # The filter: part of the title or of the UUID, in any case; % and _ are plain characters.
    assert title(svc.url, events[3], "Morning Show 100%")[0] == 200
    assert title(svc.url, events[4], "Evening news")[0] == 200
    assert [e["event"] for e in get_json(svc.url, "/records?q=morning")["events"]] == [events[3]]
    assert [e["event"] for e in get_json(svc.url, "/records?q=100%25")["events"]] == [events[3]]
    assert get_json(svc.url, "/records?q=%25%25")["count"] == 0
    assert get_json(svc.url, "/records?q=_")["count"] == 0
    assert [e["event"] for e in get_json(svc.url, f"/records?q={events[7][9:18].upper()}")["events"]] == [events[7]]
    found = get_json(svc.url, "/records?q=n&limit=1")
    assert found["count"] == 2 and len(found["events"]) == 1


@pytest.mark.parametrize(
    "query",
    ["?limit=1001", "?limit=-1", "?limit=x", "?offset=1.5", "?order=newest", "?q=" + "a" * 201, "?q=a%00b",
     "?q=%ff"],
)  # fmt: skip
def test_bad_list_arguments_are_400_with_a_reason(shared_service, query: str) -> None:
    status, headers, body = request(shared_service.url, "GET", "/records" + query)
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["detail"]


def test_a_title_shows_in_both_lists_and_on_the_event_stream(service) -> None:
    svc = service()
    event = EVENTS[0]
    assert put(svc.url, record_url(event, "2024-01-01T00:00:00"), b"a") == 204
    stream = open_event_stream(svc.url)
    assert title(svc.url, event, "  Morning show  ") == (200, {"event": event, "title": "Morning show", **UNSET})
    received = read_until(stream, b"event-updated")
    message = json.loads(received.split(b"data: ")[-1].split(b"\n")[0])
    assert message["type"] == "event-updated" and message["data"] == {"event": event, "title": "Morning show", **UNSET}
    conforms(message)
    assert get_json(svc.url, "/records")["events"][0]["title"] == "Morning show"
    assert get_json(svc.url, f"/records/{event}")["title"] == "Morning show"
    # Upper-case UUIDs name the same event; null takes the title away.
    assert title(svc.url, event.upper(), None) == (200, {"event": event, "title": None, **UNSET})
    assert get_json(svc.url, "/records")["events"][0]["title"] is None
    # A title given before any record: kept, shown once the event has records.
    later = EVENTS[1]
    assert title(svc.url, later, "Late night")[0] == 200
    assert [e["event"] for e in get_json(svc.url, "/records")["events"]] == [event]
    assert get_json(svc.url, f"/records/{later}")["title"] == "Late night"
    assert put(svc.url, record_url(later, "2024-01-01T00:00:00"), b"a") == 204
    assert get_json(svc.url, "/records?q=late")["events"][0]["title"] == "Late night"
    stream.close()


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"title": 3}', b'{"title": ""}', b'{"title": "   "}', b'{"title": "a\\u0007b"}',
     b'{"title": "x", "other": 1}', b'{}', json.dumps({"title": "t" * 201}).encode()],
)  # fmt: skip
def test_bad_titles_are_400_and_change_nothing(shared_service, body: bytes) -> None:
    svc = shared_service
    event = EVENTS[0]
    assert title(svc.url, event, "Kept")[0] == 200
    status, headers, answer = request(svc.url, "PUT", f"/records/{event}", body)
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert json.loads(answer)["detail"]
    assert get_json(svc.url, f"/records/{event}")["title"] == "Kept"
    assert request(svc.url, "PUT", "/records/not-a-uuid", b'{"title": "x"}')[0] == 400


def test_a_title_needs_the_token_when_the_service_has_one(service, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    svc = service("--token-file", str(token_file))
    event = EVENTS[0]
    status, body = title(svc.url, event, "Morning show")
    assert status == 401 and body["detail"]
    assert title(svc.url, event, "Morning show", {"Authorization": "Bearer wrong"})[0] == 401
    assert get_json(svc.url, f"/records/{event}")["title"] is None
    assert title(svc.url, event, "Morning show", {"Authorization": "Bearer s3cret"})[0] == 200
    assert get_json(svc.url, f"/records/{event}")["title"] == "Morning show"
    assert get_json(svc.url, "/records")["count"] == 0  # reading is open; an event without records is not listed
