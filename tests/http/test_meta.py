"""Ping, the OpenAPI document and page, and the JSON errors of unknown routes, wrong methods and faults."""

import email.utils
import json
import re
import time

import pytest
import yaml

from support.paths import REPO
from support.records import record_url
from tornado_records import __version__


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_ping_is_204_not_cached(fetch, method):
    response = await fetch("/ping", method=method)
    assert response.code == 204 and response.body == b""
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.gen_test
@pytest.mark.parametrize("path, status", [("/ping", 204), ("/records", 200), ("/no/such/route", 404)])
async def test_every_answer_says_its_server_its_date_and_no_sniffing(fetch, path, status):
    for _ in range(2):  # the second within the same second as the first, most likely: the same date, not an older one
        before = time.time()
        response = await fetch(path)
        after = time.time()
        assert response.code == status
        assert response.headers["Server"] == f"tornado-records/{__version__}"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
        assert int(before) <= date <= after, response.headers["Date"]


@pytest.mark.gen_test
async def test_openapi_json_and_yaml_are_records_yaml(fetch):
    source = (REPO / "records.yaml").read_bytes()
    as_json = await fetch("/openapi/openapi.json")
    assert as_json.code == 200 and as_json.headers["Content-Type"] == "application/json"
    assert json.loads(as_json.body) == yaml.safe_load(source)
    as_yaml = await fetch("/openapi/openapi.yaml")
    assert as_yaml.code == 200 and as_yaml.headers["Content-Type"] == "application/yaml"
    assert as_yaml.body == source
    assert json.loads(as_json.body)["openapi"].startswith("3.1")


@pytest.mark.gen_test
async def test_openapi_page_is_html_linking_the_document(fetch):
    response = await fetch("/openapi")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"openapi.json" in response.body


@pytest.mark.gen_test
async def test_openapi_page_loads_the_scalar_bundle_the_service_ships(fetch):
    page = (await fetch("/openapi")).body
    [link] = re.findall(rb'<script src="(/openapi/standalone\.js\?v=[0-9a-f]+)"></script>', page)  # its version
    assert b"https://" not in page  # no CDN, no other host
    bundle = await fetch(link.decode())
    assert bundle.code == 200
    assert bundle.headers["Content-Type"] in ("text/javascript", "application/javascript")
    assert bundle.body == (REPO / "static" / "scalar" / "standalone.js").read_bytes()


@pytest.mark.gen_test
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"])
async def test_unknown_route_is_404_json(fetch, method):
    response = await fetch("/no/such/route", method=method, allow_nonstandard_methods=True)
    assert response.code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {"status_code": 404, "detail": "No route for /no/such/route"}


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("POST", "/ping", "GET, HEAD"),
        ("DELETE", "/records/0f339cb0-7ab4-43fe-852d-75708232f76c", "GET, HEAD, PUT"),  # PUT: the event's title
        ("PUT", "/records", "GET, HEAD"),
        ("PUT", "/uploads", "GET, HEAD"),
        ("PUT", record_url() + "/live", "GET"),
        ("TRACE", record_url(), "GET, HEAD, DELETE, PUT, POST, OPTIONS"),  # POST, OPTIONS: resumable uploads
        ("PATCH", record_url(), "GET, HEAD, DELETE, PUT, POST, OPTIONS"),
        ("PUT", "/uploads/5bWTFHqJ6x9ZfdVZ8bL3ZbhFw6JxK2qN", "GET, HEAD, DELETE, PATCH"),
        ("PUT", "/openapi/openapi.json", "GET, HEAD"),
    ],
)
async def test_wrong_method_is_405_json_with_allow(fetch, method, path, allowed):
    response = await fetch(path, method=method, body=b"", allow_nonstandard_methods=True)
    assert response.code == 405
    assert response.headers["Allow"] == allowed
    body = json.loads(response.body)
    assert body["status_code"] == 405 and method in body["detail"]


@pytest.mark.gen_test
async def test_a_fault_is_500_json_without_traceback(fetch, data_dir):
    await fetch(record_url(), method="PUT", body=b"x")
    for blob in (data_dir / "blobs").iterdir():
        blob.unlink()  # the disk lost the content behind the service's back
    response = await fetch(record_url())
    assert response.code == 500
    assert json.loads(response.body) == {"status_code": 500, "detail": "Internal server error"}
    assert b"Traceback" not in response.body and str(data_dir).encode() not in response.body
    assert (await fetch("/ping")).code == 204


@pytest.mark.gen_test
@pytest.mark.parametrize("settings", [{"debug": "true"}])
async def test_debug_shows_the_traceback(fetch, data_dir):
    await fetch(record_url(), method="PUT", body=b"x")
    for blob in (data_dir / "blobs").iterdir():
        blob.unlink()
    body = json.loads((await fetch(record_url())).body)
    assert body["status_code"] == 500 and "Traceback" in body["traceback"]


@pytest.mark.gen_test
async def test_undecodable_path_is_400_json(fetch):
    response = await fetch("/records/%ff%fe")
    assert response.code == 400
    assert json.loads(response.body)["status_code"] == 400
