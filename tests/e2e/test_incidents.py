"""End to end: the real daemon breaks, fixes and reports an incident to a real webhook receiver.

A busybox container runs ``httpd`` (daemonised) under a ``sh`` PID 1 that stays up; the
test kills httpd inside it, so the container keeps running while its HTTP check fails.
``paramedic run`` (a subprocess) sees the check go DOWN, opens an incident (webhook:
initial alert), restarts the container by its runbook (webhook: update), sees the check
pass again (webhook: resolution), all under one dedup key and in that order. Then
``paramedic incidents report`` must list the very restart ``paramedic history`` lists,
and no secret of the config may appear in the notices, the evidence or the report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docker import ContainerFactory, published_port, wait_for_http
from tests.support.installed import PARAMEDIC
from tests.support.servers import QuietHandler, ServerThread, free_port, http_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(90)]

TOKEN = "tok-" + uuid.uuid4().hex  # an Authorization header of the check, also printed by the container
API_KEY = "key-" + uuid.uuid4().hex  # in the check's URL query
HMAC_SECRET = "hmac-" + uuid.uuid4().hex
SECRETS = (TOKEN, API_KEY, HMAC_SECRET)
# PID 1: start httpd in the background (it daemonises), print the token (evidence must mask it), idle
SCRIPT = ('echo "booting with token $TOKEN"; httpd -p 80 -h /www; trap "exit 0" TERM; '
          "while true; do sleep 0.2; done")


class Receiver:
    """A local HTTP server that records every webhook POST (and checks its HMAC signature)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = "sha256=" + hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, self.headers.get("X-Paramedic-Signature", "")):
                    receiver.bad_signatures += 1
                receiver.raw.append(body)
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

        self._serving = ServerThread(http_server(Handler))
        self.port = self._serving.server.server_address[1]

    def kinds(self) -> list[str]:
        return [p["kind"] for p in self.posts]

    def close(self) -> None:
        self._serving.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PARAMEDIC, *args, "-c", str(config)], capture_output=True, text=True, timeout=30,
                          check=False)


def _config(tmp_path: Path, name: str, port: int, hook_port: int) -> Path:
    doc = {
        "server": {"listen": f"127.0.0.1:{free_port()}"},
        "store": {"path": str(tmp_path / "paramedic.db")},
        "scheduler": {"jitter": 0},
        "guardrails": {"per_target": {"cooldown": "0s", "backoff": {"base": "0s", "max": "0s"}}},
        "notifications": {
            "retry": {"attempts": 3, "initial": "200ms", "max_delay": "1s", "jitter": "0s"},
            "channels": [{"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{hook_port}/hook",
                          "secret": HMAC_SECRET}],
        },
        "incidents": {"service": "web shop", "evidence": {"log_lines": 20, "timeout": "3s"}},
        "checks": [{
            "name": "web", "type": "http", "url": f"http://127.0.0.1:{port}/?api_key={API_KEY}",
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "interval": "1s", "timeout": "1s", "failure_threshold": 2, "success_threshold": 2,
        }],
        "runbooks": [{
            "name": "web-down", "severity": "SEV-2", "summary": "Shop pages do not load",
            "match": {"checks": ["web"]},
            "steps": [{"action": "restart", "params": {"container": name, "mode": "graceful", "stop_timeout": "1s"},
                       "verify_for": "20s"}],
        }],
    }
    path = tmp_path / "paramedic.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_broken_container_alert_update_resolution_and_report(tmp_path: Path, containers: ContainerFactory,
                                                             receiver: Receiver) -> None:
    name = f"paramedic-test-incident-{uuid.uuid4().hex[:8]}"
    # a fixed host port: a random one (-p 127.0.0.1::80) changes when the container restarts
    container = containers.run(["sh", "-c", SCRIPT], name=name, environment={"TOKEN": TOKEN},
                               ports={"80/tcp": ("127.0.0.1", free_port())})
    port = published_port(container)
    wait_for_http(f"http://127.0.0.1:{port}/")
    config = _config(tmp_path, name, port, receiver.port)
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([PARAMEDIC, "run", "-c", str(config), "--log-format", "json"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2.5)  # a couple of passing probes first
        container.exec_run(["killall", "httpd"])
        wait_until(lambda: "resolution" in receiver.kinds() or None, timeout=45, interval=0.1,
                   what=f"resolution notice; got {receiver.kinds()}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
        log.close()
    daemon_log = (tmp_path / "daemon.log").read_text(errors="replace")
    assert daemon.returncode == 0, daemon_log[-3000:]

    # the webhook: alert, update about the restart, resolution, one incident, in that order
    kinds = receiver.kinds()
    assert kinds[0] == "initial", kinds
    assert kinds[-1] == "resolution", kinds
    updates = [p for p in receiver.posts if p["kind"] == "update"]
    assert any("restart" in p["notice"]["update"] and "-> ok" in p["notice"]["update"] for p in updates), updates
    assert kinds.index("update") < kinds.index("resolution")
    assert {p["notice"]["dedup_key"] for p in receiver.posts} == {f"runbook:web-down/target:container {name}"}
    assert receiver.bad_signatures == 0
    alert = receiver.posts[0]
    assert alert["notice"]["severity"] == "SEV-2"
    assert alert["notice"]["service"] == "web shop"
    assert alert["notice"]["impact"] == "Shop pages do not load"
    assert "INCIDENT ALERT" in alert["text"]
    assert "Severity: SEV-2" in alert["text"]
    assert "INCIDENT RESOLVED" in receiver.posts[-1]["text"]

    # the incident, the journal and the report agree
    listed = _cli(config, "incidents", "list", "--all", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    [incident] = json.loads(listed.stdout)["incidents"]
    assert incident["status"] == "resolved"
    assert incident["id"] == alert["notice"]["incident_id"]
    history = _cli(config, "history", "-o", "json")
    [restart] = [a for a in json.loads(history.stdout)["actions"] if a["action"] == "restart"]
    assert restart["outcome"] == "ok"
    out = tmp_path / "report.md"
    report = _cli(config, "incidents", "report", str(incident["id"]), "--out", str(out))
    assert report.returncode == 0, report.stderr
    text = out.read_text()
    assert f"**action #{restart['id']}**: restart on container {name}" in text
    assert "→ **ok**" in text
    assert "verification: passed" in text
    for heading in ("## Summary", "## Timeline", "## Evidence", "## Root Cause", "## Follow-ups"):
        assert heading in text
    assert "**first failure**" in text
    assert "**resolved**" in text
    assert "booting with token ***" in text  # the container's log, scrubbed
    shown = _cli(config, "incidents", "show", str(incident["id"]), "-o", "json")
    assert shown.returncode == 0, shown.stderr

    # no secret anywhere people or receivers see
    seen = [text, shown.stdout, listed.stdout, daemon_log, *(b.decode() for b in receiver.raw)]
    for secret in SECRETS:
        for blob in seen:
            assert secret not in blob
    assert TOKEN not in json.dumps(json.loads(shown.stdout)["incident"]["data"]["evidence"])
