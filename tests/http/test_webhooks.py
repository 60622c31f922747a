"""Webhooks (`--webhook`): every event /sse carries is POSTed to each URL as the same JSON, signed as Standard Webhooks
says, and verified by a receiver that uses the `standardwebhooks` library; in order; a refused delivery is tried
again with the same webhook-id until it is accepted; a URL that hangs or is down holds back neither another URL nor
the service; `--webhook-events` narrows the types; /metrics counts it all. On every engine (the URL's position in the
event log is kept in the index)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.event_schema import conforms
from support.records import EVENT, record_url
from support.sse import listen
from support.waiting import eventually
from support.metrics import Samples, parse
from support.webhooks import Hanging, Receiver, new_secret, refused_url, sample
from tornado_records.app import start_app, stop_app
from tornado_records.webhooks import REASONS, shown


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def secret_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "webhook-secret"
    path.write_text(secret + "\n")
    return path


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    receiver = Receiver(secret)
    yield receiver
    receiver.close()


@pytest.fixture
def urls(receiver: Receiver) -> list[str]:
    """The --webhook URLs of the app under test (a test may override it)."""
    return [receiver.url]


@pytest.fixture
def settings(urls: list[str], secret_file: Path) -> dict[str, Any]:
    return {"webhook": urls, "webhook_secret_file": str(secret_file), "analysis_workers": "0"}


@contextlib.asynccontextmanager
async def started(app):  # noqa: ANN001
    """The app's background work running (the deliveries), as the command starts it."""
    start_app(app)
    try:
        yield
    finally:
        await stop_app(app)


async def scrape(fetch: Any) -> Samples:
    response = await fetch("/metrics")
    assert response.code == 200
    return parse(response.body.decode())


async def upload(fetch: Any, start: str, body: bytes = b"audio") -> None:
    assert (await fetch(record_url(start=start), method="PUT", body=body, headers={"Content-Type": "audio/ogg"})).code == 204


@pytest.mark.gen_test(timeout=60)
async def test_every_event_reaches_the_receiver_verified_in_order_as_sse_sends_it(app, port, fetch, receiver) -> None:
    async with started(app):
        listener = await listen(port)
        for n in range(3):
            await upload(fetch, f"2024-01-01T0{n}:00:00")
        await upload(fetch, "2024-01-01T00:00:00", b"replaced")  # record-updated
        assert (await fetch(record_url(start="2024-01-01T01:00:00"), method="DELETE")).code == 204
        expected = 3 * 2 + 2 + 1
        streamed = [await listener.event() for _ in range(expected)]
        listener.close()
        assert await eventually(lambda: len(receiver.accepted) >= expected, timeout=20)
    assert all(d.verified for d in receiver.attempts)  # standardwebhooks.Webhook(secret).verify() took each
    assert receiver.ids() == [event_id for event_id, _ in streamed]  # in order, each once, the ids of /sse
    assert receiver.bodies() == [event for _, event in streamed]  # the same JSON as the SSE data line
    assert [conforms(body)["type"] for body in receiver.bodies()] == [
        *["upload-started", "record-created"] * 3, "upload-started", "record-updated", "record-deleted"
    ]  # fmt: skip
    first = receiver.accepted[0].headers
    assert first["content-type"] == "application/json"
    assert first["webhook-signature"].startswith("v1,")
    assert abs(int(first["webhook-timestamp"]) - time.time()) < 60


@pytest.mark.engines("sqlite", "postgresql")
@pytest.mark.gen_test(timeout=60)
async def test_a_refused_delivery_is_tried_again_with_the_same_id_until_accepted(app, fetch, receiver) -> None:
    receiver.answer(503)
    async with started(app):
        await upload(fetch, "2024-01-01T00:00:00")
        assert await eventually(lambda: len(receiver.attempts) >= 2, timeout=20)  # at once, then after 1 s
        receiver.answer(204)
        assert await eventually(lambda: len(receiver.accepted) == 2, timeout=20)
        samples = await scrape(fetch)
    refused = [d for d in receiver.attempts if d.status == 503]
    assert len({d.id for d in refused}) == 1  # the first event, again and again: the second waits its turn
    assert receiver.ids()[0] == int(refused[0].id)  # accepted with the same webhook-id at last
    assert receiver.types() == ["upload-started", "record-created"]
    assert receiver.ids()[1] > receiver.ids()[0]
    label = shown(receiver.url)
    assert sample(samples, "webhook_failures_total", url=label, reason="status") == len(refused)
    assert sample(samples, "webhook_deliveries_total", url=label) == 2


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.close()


