"""The container image end to end: the paramedic *inside* ``paramedic:latest`` heals a hung container.

The image is built from this tree by ``scripts/build-image`` (the ``paramedic_image`` fixture
runs it: about 0.1 s when the image already has the tree's hash, a build of ~30 s when not;
``scripts/setup-test-env`` builds it before CI's test run). With ``CI=true`` an image that
cannot be built fails the tests; elsewhere they are skipped.

Each test runs the image the way the README tells users to: ``docker run -d`` with the Docker
socket mounted and its group added (``--group-add $(stat -c %g /var/run/docker.sock)``), a
read-only root filesystem with a tmpfs on /tmp, the config mounted read-only at
``/etc/paramedic/config.yaml`` and a named volume on ``/var/lib/paramedic``; only the health
check interval is shortened (``--health-interval 1s``) so Docker's verdict comes in seconds.
Two ways a user wires it, both keeping all test traffic on the loopback:

* ``--network host``: paramedic probes the target's port published on 127.0.0.1 with an
  HTTP check and serves ``/healthz`` on a free 127.0.0.1 port (``PARAMEDIC_HEALTHZ_URL``
  tells the image's HEALTHCHECK where).
* the default bridge network, ``server.listen: 0.0.0.0:9321`` published with
  ``-p 127.0.0.1::9321``: paramedic watches the target through the Docker API only (a
  ``container`` check on the target's own HEALTHCHECK, the autoheal way), so it never needs
  the target's bridge address.

The target is the busybox test image with ``httpd`` in the background and ``sh`` looping as
PID 1, so ``killall -STOP httpd`` hangs the web server without the container exiting (as in
``test_remediation_e2e.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest
import yaml
from docker.errors import NotFound
from docker.models.containers import Container

from tests.support.docker import OWNER_LABEL, TEST_LABEL, ContainerFactory, published_port
from tests.support.servers import free_port, in_ci
from tests.support.waiting import http_get, poll, wait_for_http

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "paramedic:latest"
SOCKET = Path("/var/run/docker.sock")
T = TypeVar("T")

#: httpd in the background, PID 1 loops; SIGTERM ends it at once (a quick graceful restart).
HANGABLE = ("trap 'exit 0' TERM; mkdir -p /www && echo ok > /www/index.html && httpd -f -p 80 -h /www & "
            "while true; do sleep 0.2; done")
#: The target's own Docker HEALTHCHECK: runs inside the target, against its own loopback.
TARGET_HEALTHCHECK = {
    "test": ["CMD-SHELL", "timeout 1 wget -q -O /dev/null http://127.0.0.1/ || exit 1"],
    "interval": 500_000_000, "timeout": 2_000_000_000, "retries": 2,  # nanoseconds
}


def unique(prefix: str) -> str:
    return f"paramedic-test-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def paramedic_image(docker_client: docker.DockerClient) -> str:
    """``paramedic:latest`` built from this tree (``scripts/build-image``, quick when up to date)."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "build-image"), "--tag", IMAGE], capture_output=True,
                          text=True, timeout=600, check=False, cwd=REPO)
    if done.returncode != 0:
        message = f"the paramedic image cannot be built (scripts/build-image):\n{(done.stdout + done.stderr)[-3000:]}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return IMAGE


@pytest.fixture
def volume(docker_client: docker.DockerClient, containers: ContainerFactory) -> Iterator[str]:
    """A named volume for /var/lib/paramedic (labelled like the tests' containers), removed afterwards
    (after the containers, which this fixture's teardown removes first: a volume in use stays)."""
    name = unique("data")
    docker_client.volumes.create(name, labels={TEST_LABEL: "1", OWNER_LABEL: str(os.getpid())})
    try:
        yield name
    finally:
        containers.cleanup()
        with contextlib.suppress(NotFound):
            docker_client.volumes.get(name).remove(force=True)


