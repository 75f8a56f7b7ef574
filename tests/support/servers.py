"""Shared helpers for tests that need a real server.

``server_missing(what)`` is the one way a test reacts to a server that is not there: it
skips on a developer's machine, and *fails* when ``CI=true`` so a broken install shows.
"""

from __future__ import annotations

import os
import socket

import pytest


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
