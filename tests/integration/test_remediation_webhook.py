"""``webhook`` against a real HTTP(S) receiver on 127.0.0.1 (a threaded ``http.server``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from remediations.base import Outcome, Plan, Target
from remediations.webhook import Webhook, WebhookParams
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration]

TARGET = Target(check="web-http", container="web")


@dataclass
class Receiver:
    port: int
    scheme: str = "http"
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    reply: bytes = b'{"queued": true}'
    delay: float = 0.0
    location: str | None = None

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


def serve(receiver: Receiver, context: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            receiver.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": self.rfile.read(length)})
            time.sleep(receiver.delay)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

        do_POST = do_PUT = do_GET = _any

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver(free_port()))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    yield from serve(Receiver(free_port(), scheme="https"), context)


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
    assert (request["method"], request["path"]) == ("POST", "/hook")
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Team"] == "ops"
    assert json.loads(request["body"]) == plan.data["body"]
    assert json.loads(request["body"])["service"] == "shop"


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
    assert receiver.requests[0]["path"] == "/hook?token=tok-abc-123"
    assert receiver.requests[0]["headers"]["Authorization"] == "Bearer bear-456"
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


def test_tls_is_verified(tls_receiver: Receiver, ca: trustme.CA, tmp_path: Path) -> None:
    _, outcome = run(url=tls_receiver.url())
    assert not outcome.ok
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    _, outcome = run(url=tls_receiver.url(), ca_file=str(ca_file))
    assert outcome.ok, outcome.message
