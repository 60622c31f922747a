"""How the analysis hands ffmpeg an object's presigned URL, on its own (no server): what reaches the log of it, and
the options that check an HTTPS server's certificate (tornado_records.audio.analyzer)."""

from __future__ import annotations

from tornado_records.audio.analyzer import input_options, without_secrets

URL = (
    "https://s3.example.net/radio/records/1-ab?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261207"
    "&X-Amz-Date=20261207T170000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd"
)


def test_a_complaint_naming_the_url_keeps_its_object_but_not_its_signature() -> None:
    complaint = f"ffmpeg failed: {URL}: Server returned 403 Forbidden (access denied)"
    assert without_secrets(complaint, URL) == (
        "ffmpeg failed: https://s3.example.net/radio/records/1-ab: Server returned 403 Forbidden (access denied)"
    )


def test_a_complaint_cut_in_the_middle_of_the_query_leaves_none_of_it() -> None:
    complaint = f"ffprobe failed: {URL[:140]}"
    assert "X-Amz" not in without_secrets(complaint, URL)


def test_https_is_read_with_the_certificate_checked_and_the_bundle_botocore_is_given(monkeypatch) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    assert input_options(URL) == ("-tls_verify", "1")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/radio-ca.pem")
    assert input_options(URL) == ("-tls_verify", "1", "-ca_file", "/etc/ssl/radio-ca.pem")
    assert input_options("http://127.0.0.1:8333/radio/records/1-ab?X-Amz-Signature=0") == ()
