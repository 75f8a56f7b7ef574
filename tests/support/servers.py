"""Shared helpers for tests that need a real server.

``server_missing(what)`` is the one way a test reacts to a server that is not there: it
skips on a developer's machine, and *fails* when ``CI=true`` so a broken install shows.

The rest start small servers of the test's own on 127.0.0.1, in threads of the test process:
``http_server`` + ``ServerThread`` (a ``http.server`` with the test's handler, plain or TLS)
and ``tcp_server`` (a bare listener that runs a function per connection).
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, TypeVar

import pytest

S = TypeVar("S", bound=socketserver.BaseServer)


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where missing servers are failures."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def server_missing(what: str) -> None:
    """Skip (developer machine) or fail (CI) because ``what`` is not available."""
    message = f"{what} is not available; run scripts/setup-test-env first"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- HTTP


class QuietHandler(BaseHTTPRequestHandler):
    """A ``BaseHTTPRequestHandler`` that writes no access-log line per request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def http_server(
    handler: type[BaseHTTPRequestHandler], port: int = 0, tls: ssl.SSLContext | None = None
) -> ThreadingHTTPServer:
    """A ``ThreadingHTTPServer`` bound to ``127.0.0.1:port``, not serving yet (see ``ServerThread``).

    ``port`` 0 lets the kernel pick a free one: read it from ``server.server_address[1]``.
    Each request runs ``handler`` in a daemon thread (a handler still sleeping never holds
    up the end of the test run). With ``tls`` the listening socket is wrapped server-side:
    the server speaks HTTPS only, with ``tls``'s certificate.
    """
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    return server


class ServerThread(Generic[S]):
    """Runs ``server.serve_forever()`` in a daemon thread, from construction until ``close()``.

    ``close()`` stops the loop (``server.shutdown()``), closes the server's socket and joins the
    thread (5 s at most); it may be called again. ``with ServerThread(server) as server:``
    gives the server and closes at the end of the block. ``poll_interval`` is how often the
    loop looks for the shutdown request, so ``close()`` takes up to that long.
    """

    def __init__(self, server: S, *, poll_interval: float = 0.5) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> S:
        return self.server

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- raw TCP


@contextlib.contextmanager
def tcp_server(
    talk: Callable[[socket.socket], None], *, tls: ssl.SSLContext | None = None, timeout: float = 1.0
) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 (a free port, yielded) that runs ``talk(conn)`` per connection.

    One connection at a time, in a daemon thread: accept, (with ``tls``: the server side of
    the TLS handshake, 5 s at most), set ``timeout`` seconds on ``conn`` (so a client that
    gave up does not hold the server for long), ``talk(conn)``, close ``conn``. An ``OSError``
    from the handshake or from ``talk`` (the client hung up, a timeout) ends that connection
    only. The listener is closed when the block ends.
    """
    listener = socket.create_server(("127.0.0.1", free_port()))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                if tls is not None:
                    conn.settimeout(5)
                    conn = tls.wrap_socket(conn, server_side=True)
                with conn:
                    conn.settimeout(timeout)
                    talk(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
