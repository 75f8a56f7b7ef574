"""The real daemon (``paramedic run`` as a subprocess) and the real Docker event stream.

Every check here has a 30 s interval and the scheduler's first run happens at start
(``jitter: 0``), so a result that changes within seconds of breaking a container can only
have come through the event path. No timing is asserted tightly: the figures belong to
``bench/crash_detection.py``.

The containers run ``sh`` as PID 1 looping until ``/tmp/die`` exists, then exit 3: a test
makes the main process die on its own (``exec_run("touch /tmp/die")``), which Docker
reports as a bare ``die``, unlike ``docker kill``/``docker stop`` (operator actions).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container
from prometheus_client.parser import text_string_to_metric_families

from agent.store.sqlite import Store
from tests.support.docker import ContainerFactory
from tests.support.processes import stop_process
from tests.support.servers import free_port
from tests.support.waiting import http_get, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

# exits 3 once /tmp/die exists; exits 0 at once on SIGTERM (docker stop); PID 1 ignores the rest
DIE_ON_FILE = "rm -f /tmp/die; trap 'exit 0' TERM; while [ ! -f /tmp/die ]; do sleep 0.05; done; exit 3"
PARAMEDIC = str(Path(sys.executable).with_name("paramedic"))


def unique(prefix: str) -> str:
    return f"paramedic-test-{prefix}-{uuid.uuid4().hex[:8]}"


class RunningDaemon:
    """``paramedic run -c CFG --log-format json`` with its log lines collected."""

    def __init__(self, workdir: Path, checks: list[str]) -> None:
        self.port = free_port()
        self.store_path = workdir / "paramedic.db"
        self.config = workdir / "paramedic.yaml"
        self.config.write_text(
            f'server: {{listen: "127.0.0.1:{self.port}"}}\n'
            f'store: {{path: "{self.store_path}"}}\n'
            "scheduler: {jitter: 0}\n"
            "checks:\n" + "".join(f"  - {line}\n" for line in checks)
        )
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [PARAMEDIC, "run", "-c", str(self.config), "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def messages(self) -> list[str]:
        out = []
        for line in list(self.lines):
            try:
                out.append(str(json.loads(line).get("msg", "")))
            except ValueError:
                out.append(line)
        return out

    def wait_log(self, fragment: str, timeout: float = 15.0) -> None:
        def attempt() -> bool | None:
            if self.process.poll() is not None:
                raise AssertionError(f"paramedic exited {self.process.returncode}:\n{self.log_tail()}")
            return True if any(fragment in m for m in self.messages()) else None

        try:
            wait_until(attempt, timeout=timeout, what=f"log line {fragment!r}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def check(self, name: str) -> dict[str, Any]:
        reply = http_get(f"http://127.0.0.1:{self.port}/api/v1/checks", timeout=2.0)
        [item] = [c for c in json.loads(reply.body)["checks"] if c["name"] == name]
        return dict(item)

    def wait_result(self, name: str, status: str, after: float = 0.0, timeout: float = 10.0) -> dict[str, Any]:
        """The check's last result once it has ``status`` and started after ``after`` (epoch s)."""

        def attempt() -> dict[str, Any] | None:
            last = self.check(name)["last_result"]
            return last if last and last["status"] == status and last["started_at"] > after else None

        try:
            return wait_until(attempt, timeout=timeout, interval=0.02, what=f"{name} {status}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last: {self.check(name)['last_result']}\n{self.log_tail()}") from None

    def metric(self, name: str, **labels: str) -> float:
        text = http_get(f"http://127.0.0.1:{self.port}/metrics").body.decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def operator_stops(self) -> dict[str, dict[str, Any]]:
        store = Store(self.store_path)
        try:
            return store.operator_stops()
        finally:
            store.close()

    def stop(self) -> int:
        if not stop_process(self.process, timeout=15):
            raise AssertionError(f"paramedic did not exit within 15 s of SIGTERM:\n{self.log_tail()}")
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[list[str]], RunningDaemon]]:
    """``daemon(check_lines)`` starts paramedic, waits until it listens to Docker events;
    stopped (SIGTERM, must exit 0) at teardown."""
    started: list[RunningDaemon] = []

    def start(checks: list[str]) -> RunningDaemon:
        d = RunningDaemon(tmp_path, checks)
        started.append(d)
        d.wait_log("listening to Docker events")
        return d

    yield start
    for d in started:
        code = d.stop()
        assert code == 0, d.log_tail()


