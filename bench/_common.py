"""What the Docker benches share: a free port, the busybox test image, the daemon's JSON log
timestamps, and stopping ``paramedic run``.

The benches run as scripts from the repository root (``.venv/bin/python bench/NAME.py``), so
Python puts ``bench/`` on ``sys.path`` and they import this module as ``_common``. Importing it
also puts the repository root on ``sys.path``, for ``tests.support.processes`` (standard
library only): the tests stop their daemons with the same ``stop_process``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parent.parent
PARAMEDIC = Path(sys.executable).with_name("paramedic")
IMAGE = "paramedic-test/busybox:latest"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.processes import stop_process  # noqa: E402  (needs REPO on sys.path)

__all__ = ["IMAGE", "PARAMEDIC", "REPO", "ensure_image", "first_logged", "free_port", "stop_process"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_image(client: docker.DockerClient) -> None:
    """Build ``IMAGE`` (``tests/support/images.py``, no registry needed) unless the engine has it."""
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run([sys.executable, str(REPO / "tests" / "support" / "images.py")], check=True)


def first_logged(log: Path, match: Callable[[dict[str, Any]], bool], after: float) -> float | None:
    """When ``paramedic run --log-format json`` first wrote a line to ``log`` that ``match``es,
    at or after ``after`` (epoch seconds, from the line's ``ts``: UTC, millisecond resolution).

    None when no such line is there (yet). A line that is not JSON (a partial last line, a
    traceback) or lacks what ``match`` or ``ts`` reads (``KeyError``) is passed over.
    """
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            doc = json.loads(line)
            if match(doc):
                when = datetime.strptime(doc["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                if when >= after:
                    return when
    return None