class PackagedAgent:
    """``paramedic run`` in a container of the image, started with the README's ``docker run`` flags."""

    def __init__(self, client: docker.DockerClient, containers: ContainerFactory, image: str, root: Path,
                 volume: str) -> None:
        self.client = client
        self.containers = containers
        self.image = image
        self.config_path = root / "config.yaml"
        self.volume = volume
        self.name = unique("paramedic")
        self.container: Container | None = None
        self.base_url = ""
        self.proc = None  # for ``poll``: there is no subprocess to watch, only the container

    def write_config(self, listen: str, checks: list[dict[str, Any]], runbooks: list[dict[str, Any]]) -> None:
        doc = {
            "store": {"path": "/var/lib/paramedic/paramedic.db"},  # absolute: /etc/paramedic is read-only
            "server": {"listen": listen},
            "scheduler": {"jitter": 0, "flush_interval": 0.05},
            "guardrails": {"per_target": {"budget": 3, "window": "10m", "cooldown": "1s",
                                          "backoff": {"base": "0.2s", "max": "1s"}}},
            "checks": checks,
            "runbooks": runbooks,
        }
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.config_path.chmod(0o644)  # the container's user (uid 10001) reads it

    def run(self, *network: str) -> None:
        """``docker run -d`` the image with ``network`` options (``--network host``, ``-p ...``)."""
        command = [
            "docker", "run", "-d", "--name", self.name,
            "--label", f"{TEST_LABEL}=1", "--label", f"{OWNER_LABEL}={os.getpid()}",
            "--read-only", "--tmpfs", "/tmp",
            "--group-add", str(SOCKET.stat().st_gid),
            "-v", f"{SOCKET}:{SOCKET}",
            "-v", f"{self.config_path}:/etc/paramedic/config.yaml:ro",
            "-v", f"{self.volume}:/var/lib/paramedic",
            "--health-interval", "1s",
            *network, self.image,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        self.container = self.client.containers.get(done.stdout.strip())
        self.containers.created.append(self.container)  # force-removed at teardown

    # observation

    def log_text(self) -> str:
        assert self.container is not None
        status = self.state()["Status"]
        logs = self.container.logs().decode(errors="replace")
        return f"[paramedic container {self.name}: {status}]\n{logs}"

    def state(self) -> dict[str, Any]:
        assert self.container is not None
        self.container.reload()
        return dict(self.container.attrs["State"])

    def until(self, fn: Callable[[], T | None], timeout: float, what: str) -> T:
        """``poll`` ``fn``, failing at once (with the container's log) if the container stopped."""

        def attempt() -> T | None:
            if self.state()["Status"] != "running":
                pytest.fail(f"the paramedic container stopped while waiting for {what}:\n{self.log_text()}")
            return fn()

        return poll(attempt, timeout, what, self)

    def get(self, path: str) -> int:
        return http_get(f"{self.base_url}{path}", timeout=2.0).status

    def health(self, check: str) -> str:
        body = json.loads(http_get(f"{self.base_url}/api/v1/checks", timeout=2.0).body)
        [item] = [c for c in body["checks"] if c["name"] == check]
        return str(item["health"])

    def docker_health(self) -> str:
        return str((self.state().get("Health") or {}).get("Status", "none"))

    def exec(self, *args: str) -> str:
        """Run a command inside the paramedic container (as its user); its stdout."""
        assert self.container is not None
        code, output = self.container.exec_run(list(args), demux=True)
        stdout, stderr = output
        assert code == 0, (stderr or b"").decode(errors="replace")
        return (stdout or b"").decode()

    def history(self) -> list[dict[str, Any]]:
        """``paramedic history -o json`` inside the container, oldest first."""
        return list(reversed(json.loads(self.exec("paramedic", "history", "-o", "json"))["actions"]))

    def stop(self) -> int:
        """``docker stop`` (SIGTERM to paramedic, PID 1): its exit code."""
        assert self.container is not None
        self.container.stop(timeout=30)
        return int(self.state()["ExitCode"])


@pytest.fixture
def packaged(docker_client: docker.DockerClient, containers: ContainerFactory, paramedic_image: str,
             tmp_path: Path, volume: str) -> PackagedAgent:
    if not SOCKET.is_socket():
        pytest.fail(f"the Docker engine answers, but not on {SOCKET}: these tests mount that socket")
    return PackagedAgent(docker_client, containers, paramedic_image, tmp_path, volume)


def restart_runbook(check: str, container: str) -> dict[str, Any]:
    return {"name": "web-down", "severity": "SEV-2", "match": {"checks": [check]},
            "steps": [{"action": "restart", "params": {"container": container, "mode": "graceful",
                                                       "stop_timeout": 1}, "verify_for": 15}]}


def started_at(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def target_health(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["Health"]["Status"])


def hang(container: Container) -> None:
    """SIGSTOP the web server: the port still accepts, nothing ever answers."""
    code, output = container.exec_run(["killall", "-STOP", "httpd"])
    assert code == 0, output


def docker_actions(client: docker.DockerClient, container: Container, since: float) -> list[str]:
    """What Docker reported for ``container`` from ``since`` until now (``kill``, ``restart``, ...)."""
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"container": container.id, "type": "container"})
    try:
        return [str(e.get("Action") or e.get("status")) for e in events if int(e["timeNano"]) / 1e9 >= since]
    finally:
        events.close()