def watched_container(containers: ContainerFactory, name: str) -> Container:
    container = containers.run(["sh", "-c", DIE_ON_FILE], name=name)
    wait_until(lambda: True if _status(container) == "running" else None, timeout=10, what=f"{name} running")
    return container


def _status(container: Container) -> str:
    container.reload()
    return str(container.status)


def check_line(check: str, container: str) -> str:
    return f"{{name: {check}, type: container, container: {container}, interval: 30, timeout: 5}}"


# --------------------------------------------------------------------------- tests


def test_a_crash_reaches_the_daemon_through_the_event_stream(
    containers: ContainerFactory, daemon: Callable[[list[str]], RunningDaemon]
) -> None:
    name = unique("crash")
    container = watched_container(containers, name)
    d = daemon([check_line("victim", name)])
    d.wait_result("victim", "OK")  # the scheduler's own first run

    before = time.time()
    began = time.monotonic()
    container.exec_run(["touch", "/tmp/die"])
    last = d.wait_result("victim", "CRITICAL", after=before)
    elapsed = time.monotonic() - began

    assert elapsed < 5.0, f"CRITICAL after {elapsed:.2f}s: not the event path (interval is 30 s)"
    assert last["observations"]["state"] == "exited"
    assert last["observations"]["exit_code"] == 3
    assert d.metric("paramedic_docker_events_total", event="die") >= 1
    assert name not in d.operator_stops()  # a crash is not an operator stop


def test_docker_stop_is_recorded_as_an_operator_stop_and_docker_start_clears_it(
    containers: ContainerFactory, daemon: Callable[[list[str]], RunningDaemon]
) -> None:
    name, sentinel_name = unique("stop"), unique("sentinel")
    container = watched_container(containers, name)
    sentinel = watched_container(containers, sentinel_name)
    d = daemon([check_line("victim", name), check_line("sentinel", sentinel_name)])
    d.wait_result("victim", "OK")

    before = time.time()
    container.stop(timeout=5)
    d.wait_result("victim", "CRITICAL", after=before)  # the stop's events ran the check
    # `docker stop` emits kill, die, stop: the record reads "kill" until the stop event replaces it
    def stopped() -> dict[str, Any] | None:  # None (not False) while the record still reads "kill"
        record = d.operator_stops().get(name)
        return record if record is not None and record["event"] == "stop" else None

    stops = wait_until(stopped, timeout=10, what=f"operator stop of {name}")
    assert (stops["id"], stops["event"]) == (container.id, "stop")

    before = time.time()
    container.start()
    d.wait_result("victim", "OK", after=before)
    wait_until(lambda: True if name not in d.operator_stops() else None, timeout=10, what="operator stop cleared")

    # A signal the process survives is not a stop. Events are handled in order, so once
    # the sentinel's kill shows up in the store, the HUP before it has been handled too.
    container.kill(signal="HUP")
    sentinel.kill()
    killed = wait_until(lambda: d.operator_stops().get(sentinel_name), timeout=10, what="sentinel kill")
    assert killed["event"] == "kill"
    assert name not in d.operator_stops()
    assert _status(container) == "running"


def test_a_reload_that_brings_the_first_container_check_starts_the_event_listener(
    tmp_path: Path, containers: ContainerFactory
) -> None:
    name = unique("late")
    container = watched_container(containers, name)
    d = RunningDaemon(tmp_path, [f"{{name: port, type: tcp, host: 127.0.0.1, port: {free_port()}, interval: 30}}"])
    try:
        d.wait_log("paramedic running")
        assert not any("listening to Docker events" in m for m in d.messages())  # nothing to watch yet
        text = d.config.read_text()
        d.config.write_text(text + f"  - {check_line('victim', name)}\n")
        d.process.send_signal(signal.SIGHUP)
        d.wait_log("listening to Docker events")
        d.wait_result("victim", "OK")
        before = time.time()
        container.exec_run(["touch", "/tmp/die"])
        last = d.wait_result("victim", "CRITICAL", after=before, timeout=5.0)  # the event path: interval is 30 s
        assert last["observations"]["exit_code"] == 3
    finally:
        assert d.stop() == 0, d.log_tail()