@pytest.mark.engines("sqlite")
class TestAUrlThatHangsOrIsDown:
    @pytest.fixture
    def urls(self, hanging: Hanging, receiver: Receiver) -> list[str]:
        return [hanging.url, refused_url(), receiver.url]

    @pytest.mark.gen_test(timeout=60)
    async def test_holds_back_neither_another_url_nor_the_service(self, app, fetch, receiver, hanging) -> None:
        async with started(app):
            for n in range(5):
                await upload(fetch, f"2024-01-01T0{n}:00:00")
                began = time.monotonic()
                assert await eventually(lambda: len(receiver.accepted) == 2 * (n + 1), timeout=5)
                assert time.monotonic() - began < 2  # the hanging URL's request waits 10 s: not this one
                began = time.monotonic()
                assert (await fetch("/ping")).code == 204
                assert time.monotonic() - began < 0.5
            assert hanging.connections() >= 1  # its first request is still in flight
            samples = await scrape(fetch)
        assert receiver.types() == ["upload-started", "record-created"] * 5
        _, down, good = app.settings["config"].webhook
        assert sum(sample(samples, "webhook_failures_total", url=shown(good), reason=r) for r in REASONS) == 0
        assert sample(samples, "webhook_failures_total", url=shown(down), reason="refused") >= 1


@pytest.mark.engines("sqlite")
class TestMetrics:
    @pytest.fixture
    def urls(self, receiver: Receiver) -> list[str]:
        down = refused_url().replace("http://", "http://someone:hunter22@") + "?token=abc"
        return [receiver.url, down]

    @pytest.mark.gen_test(timeout=60)
    async def test_show_deliveries_failures_and_the_oldest_undelivered_age(self, app, fetch, receiver) -> None:
        good, down = app.settings["config"].webhook
        async with started(app):
            await upload(fetch, "2024-01-01T00:00:00")
            assert await eventually(lambda: len(receiver.accepted) == 2, timeout=20)
            samples = await scrape(fetch)
            label = shown(down)
            age = sample(samples, "webhook_oldest_undelivered_age_seconds", url=label)
            deadline = time.monotonic() + 10
            while sample(later := await scrape(fetch), "webhook_oldest_undelivered_age_seconds", url=label) <= age:
                assert time.monotonic() < deadline, "the age does not grow"
                await asyncio.sleep(0.05)
        assert "hunter22" not in label and "abc" not in label and label.endswith("/down?***")
        assert sample(samples, "webhook_deliveries_total", url=shown(good)) == 2
        assert sample(samples, "webhook_deliveries_total", url=label) == 0
        assert sample(samples, "webhook_failures_total", url=label, reason="refused") >= 1
        assert sample(samples, "webhook_oldest_undelivered_age_seconds", url=shown(good)) == 0
        assert age > 0 and sample(later, "webhook_deliveries_total", url=label) == 0


@pytest.mark.engines("sqlite")
class TestWebhookEvents:
    @pytest.fixture
    def settings(self, urls: list[str], secret_file: Path) -> dict[str, Any]:
        return {"webhook": urls, "webhook_secret_file": str(secret_file), "analysis_workers": "0",
                "webhook_events": "record-created,record-deleted"}  # fmt: skip

    @pytest.mark.gen_test(timeout=60)
    async def test_narrows_the_types_delivered(self, app, fetch, receiver) -> None:
        async with started(app):
            await upload(fetch, "2024-01-01T00:00:00")
            await upload(fetch, "2024-01-01T00:00:00", b"again")
            assert (await fetch(record_url(), method="DELETE")).code == 204
            assert await eventually(lambda: len(receiver.accepted) == 2, timeout=20)
            samples = await scrape(fetch)
        assert receiver.types() == ["record-created", "record-deleted"]  # in order: any other type would be first
        assert receiver.bodies()[0]["data"]["record"]["event"] == EVENT
        assert sample(samples, "webhook_oldest_undelivered_age_seconds", url=shown(receiver.url)) == 0
