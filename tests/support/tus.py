"""The headers of resumable uploads (tus 1.0.0, and the IETF draft's partial uploads)."""

from __future__ import annotations

TUS = {"Tus-Resumable": "1.0.0"}


CHUNK = {"Content-Type": "application/offset+octet-stream"}


PARTIAL = {"Content-Type": "application/partial-upload"}
