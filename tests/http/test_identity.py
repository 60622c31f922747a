"""A record's identity: a UUID in any case and a naive ISO 8601 start, both shown in canonical form."""

import json

import pytest

from support.records import EVENT, record_url


@pytest.mark.gen_test
async def test_start_spellings_name_the_same_record(fetch):
    put = await fetch(record_url(start="2024-01-01T00:00"), method="PUT", body=b"first")
    assert put.code == 204

    got = await fetch(record_url(start="2024-01-01T00:00:00"))
    assert got.code == 200 and got.body == b"first"
    listed = json.loads((await fetch(f"/records/{EVENT}")).body)
    assert [r["start"] for r in listed["records"]] == ["2024-01-01T00:00:00"]

    replaced = await fetch(record_url(start="2024-01-01%2000:00:00.000000"), method="PUT", body=b"second")
    assert replaced.code == 204
    listed = json.loads((await fetch(f"/records/{EVENT}")).body)
    assert listed["count"] == 1
    assert (await fetch(record_url(start="2024-01-01T00:00"))).body == b"second"


@pytest.mark.gen_test
async def test_upper_case_uuid_is_the_same_event_shown_lower_case(fetch):
    assert (await fetch(record_url(event=EVENT.upper()), method="PUT", body=b"x")).code == 204
    listed = json.loads((await fetch(f"/records/{EVENT.upper()}")).body)
    assert listed["records"][0]["event"] == EVENT
    assert (await fetch(record_url(event=EVENT))).body == b"x"


@pytest.mark.gen_test
async def test_microseconds_are_kept_in_the_canonical_start(fetch):
    await fetch(record_url(start="2024-01-01T00:00:00.5"), method="PUT", body=b"x")
    listed = json.loads((await fetch(f"/records/{EVENT}")).body)
    assert listed["records"][0]["start"] == "2024-01-01T00:00:00.500000"


BAD_EVENTS = ["not-a-uuid", EVENT[:-1], EVENT.replace("-", ""), "{" + EVENT + "}", EVENT + "0", "..", "%00"]
BAD_STARTS = [
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00+01:00",
    "2024-13-01T00:00:00",
    "yesterday",
    "2024-01-01T25:00",
    "..",
    "%2e%2e",
]


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_bad_identity_is_400_json_and_stores_nothing(fetch, data_dir, method):
    for event in BAD_EVENTS:
        response = await fetch(record_url(event=event), method=method)
        assert response.code == 400, event
        if method != "HEAD":
            body = json.loads(response.body)
            # a control character (%00) is refused for the whole path, before the event is read
            assert body["status_code"] == 400 and ("control character" if event == "%00" else "UUID") in body["detail"]
    for start in BAD_STARTS:
        response = await fetch(record_url(start=start), method=method)
        assert response.code == 400, start
        if method != "HEAD":
            assert json.loads(response.body)["status_code"] == 400
    assert list((data_dir / "blobs").iterdir()) == [] and list((data_dir / "tmp").iterdir()) == []


@pytest.mark.gen_test
async def test_offset_start_says_why(fetch):
    body = json.loads((await fetch(record_url(start="2024-01-01T00:00:00Z"))).body)
    assert "timezone" in body["detail"]


@pytest.mark.gen_test
async def test_list_rejects_a_bad_event(fetch):
    response = await fetch("/records/nope")
    assert response.code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {
        "status_code": 400,
        "detail": "event must be a UUID such as 0f339cb0-7ab4-43fe-852d-75708232f76c, not 'nope'",
    }
