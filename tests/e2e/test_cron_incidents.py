"""End to end: incidents and notifications from cron (``paramedic check --remediate``).

The installed command runs as a subprocess, once per "cron run", against a TCP check of a
port where nothing listens (then a listener), a runbook whose one step is a ``webhook``
action, and a ``webhook`` notification channel; both webhooks go to a local receiver. No
Docker: the fix is a POST, the recovery is the test starting a listener.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_cli import PARAMEDIC
from tests.support.receivers import Answer, HttpReceiver, Received, serve
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HMAC_SECRET = "hmac-" + uuid.uuid4().hex


@dataclass
class Receiver(HttpReceiver):
    """Answers notices (``/hook``) with ``hook_status``; the runbook's webhook (``/fix``) with 200."""

    hook_status: int = 200

    def answer(self, request: Received) -> Answer:
        return (self.hook_status if request.path == "/hook" else 200), [], b"ok"

    def notices(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path == "/hook" and r.status == 200]

    def kinds(self) -> list[str]:
        return [n["kind"] for n in self.notices()]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def port() -> int:
    return free_port()


def _config(tmp_path: Path, port: int, receiver: Receiver) -> Path:
    doc = {
        "store": {"path": str(tmp_path / "paramedic.db")},
        "notifications": {
            "retry": {"attempts": 5, "initial": "100ms", "max_delay": "100ms", "jitter": "0s"},
            "channels": [{"name": "hook", "type": "webhook", "url": receiver.url("/hook"), "secret": HMAC_SECRET,
                          "timeout": "3s"}],
        },
        "incidents": {"service": "billing api"},
        "checks": [{"name": "api", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout": "1s",
                    "failure_threshold": 1, "success_threshold": 2}],
        "runbooks": [{
            "name": "api-down", "severity": "SEV-2", "summary": "Billing API unreachable",
            "match": {"checks": ["api"]},
            "steps": [{"action": "webhook", "params": {"url": receiver.url("/fix")}, "verify_for": "1s"}],
        }],
    }
    path = tmp_path / "paramedic.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _paramedic(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PARAMEDIC, *args, "-c", str(config)], capture_output=True, text=True, timeout=60,
                          check=False, cwd=config.parent)


def _cron(config: Path) -> subprocess.CompletedProcess[str]:
    return _paramedic(config, "check", "--remediate", "-o", "json")


def _incidents(config: Path) -> list[dict[str, Any]]:
    listed = _paramedic(config, "incidents", "list", "--all", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    incidents: list[dict[str, Any]] = json.loads(listed.stdout)["incidents"]
    return incidents


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def _pending(tmp_path: Path) -> list[tuple[str, str, int]]:
    from agent.store.sqlite import Store

    store = Store(tmp_path / "paramedic.db")
    try:
        return [(r.kind, r.status, r.attempts) for r in store.outbox_rows("pending")]
    finally:
        store.close()


def test_cron_runs_open_and_resolve_an_incident_with_its_notices(tmp_path: Path, port: int,
                                                                 receiver: Receiver) -> None:
    config = _config(tmp_path, port, receiver)

    first = _cron(config)
    assert first.returncode == 2, first.stdout + first.stderr  # CRITICAL, as without incidents
    assert json.loads(first.stdout)["results"][0]["status"] == "CRITICAL"
    [incident] = _incidents(config)
    assert (incident["status"], incident["severity"], incident["runbook"]) == ("open", "SEV-2", "api-down")
    kinds = receiver.kinds()
    assert kinds[:2] == ["initial", "update"], kinds  # the alert, then the webhook step's outcome
    assert [r.path for r in receiver.requests].count("/fix") == 1
    alert = receiver.notices()[0]
    assert alert["notice"]["incident_id"] == incident["id"]
    assert alert["notice"]["service"] == "billing api"
    assert "INCIDENT ALERT" in alert["text"]
    assert "warning" not in first.stderr
    assert _pending(tmp_path) == []

    listener = _listen(port)
    try:
        recovering = _cron(config)  # success_threshold 2: RECOVERING(1), the incident stays open
        assert recovering.returncode == 0, recovering.stdout + recovering.stderr
        assert [i["status"] for i in _incidents(config)] == ["open"]
        assert "resolution" not in receiver.kinds()
        recovered = _cron(config)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    finally:
        listener.close()
    [incident] = _incidents(config)
    assert incident["status"] == "resolved"
    kinds = receiver.kinds()
    assert kinds[0] == "initial", kinds
    assert kinds[-1] == "resolution", kinds
    assert kinds.count("resolution") == 1
    assert {n["notice"]["dedup_key"] for n in receiver.notices()} == {incident["dedup_key"]}
    assert "INCIDENT RESOLVED" in receiver.notices()[-1]["text"]
    assert _pending(tmp_path) == []
    for proc in (first, recovering, recovered):
        assert HMAC_SECRET not in proc.stdout + proc.stderr


def test_a_failing_receiver_is_a_warning_and_the_notice_waits_in_the_outbox(tmp_path: Path, port: int,
                                                                           receiver: Receiver) -> None:
    receiver.hook_status = 500
    config = _config(tmp_path, port, receiver)

    first = _cron(config)
    assert first.returncode == 2, first.stdout + first.stderr  # the check's code, not the notifier's
    assert json.loads(first.stdout)["results"][0]["status"] == "CRITICAL"
    assert "warning: notification not delivered: initial notice of incident" in first.stderr, first.stderr
    assert "HTTP 500" in first.stderr
    assert "pending in the outbox" in first.stderr
    assert "Traceback" not in first.stderr
    assert HMAC_SECRET not in first.stdout + first.stderr
    assert [i["status"] for i in _incidents(config)] == ["open"]
    assert receiver.kinds() == []
    pending = _pending(tmp_path)
    assert pending[0] == ("initial", "pending", 1), pending  # tried once, retried later
    assert ("update", "pending", 0) in pending  # waits behind the alert

    receiver.hook_status = 200  # fixed: the next cron run delivers what waited, alert first
    second = _cron(config)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "warning" not in second.stderr, second.stderr
    kinds = receiver.kinds()
    assert kinds[:2] == ["initial", "update"], kinds
    assert _pending(tmp_path) == []
