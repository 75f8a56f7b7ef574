"""The ``container`` probe against a real Docker engine (started by scripts/setup-test-env).

Every container here comes from the ``containers`` factory (label ``paramedic-test=1``,
force-removed at teardown) and runs the local busybox image. Waits are bounded polls.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container

from agent.config.model import parse_config
from agent.kernel.models import Resources
from agent.kernel.results import Result, Status
from agent.runtime.runner import ProbeRunner, run_once
from checks.container import ContainerProbe, ContainerSpec
from tests.support.docker import TEST_IMAGE, ContainerFactory
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SECOND_NS = 1_000_000_000


def unique(prefix: str) -> str:
    return f"paramedic-test-{prefix}-{uuid.uuid4().hex[:8]}"


def make_spec(**fields: Any) -> ContainerSpec:
    return ContainerSpec.model_validate({"name": "ctr", "type": "container", "timeout": 5, **fields})


def probe(**fields: Any) -> Result:
    """One run through the engine's own path (``run_once``: runner + shared resources)."""
    [result] = asyncio.run(run_once([make_spec(**fields)]))
    return result


def sleeper(containers: ContainerFactory, **kwargs: Any) -> Container:
    # sleep as PID 1 ignores SIGTERM: tests stop these with kill()
    return containers.run(["sleep", "300"], **kwargs)


def wait_status(container: Container, status: str, timeout: float = 10.0) -> None:
    def attempt() -> bool | None:
        container.reload()
        return True if container.status == status else None

    wait_until(attempt, timeout=timeout, what=f"{container.name} {status}")


# --------------------------------------------------------------------------- single container


def test_running_container_by_name_is_ok_with_real_uptime(containers: ContainerFactory) -> None:
    name = unique("web")
    container = sleeper(containers, name=name)
    wait_status(container, "running")
    time.sleep(0.3)
    config = parse_config(f"checks:\n  - {{name: web, type: container, container: {name}}}\n")
    [result] = asyncio.run(run_once(list(config.checks)))

    assert result.status is Status.OK, result.message
    obs = result.observations
    assert (obs["name"], obs["state"], obs["health"], obs["image"]) == (name, "running", "none", TEST_IMAGE)
    assert (obs["restart_count"], obs["exit_code"], obs["oom_killed"]) == (0, 0, False)
    assert 0.2 <= obs["uptime_s"] < 30
    assert obs["started_at"].endswith("Z")
    assert [c["name"] for c in obs["containers"]] == [name]
    assert obs["containers"][0]["id"] == container.id[:12]
    assert (obs["containers_found"], obs["replicas_running"], obs["replicas_expected"]) == (1, 1, 1)


def test_container_selected_by_id_prefix(containers: ContainerFactory) -> None:
    container = sleeper(containers, name=unique("byid"))
    wait_status(container, "running")
    result = probe(id=container.id[:16])
    assert result.status is Status.OK, result.message
    assert result.observations["name"] == container.name


def test_exited_container_is_critical_with_its_exit_code(containers: ContainerFactory) -> None:
    name = unique("exit3")
    container = containers.run(["sh", "-c", "exit 3"], name=name)
    assert container.wait(timeout=10)["StatusCode"] == 3
    result = probe(container=name)

    assert result.status is Status.CRITICAL
    assert result.message == "state == \"running\" failed (actual: 'exited')"
    obs = result.observations
    assert (obs["state"], obs["exit_code"], obs["uptime_s"]) == ("exited", 3, None)
    assert (obs["replicas_running"], obs["containers_found"]) == (0, 1)


