"""The OpenAPI document, as the service serves it, documents the headers and statuses of ranges, conditions,
digests and limits."""

from __future__ import annotations

import json

import pytest

ITEM = "/records/{event}/{start}"


async def document(fetch) -> dict:  # noqa: ANN001
    response = await fetch("/openapi/openapi.json")
    assert response.code == 200
    return json.loads(response.body)


def parameter_names(doc: dict, operation: dict) -> set[str]:
    names = set()
    for parameter in operation.get("parameters", []):
        if "$ref" in parameter:
            parameter = doc["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
        names.add(parameter["name"])
    return names


def response_headers(doc: dict, response: dict) -> set[str]:
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return set(response.get("headers", {}))


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "method, parameters, statuses",
    [
        ("get", {"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"},
         {"200", "206", "304", "412", "416"}),
        ("head", {"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"}, {"200", "304", "412"}),
        ("put", {"If-Match", "If-None-Match", "If-Unmodified-Since", "Content-Digest", "Repr-Digest", "Content-MD5"},
         {"204", "400", "412", "413", "507"}),
        ("delete", {"If-Match", "If-None-Match", "If-Unmodified-Since"}, {"204", "404", "412"}),
    ],
)
async def test_item_operations_document_the_semantics(fetch, method: str, parameters: set, statuses: set) -> None:
    doc = await document(fetch)
    operation = doc["paths"][ITEM][method]
    assert parameters <= parameter_names(doc, operation)
    assert statuses <= set(operation["responses"])


@pytest.mark.gen_test
async def test_download_answers_document_their_headers(fetch) -> None:
    doc = await document(fetch)
    responses = doc["paths"][ITEM]["get"]["responses"]
    assert {"Accept-Ranges", "Repr-Digest", "ETag", "Last-Modified"} <= response_headers(doc, responses["200"])
    assert {"Content-Range", "Accept-Ranges", "Repr-Digest"} <= response_headers(doc, responses["206"])
    assert {"ETag", "Last-Modified"} <= response_headers(doc, responses["304"])
    assert "Content-Range" in response_headers(doc, responses["416"])
    assert {"Accept-Ranges", "Repr-Digest"} <= response_headers(doc, doc["paths"][ITEM]["head"]["responses"]["200"])
