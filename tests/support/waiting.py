"""Bounded waits for servers that tests start: a TCP port that accepts, an HTTP URL that answers.

Every loop here has a deadline and raises ``TimeoutError`` with the last error seen, so a
server that never comes up fails the test with a reason instead of hanging it.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def wait_until(attempt: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str) -> T:
    """Call ``attempt`` until it returns something other than ``None`` (or ``timeout``).

    ``attempt`` may raise ``OSError`` (connection refused, reset...) to mean "not yet".
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = attempt()
        except OSError as error:
            last = error
        else:
            if value is not None:
                return value
        if time.monotonic() >= deadline:
            detail = f": last error {last!r}" if last is not None else ""
            raise TimeoutError(f"{what} not ready after {timeout:.1f}s{detail}")
        time.sleep(interval)


def wait_for_tcp(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until ``host:port`` accepts a TCP connection.

    Note: a port that Docker publishes is held by ``docker-proxy``, which accepts even
    while nothing listens inside the container; use ``wait_for_http`` for containers.
    """

    def attempt() -> bool:
        with socket.create_connection((host, port), timeout=1.0):
            return True

    wait_until(attempt, timeout=timeout, what=f"tcp {host}:{port}")


@dataclass(frozen=True)
class HttpReply:
    """What an HTTP GET got back (any status, including 4xx/5xx)."""

    status: int
    body: bytes
    headers: dict[str, str]


def http_get(url: str, timeout: float = 5.0) -> HttpReply:
    """One GET; an HTTP error status is returned as a reply, not raised."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return HttpReply(response.status, response.read(), dict(response.headers.items()))
    except urllib.error.HTTPError as error:
        with error:
            return HttpReply(error.code, error.read(), dict(error.headers.items()))


def wait_for_http(url: str, timeout: float = 10.0, *, status: int | None = None) -> HttpReply:
    """Wait until ``url`` answers HTTP at all (or with ``status``, when given)."""

    def attempt() -> HttpReply | None:
        try:
            reply = http_get(url, timeout=1.0)
        except urllib.error.URLError as error:
            raise OSError(str(error.reason)) from error
        except http.client.HTTPException as error:  # malformed or empty reply
            raise OSError(repr(error)) from error
        if status is not None and reply.status != status:
            return None
        return reply

    return wait_until(attempt, timeout=timeout, what=f"GET {url}")