def test_container_turning_unhealthy_is_critical(containers: ContainerFactory) -> None:
    name = unique("health")
    healthcheck = {
        "test": ["CMD", "test", "-f", "/tmp/ok"],
        "interval": SECOND_NS // 4, "timeout": SECOND_NS, "retries": 1, "start_period": 0,
    }
    container = containers.run(
        ["sh", "-c", "touch /tmp/ok && exec sleep 300"], name=name, healthcheck=healthcheck
    )

    def health_is(wanted: str) -> Result | None:
        result = probe(container=name)
        return result if result.observations.get("health") == wanted else None

    healthy = wait_until(lambda: health_is("healthy"), timeout=15, interval=0.2, what="healthy")
    assert healthy.status is Status.OK, healthy.message

    assert container.exec_run(["rm", "/tmp/ok"]).exit_code == 0
    sick = wait_until(lambda: health_is("unhealthy"), timeout=15, interval=0.2, what="unhealthy")
    assert sick.status is Status.CRITICAL
    assert sick.message == "health != \"unhealthy\" failed (actual: 'unhealthy')"
    assert sick.observations["state"] == "running"
    assert sick.observations["replicas_healthy"] == 0


def test_missing_container_is_critical_with_a_clear_message(containers: ContainerFactory) -> None:
    name = unique("gone")
    sleeper(containers, name=f"{name}-but-longer")  # the Docker name filter would match this one
    result = probe(container=name)
    assert result.status is Status.CRITICAL
    assert result.message == f'no container named "{name}"'
    assert result.error == "TargetError"


# --------------------------------------------------------------------------- groups


def test_compose_service_replicas(containers: ContainerFactory) -> None:
    project = unique("proj")
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "api"}
    replicas = [
        sleeper(containers, name=f"{project}-api-{i}", labels={**labels, "com.docker.compose.container-number": str(i)})
        for i in (1, 2)
    ]
    sleeper(containers, name=f"{project}-db-1", labels={**labels, "com.docker.compose.service": "db"})
    for c in replicas:
        wait_status(c, "running")
    compose = {"project": project, "service": "api"}

    ok = probe(compose=compose)
    assert ok.status is Status.OK, ok.message
    assert [c["name"] for c in ok.observations["containers"]] == [f"{project}-api-1", f"{project}-api-2"]
    assert "state" not in ok.observations
    assert (ok.observations["replicas_running"], ok.observations["replicas_healthy"]) == (2, 2)

    replicas[1].kill()
    wait_status(replicas[1], "exited")
    down = probe(compose=compose)
    assert down.status is Status.CRITICAL
    assert down.message.startswith("replicas_running >= replicas_expected failed (actual: {")
    obs = down.observations
    assert (obs["replicas_running"], obs["replicas_expected"], obs["containers_found"]) == (1, 2, 2)
    states = {c["name"]: c["state"] for c in obs["containers"]}
    assert states == {f"{project}-api-1": "running", f"{project}-api-2": "exited"}

    more = probe(compose=compose, replicas=1, conditions=["replicas_running >= replicas_expected"])
    assert more.status is Status.OK, more.message


def test_label_selection_needs_every_label(containers: ContainerFactory) -> None:
    app = unique("app")
    sleeper(containers, labels={"app": app, "tier": "web"})
    sleeper(containers, labels={"app": app, "tier": "worker"})
    result = probe(labels={"app": app, "tier": "web"}, replicas=2)
    assert result.status is Status.CRITICAL
    assert (result.observations["containers_found"], result.observations["replicas_expected"]) == (1, 2)
    assert probe(labels={"app": app}, replicas=2).status is Status.OK


# --------------------------------------------------------------------------- the Docker API itself


def test_unreachable_docker_host_is_unknown() -> None:
    result = probe(container="anything", docker_host="unix:///nonexistent.sock")
    assert result.status is Status.UNKNOWN
    assert result.message == "cannot reach Docker at unix:///nonexistent.sock: no such socket"
    assert result.error == "DependencyUnavailableError"


