"""``recreate`` on the real Docker engine: a wedged container gets a clean slate.

The container is the "rich" busybox container (tests/support/rich_container.py): two
networks with aliases, named/bind/anonymous/tmpfs mounts, limits, healthcheck, restart
policy... PID 1 is a shell loop, so ``killall httpd`` wedges it: running, port published,
nothing answering. Its port is published on a fixed free port of 127.0.0.1 so the HTTP
check that triggers the action reaches the new container at the same address.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from agent.config.model import parse_config
from agent.core.targets import resolve_target
from agent.kernel.models import Resources
from agent.kernel.results import Result, Status
from agent.registry import probe_class
from agent.runtime.runner import ProbeRunner
from checks.base import CheckSpec
from remediations.base import ActionContext, Plan, verify
from remediations.recreate import Recreate, RecreateParams
from tests.support.docker import ContainerFactory
from tests.support.rich_container import preserved, remove_rich, run_rich
from tests.support.servers import free_port
from tests.support.waiting import wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.docker]

#: Serves only once provisioned, and provisioning needs a one-time token on the host: a
#: fresh container made after the token is gone cannot start; the old one still can.
PROVISIONED = """\
if [ ! -e /provisioned ]; then
  [ -e /conf/token ] || exit 3
  touch /provisioned
fi
trap "exit 0" INT TERM
httpd -p 80 -h /www
while true; do sleep 1; done
"""


class Recorder:
    """``expect_events`` that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, container: str, seconds: float) -> None:
        self.calls.append((container, seconds))


@pytest.fixture
def rich(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[tuple[Any, int]]:
    """A running rich container with its httpd on 127.0.0.1:<port>; everything removed after."""
    name = f"paramedic-test-recreate-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory() as host_dir:
        try:
            container = run_rich(docker_client, busybox_image, name, host_dir, host_port=port)
            wait_for_http(f"http://127.0.0.1:{port}/", status=200)
            yield container, port
        finally:
            remove_rich(docker_client, name)


def http_check(port: int) -> CheckSpec:
    config = parse_config(f"checks:\n  - {{name: web, type: http, url: 'http://127.0.0.1:{port}/', timeout: 2}}\n")
    return config.checks[0]


async def run_check(spec: CheckSpec) -> Result:
    probe = probe_class(spec.type)(spec, Resources())
    return await ProbeRunner().run(spec, probe)


def wedge(container: Any) -> None:
    """Kill the server inside; PID 1 (the shell loop) stays up."""
    result = container.exec_run(["killall", "httpd"])  # as the container user, who owns it
    assert result.exit_code == 0, result.output


def test_wedged_container_is_recreated_and_serves_again(
    docker_client: docker.DockerClient, rich: tuple[Any, int]
) -> None:
    container, port = rich
    spec = http_check(port)
    assert asyncio.run(run_check(spec)).status is Status.OK
    container.exec_run(["sh", "-c", "echo kept > /scratch/marker"], user="root")
    wedge(container)
    assert asyncio.run(run_check(spec)).status is Status.CRITICAL
    before = docker_client.api.inspect_container(container.id)

    events = Recorder()
    params = RecreateParams(container=container.name, stop_timeout=5)
    action = Recreate(params, ActionContext(expect_events=events))
    target = resolve_target(params, None)

    async def scenario() -> tuple[Plan, Any, Any]:
        snapshot = await action.inspect(target)
        plan = action.plan(target, snapshot)
        outcome = await action.apply(plan)
        check = await verify(lambda: run_check(spec), success_threshold=2, deadline_s=20, interval_s=0.3)
        return plan, outcome, check

    plan, outcome, check = asyncio.run(scenario())
    assert plan.changes, plan.summary
    assert outcome.ok, outcome.message
    assert check.ok, check.as_dict()

    after = docker_client.api.inspect_container(container.name)
    assert after["Id"] != before["Id"]
    assert outcome.data["replaced"] == [{"name": container.name, "old_id": before["Id"], "new_id": after["Id"]}]
    assert preserved(after) == preserved(before)
    with pytest.raises(NotFound):
        docker_client.api.inspect_container(before["Id"])  # the old one is gone
    marker = docker_client.containers.get(after["Id"]).exec_run(["cat", "/scratch/marker"])
    assert marker.output == b"kept\n"  # the anonymous volume came along
    assert before["Id"] in [c for c, _ in events.calls]  # the stop was announced


def test_a_new_container_that_does_not_stay_up_is_undone(
    docker_client: docker.DockerClient, containers: ContainerFactory, tmp_path: Path
) -> None:
    """A fresh container cannot start (its one-time provisioning token is gone): the
    replacement exits at once, so the old one must come back under its name, serving."""
    (tmp_path / "start.sh").write_text(PROVISIONED)
    (tmp_path / "token").write_text("once\n")
    port = free_port()
    name = f"paramedic-test-undo-{uuid.uuid4().hex[:8]}"
    old = containers.run(["sh", "/conf/start.sh"], name=name, ports={"80/tcp": ("127.0.0.1", port)},
                         volumes={str(tmp_path): {"bind": "/conf", "mode": "ro"}})
    wait_for_http(f"http://127.0.0.1:{port}/", status=200)
    params = RecreateParams(container=name, stop_timeout=2, start_grace=1)
    action = Recreate(params, ActionContext())
    target = resolve_target(params, None)
    plan = action.plan(target, asyncio.run(action.inspect(target)))
    (tmp_path / "token").unlink()

    outcome = asyncio.run(action.apply(plan))

    assert not outcome.ok
    assert "did not stay running: exited (exit code 3)" in outcome.message
    assert outcome.message.endswith("the old container is back")
    now = docker_client.api.inspect_container(name)
    assert now["Id"] == old.id  # the same old container, with its name back, running
    assert now["State"]["Running"]
    assert [c.id for c in docker_client.containers.list(all=True, filters={"name": name})] == [old.id]
    wait_for_http(f"http://127.0.0.1:{port}/", status=200)


def test_a_container_changed_since_the_plan_is_left_alone(
    docker_client: docker.DockerClient, rich: tuple[Any, int]
) -> None:
    container, port = rich
    params = RecreateParams(container=container.name, stop_timeout=5)
    action = Recreate(params, ActionContext())
    target = resolve_target(params, None)
    plan = action.plan(target, asyncio.run(action.inspect(target)))
    assert "hello world" not in json.dumps(plan.as_dict())  # environment values never reach a plan
    container.update(mem_limit="96m")

    outcome = asyncio.run(action.apply(plan))

    assert not outcome.ok
    assert outcome.message == f"{container.name} changed since the plan was made; plan again"
    now = docker_client.api.inspect_container(container.name)
    assert (now["Id"], now["State"]["Running"]) == (container.id, True)
    wait_for_http(f"http://127.0.0.1:{port}/", status=200)


def test_plan_refuses_a_container_an_operator_stopped(
    docker_client: docker.DockerClient, rich: tuple[Any, int]
) -> None:
    container, _ = rich
    stops = {container.name: {"id": container.id, "event": "stop", "at": 1_700_000_000.0}}
    params = RecreateParams(container=container.name)
    action = Recreate(params, ActionContext(operator_stops=lambda: stops))
    target = resolve_target(params, None)
    plan = action.plan(target, asyncio.run(action.inspect(target)))
    assert plan.refused is not None
    assert "stopped by an operator" in plan.refused
