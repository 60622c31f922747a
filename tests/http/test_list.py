"""GET /records/{event}: paging, ordering, exclusive bounds, count, and 400 for each bad parameter."""

import datetime
import json
import random
import uuid

import pytest

from support.records import EVENT, record_url

STARTS = [(datetime.datetime(2024, 1, 1) + datetime.timedelta(hours=h)).isoformat() for h in range(15)]


async def upload_all(fetch, starts=STARTS, event=EVENT):
    # Upload out of order, so that the listing's order is the service's doing.
    for start in reversed(starts):
        assert (await fetch(record_url(event, start), method="PUT", body=start.encode())).code == 204


async def listing(fetch, query="", event=EVENT):
    response = await fetch(f"/records/{event}{query}")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


@pytest.mark.gen_test
async def test_event_without_records_is_an_empty_list(fetch):
    assert await listing(fetch) == {"count": 0, "limit": 10, "offset": 0, "title": None, "description": None,
                                    "author": None, "image": None, "timezone": None, "records": []}  # fmt: skip


@pytest.mark.gen_test
async def test_default_is_ten_records_ascending(fetch):
    await upload_all(fetch)
    body = await listing(fetch)
    assert body["count"] == 15 and body["limit"] == 10 and body["offset"] == 0
    assert [r["start"] for r in body["records"]] == STARTS[:10]
    record = body["records"][0]
    assert set(record) == {"event", "start", "type", "size", "etag", "modified", "analysis", "audio"}
    assert record["analysis"] == "pending" and record["audio"] is None  # (this app analyses nothing: not started)
    assert record["event"] == EVENT and record["size"] == len(STARTS[0])
    assert record["type"] == "application/octet-stream"
    assert record["etag"].startswith('"') and len(record["etag"]) == 66
    assert datetime.datetime.strptime(record["modified"], "%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.gen_test
async def test_order_limit_offset(fetch):
    await upload_all(fetch)
    body = await listing(fetch, "?order=desc&limit=3&offset=2")
    assert body["count"] == 15 and body["limit"] == 3 and body["offset"] == 2
    assert [r["start"] for r in body["records"]] == STARTS[::-1][2:5]
    assert [r["start"] for r in (await listing(fetch, "?order=asc&limit=1000"))["records"]] == STARTS
    assert (await listing(fetch, "?limit=0"))["records"] == []
    assert (await listing(fetch, "?offset=100"))["records"] == []


@pytest.mark.gen_test
async def test_after_and_before_are_exclusive_and_count_precedes_paging(fetch):
    await upload_all(fetch)
    body = await listing(fetch, f"?after={STARTS[2]}&before={STARTS[8]}&limit=2")
    assert body["count"] == 5  # hours 3..7
    assert [r["start"] for r in body["records"]] == STARTS[3:5]
    # A non-canonical spelling of a bound means the same instant.
    body = await listing(fetch, "?after=2024-01-01T02:00&before=2024-01-01T08:00&limit=100")
    assert [r["start"] for r in body["records"]] == STARTS[3:8]


@pytest.mark.gen_test
async def test_events_are_separate(fetch):
    other = str(uuid.uuid4())
    await upload_all(fetch, STARTS[:2])
    await upload_all(fetch, STARTS[:1], event=other)
    assert (await listing(fetch))["count"] == 2
    assert (await listing(fetch, event=other))["count"] == 1


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=1001",
        "limit=ten",
        "limit=",
        "limit=1.5",
        "limit=%EF%BC%91",  # a full-width digit one, which int() would accept
        "offset=-1",
        "offset=x",
        "offset=99999999999999999999",
        "order=up",
        "order=ASC",
        "after=yesterday",
        "after=2024-01-01T00:00:00Z",
        "before=2024-01-01T00:00:00%2B02:00",
        "before=",
    ],
)
async def test_bad_parameter_is_400(fetch, query):
    response = await fetch(f"/records/{EVENT}?{query}")
    assert response.code == 400
    body = json.loads(response.body)
    assert body["status_code"] == 400
    assert query.split("=")[0] in body["detail"]


@pytest.mark.gen_test
async def test_head_of_a_listing(fetch):
    await upload_all(fetch, STARTS[:1])
    response = await fetch(f"/records/{EVENT}", method="HEAD")
    assert response.code == 200 and response.body == b""
    assert int(response.headers["Content-Length"]) == len((await fetch(f"/records/{EVENT}")).body)


@pytest.mark.gen_test(timeout=60)
async def test_listings_match_a_model_after_random_uploads_and_deletes(fetch):
    """Random pages (bounds, offsets, both orders) against the same records kept in a plain sorted list."""
    rng = random.Random(8)
    starts = sorted({datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=rng.randrange(600)) for _ in range(40)})
    for start in starts:
        assert (await fetch(record_url(EVENT, start.isoformat()), method="PUT", body=b"x")).code == 204
    for start in rng.sample(starts, 10):
        assert (await fetch(record_url(EVENT, start.isoformat()), method="DELETE")).code == 204
        starts.remove(start)
    for _ in range(150):
        after, before = sorted(rng.sample(range(-10, 620), 2))
        bounds = {
            "after": datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=after),
            "before": datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=before),
        }
        used = {name: value for name, value in bounds.items() if rng.random() < 0.7}
        limit, offset, order = rng.randrange(0, 12), rng.randrange(0, 35), rng.choice(["asc", "desc"])
        query = "&".join([f"{k}={v.isoformat()}" for k, v in used.items()] + [f"limit={limit}&offset={offset}&order={order}"])
        expected = [s for s in starts if ("after" not in used or s > used["after"]) and ("before" not in used or s < used["before"])]
        page = (expected[::-1] if order == "desc" else expected)[offset : offset + limit]
        body = await listing(fetch, "?" + query)
        assert body["count"] == len(expected), query
        assert [r["start"] for r in body["records"]] == [s.isoformat() for s in page], query
