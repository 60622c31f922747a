"""Schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A digest header is valid only for the one body it was computed from, which no schema can say; a generated digest
would be a wrong one, and the service rightly answers 400. So the requests Schemathesis sends (generated or taken
from the document's examples) carry none. Digests are tested on
their own, with real bodies, in tests/test_digests.py and tests/test_digest_fields.py.
"""

import schemathesis

BODY_BOUND_HEADERS = ("Content-Digest", "Repr-Digest", "Content-MD5")


@schemathesis.hook
def before_call(context, case, kwargs):  # noqa: ANN001, ANN201
    for name in BODY_BOUND_HEADERS:
        (case.headers or {}).pop(name, None)
