"""records.yaml as a document: valid OpenAPI 3.1, and what it says of tokens and shutdown."""


from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from support.paths import TESTS


def test_records_yaml_is_valid_openapi_3_1():
    document, _ = read_from_filename(str(TESTS.parent / "records.yaml"))
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation


def test_the_document_says_writing_needs_no_token_by_default_and_shutdown_is_503():
    document, _ = read_from_filename(str(TESTS.parent / "records.yaml"))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "head", "put", "delete"):
                assert "503" in operation["responses"], (method, path)
                assert operation.get("security", [{}])[0] == {}, (method, path)  # no token needed by default
