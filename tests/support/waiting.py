"""Bounded waits for servers that tests start: a TCP port that accepts, an HTTP URL that answers,
and whatever a ``paramedic run`` subprocess is expected to show (``poll``).

Every loop here has a deadline and raises ``TimeoutError`` with the last error seen (``poll``
fails the test instead, with the daemon's log), so a server that never comes up fails the test
with a reason instead of hanging it.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest

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


class WatchedProcess(Protocol):
    """What ``poll`` watches while it waits: a subprocess (None before it started) and its log."""

    @property
    def proc(self) -> subprocess.Popen[bytes] | None: ...

    def log_text(self) -> str: ...


def poll(fn: Callable[[], T | None], timeout: float, what: str, process: WatchedProcess | None = None) -> T:
    """Call ``fn`` every 50 ms until it returns something truthy, and return that.

    For tests that drive a ``paramedic run`` subprocess and read its API, store or log: an
    ``OSError``, a ``LookupError`` (``KeyError``, ``IndexError``) or a ``json.JSONDecodeError``
    raised by ``fn`` means "not yet" (the daemon is still starting, a key or a row is not
    there yet) and is kept as the last error; any other exception propagates. The test fails
    (``pytest.fail``) after ``timeout`` seconds, naming ``what`` and the last error, and, when
    ``process`` is given, at once if its subprocess has exited; both messages end with the
    last 4,000 characters of ``process.log_text()``.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = fn()
        except (OSError, LookupError, json.JSONDecodeError) as exc:
            value, last = None, exc
        if value:
            return value
        if process is not None and process.proc is not None and process.proc.poll() is not None:
            tail = process.log_text()[-4000:]
            pytest.fail(f"paramedic exited ({process.proc.returncode}) while waiting for {what}:\n{tail}")
        if time.monotonic() >= deadline:
            tail = process.log_text()[-4000:] if process is not None else ""
            pytest.fail(f"{what}: not within {timeout}s (last error {last!r})\n{tail}")
        time.sleep(0.05)
