"""The webhook settings as the command reads them: `--webhook` repeatable (RECORDS_WEBHOOKS comma-separated), the
Standard Webhooks secret file checked at start, `--webhook-events` among the known types (those records.yaml
lists), and a webhook without a secret refused."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import standardwebhooks
import yaml

from support.paths import REPO
from support.webhooks import new_secret
from tornado_records.cli import build_parser
from tornado_records.config import ConfigError, build_config
from tornado_records.events import EVENT_TYPES
from tornado_records.webhooks import shown


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(new_secret() + "\n")
    return path


def test_webhook_is_repeatable_and_the_environment_takes_them_comma_separated(secret_file: Path) -> None:
    args = build_parser().parse_args(["--webhook", "http://a.example/x", "--webhook", "https://b.example:8443/y"])
    given = {**vars(args), "webhook_secret_file": str(secret_file)}
    environ = {"RECORDS_WEBHOOKS": "http://env.example/z"}
    assert build_config(given, environ).webhook == ("http://a.example/x", "https://b.example:8443/y")  # flags win
    environ["RECORDS_WEBHOOK_SECRET_FILE"] = str(secret_file)
    assert build_config({}, {**environ, "RECORDS_WEBHOOKS": " http://c.example/1, http://d.example/2,"}).webhook == (
        "http://c.example/1", "http://d.example/2"
    )  # fmt: skip
    assert build_config({}, {}).webhook == () and build_config({}, {}).webhook_events is None


@pytest.mark.parametrize("bad", ["ftp://a.example/x", "a.example/x", "http:///path"])
def test_a_webhook_that_is_not_an_http_url_is_refused(bad: str, secret_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--webhook: .* is not an http:// or https:// URL"):
        build_config({"webhook": [bad], "webhook_secret_file": str(secret_file)}, {})


def test_a_webhook_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="--webhook needs --webhook-secret-file"):
        build_config({"webhook": ["http://a.example/x"]}, {})


def test_the_secret_file_holds_a_standard_webhooks_secret(tmp_path: Path, secret_file: Path) -> None:
    secret = build_config({"webhook_secret_file": str(secret_file)}, {}).webhook_secret_file
    assert secret is not None and secret.value.decode() == secret_file.read_text().strip()
    assert "whsec" not in repr(secret)
    standardwebhooks.Webhook(secret.value.decode())  # the library takes it as it is
    unpadded = tmp_path / "unpadded"
    unpadded.write_text("whsec_" + base64.b64encode(bytes(range(25))).decode().rstrip("="))
    assert build_config({"webhook_secret_file": str(unpadded)}, {}).webhook_secret_file is not None
    bad = {
        "no prefix": base64.b64encode(bytes(32)).decode(),
        "not base64": "whsec_not*base64!",
        "too short": "whsec_" + base64.b64encode(bytes(16)).decode(),
        "empty": "",
    }
    for name, text in bad.items():
        path = tmp_path / name.replace(" ", "-")
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"^--webhook-secret-file: the webhook secret file .* must hold one line"):
            build_config({"webhook_secret_file": str(path)}, {})
    with pytest.raises(ConfigError, match=r"cannot read the webhook secret file .*: No such file"):
        build_config({"webhook_secret_file": str(tmp_path / "missing")}, {})


def test_webhook_events_are_all_or_known_types() -> None:
    assert build_config({"webhook_events": "all"}, {}).webhook_events is None
    narrowed = build_config({}, {"RECORDS_WEBHOOK_EVENTS": "record-created, record-deleted"}).webhook_events
    assert narrowed == frozenset({"record-created", "record-deleted"})
    with pytest.raises(ConfigError, match=r"--webhook-events: 'record-create': no such event type \(all, or of: rec"):
        build_config({"webhook_events": "record-create,record-deleted"}, {})


def test_the_known_event_types_are_those_records_yaml_lists() -> None:
    document = yaml.safe_load((REPO / "records.yaml").read_text())
    assert set(EVENT_TYPES) == set(document["components"]["schemas"]["Event"]["discriminator"]["mapping"])


def test_a_url_is_shown_without_its_password_or_query() -> None:
    assert shown("https://hooks.example/records") == "https://hooks.example/records"
    assert shown("https://user:pass@hooks.example/r?token=abc&x=1#f") == "https://user:***@hooks.example/r?***"