def applied(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if not e["dry_run"] and e["outcome"] in ("ok", "failed", "interrupted", None)]


def assert_healed_once(packaged: PackagedAgent, client: docker.DockerClient, target: Container, since: float,
                       started_before: str) -> None:
    """The paramedic in the container restarted ``target`` once, and says so in its journal."""
    [action] = packaged.until(lambda: [e for e in applied(packaged.history()) if e["outcome"]], 30,
                              "the restart's outcome in the journal")
    assert (action["action"], action["outcome"]) == ("restart", "ok"), action
    assert action["target"] == f"container {target.name}"
    assert started_at(target) != started_before
    assert docker_actions(client, target, since).count("restart") == 1
    logs = packaged.log_text()
    assert "Read-only file system" not in logs, logs
    assert "Traceback" not in logs, logs


def test_the_image_over_the_host_network_heals_a_hung_http_server(
    packaged: PackagedAgent, containers: ContainerFactory, docker_client: docker.DockerClient
) -> None:
    port = free_port()  # fixed: Docker would pick a new random host port at every restart
    target = containers.run(["sh", "-c", HANGABLE], name=unique("web"), ports={"80/tcp": ("127.0.0.1", port)})
    assert published_port(target) == port
    wait_for_http(f"http://127.0.0.1:{port}/", timeout=10, status=200)

    api = free_port()
    check = {"name": "web", "type": "http", "url": f"http://127.0.0.1:{port}/", "interval": 1, "timeout": 1,
             "failure_threshold": 2, "success_threshold": 1}
    packaged.write_config(f"127.0.0.1:{api}", [check], [restart_runbook("web", target.name)])
    packaged.base_url = f"http://127.0.0.1:{api}"
    packaged.run("--network", "host", "-e", f"PARAMEDIC_HEALTHZ_URL={packaged.base_url}/healthz")

    packaged.until(lambda: packaged.get("/healthz") == 200, 30, "GET /healthz 200")
    packaged.until(lambda: packaged.docker_health() == "healthy", 30, "Docker's HEALTHCHECK: healthy")
    packaged.until(lambda: packaged.health("web") == "OK", 15, "web OK before the fault")
    since, started_before = time.time(), started_at(target)

    hang(target)
    packaged.until(lambda: started_at(target) != started_before or None, 30, "the target restarted")
    packaged.until(lambda: packaged.health("web") == "OK", 20, "web OK again")
    assert http_get(f"http://127.0.0.1:{port}/", timeout=2).status == 200
    assert_healed_once(packaged, docker_client, target, since, started_before)
    assert packaged.docker_health() == "healthy"
    assert packaged.stop() == 0  # SIGTERM to PID 1: a clean shutdown


def test_the_image_with_a_published_endpoint_heals_an_unhealthy_container(
    packaged: PackagedAgent, containers: ContainerFactory, docker_client: docker.DockerClient
) -> None:
    target = containers.run(["sh", "-c", HANGABLE], name=unique("web"), healthcheck=TARGET_HEALTHCHECK)
    poll(lambda: target_health(target) == "healthy", 20, "the target's own HEALTHCHECK: healthy")

    check = {"name": "web", "type": "container", "container": target.name, "interval": 1, "timeout": 2,
             "failure_threshold": 2, "success_threshold": 1}
    packaged.write_config("0.0.0.0:9321", [check], [restart_runbook("web", target.name)])
    packaged.run("-p", "127.0.0.1::9321")  # published on the loopback only
    assert packaged.container is not None
    packaged.base_url = f"http://127.0.0.1:{published_port(packaged.container, '9321/tcp')}"

    packaged.until(lambda: packaged.get("/healthz") == 200, 30, "GET /healthz 200 through the published port")
    packaged.until(lambda: packaged.docker_health() == "healthy", 30, "Docker's HEALTHCHECK: healthy")
    packaged.until(lambda: packaged.health("web") == "OK", 15, "web OK before the fault")
    since, started_before = time.time(), started_at(target)

    hang(target)  # the target's HEALTHCHECK fails twice: Docker calls it unhealthy, paramedic sees it
    packaged.until(lambda: started_at(target) != started_before or None, 30, "the target restarted")
    poll(lambda: target_health(target) == "healthy", 20, "the target healthy again")
    packaged.until(lambda: packaged.health("web") == "OK", 20, "web OK again")
    assert_healed_once(packaged, docker_client, target, since, started_before)
    assert packaged.docker_health() == "healthy"
    assert packaged.stop() == 0
