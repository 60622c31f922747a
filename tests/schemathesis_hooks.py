"""Schemathesis hooks for tests/system/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A digest header is valid only for the one body it was computed from, which no schema can say; a generated digest
would be a wrong one, and the service rightly answers 400. So the requests Schemathesis sends (generated or taken
from the document's examples) carry none. Digests are tested on
their own, with real bodies, in tests/http/test_digests.py and tests/unit/test_digest_fields.py.
"""

import schemathesis

BODY_BOUND_HEADERS = ("Content-Digest", "Repr-Digest", "Content-MD5")

# The resumable-upload protocols' media types are bytes, as application/octet-stream is.
schemathesis.serializer.alias(["application/offset+octet-stream", "application/partial-upload"],
                              "application/octet-stream")  # fmt: skip


# The resumable-upload protocols each take a set of headers that go together (tus: Tus-Resumable and
# application/offset+octet-stream; the IETF draft: Upload-Complete and application/partial-upload), and a creation
# speaks one of them. No schema can say which headers go with which; a request that mixes them is rightly refused
# (400, 415). So the requests Schemathesis sends to these operations speak one protocol each. Every rule is tested
# on its own in tests/http/test_resumable.py. Schemathesis's HTTP client (urllib3, http.client) also takes any interim
# answer but 100 for the final one, so its creation requests carry no Upload-Draft-Interop-Version: the service then
# sends no `104 Upload Resumption Supported` (tests/http/test_resumable.py reads the 104 on a raw socket).
@schemathesis.hook
def before_call(context, case, kwargs):  # noqa: ANN001, ANN201
    for name in BODY_BOUND_HEADERS:
        (case.headers or {}).pop(name, None)
    headers = case.headers if case.headers is not None else {}
    path, method = case.operation.path, case.method.upper()
    if path == "/records/{event}/{start}" and (method == "POST" or "Upload-Complete" in headers):
        if headers.get("Upload-Draft-Interop-Version") in ("6", "8"):
            del headers["Upload-Draft-Interop-Version"]
        if method == "PUT" and (case.query or {}).get("append") in ("true", "false"):
            del case.query["append"]  # append mode is not for a resumable upload (which keeps what arrives anyway)
    if path == "/records/{event}/{start}" and method == "POST":
        if "Upload-Complete" in headers:
            headers.pop("Tus-Resumable", None)
            if headers.get("Upload-Complete") == "?1":
                headers.pop("Upload-Length", None)  # the body's own length is the upload's
        else:  # tus: add what it needs, change nothing given (a value the schema forbids must stay so)
            headers.setdefault("Tus-Resumable", "1.0.0")
            if "Upload-Length" not in headers:
                headers.setdefault("Upload-Defer-Length", "1")
    elif path == "/uploads/{id}" and method == "PATCH":
        if case.media_type == "application/offset+octet-stream":
            headers.setdefault("Tus-Resumable", "1.0.0")
            headers.pop("Upload-Complete", None)
            headers.pop("Upload-Draft-Interop-Version", None)
        else:
            headers.pop("Tus-Resumable", None)
            headers.setdefault("Upload-Complete", "?0")
            if headers["Upload-Complete"] == "?1":
                headers.pop("Upload-Length", None)
    case.headers = headers