def test_permission_denied_on_the_socket_is_unknown(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores socket file permissions")
    path = tmp_path / "locked.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        path.chmod(0)
        result = probe(container="anything", docker_host=f"unix://{path}")
    assert result.status is Status.UNKNOWN
    assert result.message.endswith("permission denied")


class SilentDocker:
    """A unix socket that accepts and never answers, or answers only ``GET /version``.

    Records when each client connection is closed, to prove that nothing is left behind.
    """

    def __init__(self, path: Path, answer_version: bool) -> None:
        self.path = path
        self.answer_version = answer_version
        self.closed_at: list[float] = []
        self.accepted = 0
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(path))
        self._server.listen()
        self._server.settimeout(0.1)
        self._done = threading.Event()
        self._threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not self._done.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    self.closed_at.append(time.monotonic())
                    return
                buffer += chunk
                head, sep, buffer = buffer.partition(b"\r\n\r\n")
                if sep and self.answer_version and b" /version " in head.split(b"\r\n")[0]:
                    body = b'{"ApiVersion": "1.41", "Version": "20.10.0"}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                elif not sep:
                    buffer = head

    def close(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(2)
        self._server.close()


@pytest.fixture
def silent_docker() -> Iterator[Any]:
    made: list[SilentDocker] = []
    with tempfile.TemporaryDirectory(prefix="pm-dock-") as tmp:

        def make(answer_version: bool) -> SilentDocker:
            server = SilentDocker(Path(tmp) / f"d{len(made)}.sock", answer_version)
            made.append(server)
            return server

        try:
            yield make
        finally:
            for server in made:
                server.close()


def test_hung_docker_daemon_is_unknown_within_the_timeout(silent_docker: Any) -> None:
    server = silent_docker(answer_version=False)
    started = time.monotonic()
    result = probe(container="anything", docker_host=server.url, timeout=1)
    took = time.monotonic() - started
    assert result.status is Status.UNKNOWN
    assert result.message == f"Docker at {server.url} did not answer in time (timeout 1s)"
    assert took < 1.5
    # every connection (the preflight connect and the client's) was hung up: nothing leaked
    wait_until(lambda: True if len(server.closed_at) == server.accepted >= 2 else None,
               timeout=2, what="client hang-up")


def test_cancelled_run_releases_its_thread_and_connection(silent_docker: Any) -> None:
    """The engine's hard timeout cancels the await; the worker still hangs up promptly."""
    server = silent_docker(answer_version=True)  # version answers, the container list hangs
    spec = make_spec(container="anything", docker_host=server.url, timeout=1)

    async def scenario() -> float:
        resources = Resources()
        try:
            probe = ContainerProbe(spec, resources)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(probe.observe(), 0.3)
            return time.monotonic()
        finally:
            await resources.close()

    cancelled_at = asyncio.run(scenario())  # asyncio.run also joins the worker thread
    wait_until(lambda: True if server.closed_at else None, timeout=2, what="client hang-up")
    assert max(server.closed_at) - cancelled_at < 1.0


def test_runner_reports_a_hang_mid_listing_as_unknown(silent_docker: Any) -> None:
    server = silent_docker(answer_version=True)
    spec = make_spec(container="anything", docker_host=server.url, timeout=1)

    async def scenario() -> Result:
        resources = Resources()
        try:
            return await ProbeRunner().run(spec, ContainerProbe(spec, resources))
        finally:
            await resources.close()

    result = asyncio.run(scenario())
    assert result.status is Status.UNKNOWN
    assert result.message == f"Docker at {server.url} did not answer in time (timeout 1s)"


def test_shared_client_is_reused_across_checks(containers: ContainerFactory) -> None:
    name = unique("shared")
    sleeper(containers, name=name)

    async def scenario() -> list[Result]:
        resources = Resources()
        try:
            runner = ProbeRunner()
            specs = [make_spec(container=name), make_spec(container=name, conditions=["restart_count == 0"])]
            results = [await runner.run(s, ContainerProbe(s, resources)) for s in specs]
            assert len(resources._items) == 1  # one Docker client for both checks
            return results
        finally:
            await resources.close()

    assert [r.status for r in asyncio.run(scenario())] == [Status.OK, Status.OK]

