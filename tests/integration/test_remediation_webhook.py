"""``webhook`` against a real HTTP(S) receiver on 127.0.0.1 (a threaded ``http.server``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from remediations.base import Outcome, Plan, Target
from remediations.webhook import Webhook, WebhookParams
from tests.support.receivers import Answer, HttpReceiver, Received, serve
from tests.support.servers import free_port
from tests.support.tls import server_context

pytestmark = [pytest.mark.integration]

TARGET = Target(check="web-http", container="web")


@dataclass
class Receiver(HttpReceiver):
    """Answers every request with ``status`` and ``reply`` (and ``Location`` when set)."""

    status: int = 200
    reply: bytes = b'{"queued": true}'
    location: str | None = None

    def answer(self, request: Received) -> Answer:
        headers = [("Location", self.location)] if self.location else []
        return self.status, headers, self.reply


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[Receiver]:
    yield from serve(Receiver(), server_context(ca, "127.0.0.1"))


def run(**fields: Any) -> tuple[Plan, Outcome]:
    action = Webhook(WebhookParams.model_validate(fields))

    async def go() -> tuple[Plan, Outcome]:
        plan = action.plan(TARGET, await action.inspect(TARGET))
        return plan, await action.apply(plan)

    return asyncio.run(go())


def test_posts_the_planned_json(receiver: Receiver) -> None:
    plan, outcome = run(url=receiver.url(), payload={"service": "shop"}, headers={"X-Team": "ops"})
    assert outcome.ok, outcome.message
    assert outcome.message == f"POST {receiver.url()} answered 200"
    assert outcome.data == {"status": 200, "body": '{"queued": true}'}
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "ops"
    assert request.json() == plan.data["body"]
    assert request.json()["service"] == "shop"


def test_unexpected_status_fails_and_keeps_the_body(receiver: Receiver) -> None:
    receiver.status, receiver.reply = 500, b"x" * 10_000
    _, outcome = run(url=receiver.url(), method="PUT")
    assert not outcome.ok
    assert outcome.message == f"PUT {receiver.url()} answered 500 (expected 200-299)"
    assert outcome.data["status"] == 500
    assert len(outcome.data["body"]) == 4096
    receiver.status = 202
    assert run(url=receiver.url(), expect_status=[202])[1].ok


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.status, receiver.location = 307, "http://127.0.0.1:9/elsewhere"
    _, outcome = run(url=receiver.url())
    assert not outcome.ok
    assert outcome.data["status"] == 307
    assert len(receiver.requests) == 1


def test_secrets_are_masked_in_the_outcome_too(receiver: Receiver) -> None:
    receiver.status, receiver.reply = 401, b"bad token tok-abc-123 for bot"
    plan, outcome = run(url=receiver.url("/hook?token=tok-abc-123"), headers={"Authorization": "Bearer bear-456"})
    assert receiver.requests[0].path == "/hook?token=tok-abc-123"
    assert receiver.requests[0].headers["Authorization"] == "Bearer bear-456"
    text = json.dumps([plan.as_dict(), outcome.as_dict()])
    assert "tok-abc-123" not in text
    assert "bear-456" not in text
    assert outcome.data["body"] == "bad token *** for bot"


def test_timeout(receiver: Receiver) -> None:
    receiver.delay = 3
    started = time.monotonic()
    _, outcome = run(url=receiver.url(), timeout="500ms")
    assert not outcome.ok
    assert outcome.message == f"POST {receiver.url()} failed: timed out"
    assert time.monotonic() - started < 2.5


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    _, outcome = run(url=url)
    assert not outcome.ok
    assert outcome.message.startswith(f"POST {url} failed: ")
    assert "refused" in outcome.message.lower()


def test_tls_is_verified(tls_receiver: Receiver, ca_file: str) -> None:
    _, outcome = run(url=tls_receiver.url())
    assert not outcome.ok
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message
    _, outcome = run(url=tls_receiver.url(), ca_file=ca_file)
    assert outcome.ok, outcome.message
