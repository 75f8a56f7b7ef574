"""A recording HTTP(S) receiver on 127.0.0.1, for code under test that posts somewhere
(webhooks, chat and paging channels).

``HttpReceiver`` keeps every request it got (``requests``) and answers what its ``answer`` method
decides; a test module subclasses it with the knobs its tests turn (a status, scripted
failures, a validating stand-in for a real API). ``serve(receiver, tls)`` runs it for a
fixture: ``yield from serve(MyReceiver())``.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.support.servers import QuietHandler, ServerThread, http_server

R = TypeVar("R", bound="HttpReceiver")

#: What a receiver answers: the status, headers besides Content-Length (in order), the body.
Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Received:
    """One request as the receiver got it."""

    method: str
    path: str  # as requested: with the query string
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    status: int = 0  # the status it was answered with (0 until the answer goes out)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records each GET, POST and PUT in ``requests`` and answers it after ``delay`` seconds.

    ``port`` 0 (the default) takes a free port when served; ``serve`` writes the bound port
    and the ``scheme`` (``https`` with TLS) back, so ``url()`` is right once it serves.
    """

    port: int = 0
    scheme: str = "http"
    requests: list[Received] = field(default_factory=list)
    delay: float = 0.0

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, request: Received) -> Answer:
        """The answer to ``request``, decided as it arrives (under the receiver's lock, so in
        arrival order) and sent after ``delay``. This one: 200 with an empty body."""
        return 200, [], b""


def serve(receiver: R, tls: ssl.SSLContext | None = None) -> Iterator[R]:
    """Serve ``receiver`` on ``127.0.0.1:receiver.port`` while this generator waits at its one
    ``yield`` (of ``receiver``); the server is shut down when the generator is resumed or closed.

    With ``tls`` it speaks HTTPS only. Per request: read the body (``Content-Length``), append a
    ``Received`` to ``receiver.requests`` and ask ``receiver.answer`` (both under one lock),
    sleep ``receiver.delay``, set the request's ``status``, send the answer. A client that
    hung up in the meantime (a timeout test) is no error.
    """
    lock = threading.Lock()

    class Handler(QuietHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(self.command, self.path, dict(self.headers), self.rfile.read(length), time.monotonic())
            with lock:
                receiver.requests.append(request)
                status, headers, body = receiver.answer(request)
            time.sleep(receiver.delay)
            request.status = status
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = _any

    server = http_server(Handler, receiver.port, tls=tls)
    receiver.port = server.server_address[1]
    receiver.scheme = "https" if tls is not None else "http"
    with ServerThread(server):
        yield receiver
