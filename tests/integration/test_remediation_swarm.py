"""Swarm ``restart`` / ``scale`` / ``rollback`` on a real single-node swarm.

The engine is made a swarm manager for the session (``swarm.init(advertise_addr=
"127.0.0.1", listen_addr="127.0.0.1:2377")``) unless it already is one, and it leaves the
swarm again at the end only if a paramedic test session made it one and no service is
left on it: see :func:`swarm`. Container tests of other sessions keep working in swarm
mode.

Services run busybox httpd on port 80 while PID 1 (a shell loop) stays up, like the
container tests. No port is published: Swarm publishes on every interface (ingress or
host mode bind 0.0.0.0), and tests send no traffic outside the loopback range. So a
service is judged (a) by the triggering ``container`` check of the agent, selecting the
service's task containers by Swarm's ``com.docker.swarm.service.name`` label with the
replica count (replicas running and healthy), and (b) by HTTP from *inside* each task
(``wget http://127.0.0.1/`` run with ``exec``), which is what breaks when httpd dies or a
bad image ships. Images are local only: Swarm's pull attempt fails fast offline and the
local image runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import io
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import APIError, NotFound
from docker.models.services import Service
from docker.types import ServiceMode

from agent.config.model import parse_config
from agent.kernel.models import Resources
from agent.kernel.results import Result
from agent.runtime.runner import ProbeRunner, build_probe
from remediations.base import ActionContext, Outcome, Plan, Target, verify
from remediations.restart import Restart, RestartParams, Start, StartParams
from remediations.swarm import (
    SERVICE_NAME_LABEL,
    apply_rollback,
    apply_scale,
    inspect_service,
    plan_rollback,
    plan_scale,
)
from tests.support.docker import OWNER_LABEL, TEST_LABEL
from tests.support.processes import pid_alive
from tests.support.remediation import Bounds, run_action
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SERVE = ("mkdir -p /www && echo ok > /www/index.html && httpd -p 80 -h /www; "
         "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
#: On the swarm's own spec: a paramedic test session initialised it (so one may leave it).
SWARM_MARK = "paramedic-test.swarm"
HOST_LABEL = "paramedic-test.host"
ANCHOR_PREFIX = "paramedic-test-anchor-"
LOCK_FILE = Path(tempfile.gettempdir()) / "paramedic-test-swarm.lock"


# --------------------------------------------------------------------------- the swarm (session)


@contextlib.contextmanager
def swarm_lock() -> Iterator[None]:
    """Serialises join/leave decisions of test sessions sharing this machine's /tmp."""
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ours() -> dict[str, str]:
    return {TEST_LABEL: "1", OWNER_LABEL: str(os.getpid()), HOST_LABEL: socket.gethostname()}


def remove_dead_sessions_services(client: docker.DockerClient) -> None:
    """Services (and anchors) left by a killed test session of this host."""
    for attrs in client.api.services(filters={"label": f"{TEST_LABEL}=1"}):
        labels = attrs["Spec"].get("Labels") or {}
        owner = labels.get(OWNER_LABEL, "")
        if labels.get(HOST_LABEL) == socket.gethostname() and owner.isdigit() and not pid_alive(int(owner)):
            with contextlib.suppress(NotFound):
                client.api.remove_service(attrs["ID"])


def swarm_state(client: docker.DockerClient) -> dict[str, Any]:
    info: dict[str, Any] = client.info()["Swarm"]
    return info


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[docker.DockerClient]:
    """The engine as a single-node swarm manager, for this session.

    Several test sessions may share the engine (and this machine's /tmp). Each one, under
    a file lock, makes the engine a swarm if it is not one (marking the swarm's spec with
    ``paramedic-test.swarm=1``) and registers itself with an *anchor*: a service with 0
    replicas (no task, no container) labelled with its pid. At teardown it removes its
    anchor, and the swarm is left (``leave --force``) only if it carries the mark and no
    service at all is left on it: a swarm a person made is never left, and neither is one
    another session still uses.
    """
    anchor = f"{ANCHOR_PREFIX}{uuid.uuid4().hex[:8]}"
    with swarm_lock():
        for _attempt in range(3):
            state = swarm_state(docker_client)
            if state["LocalNodeState"] == "inactive":
                docker_client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377",
                                         labels={SWARM_MARK: "1"})
            elif state["LocalNodeState"] != "active" or not state.get("ControlAvailable"):
                pytest.fail(f"this Docker engine is a swarm node but not a manager ({state['LocalNodeState']})")
            try:
                remove_dead_sessions_services(docker_client)
                docker_client.services.create(busybox_image, ["true"], name=anchor, labels=ours(),
                                              mode=ServiceMode("replicated", replicas=0))
                break
            except APIError as error:  # another session left the swarm between our look and our create
                if error.status_code != 503:
                    raise
        else:
            pytest.fail("could not join a swarm for the tests")
    try:
        yield docker_client
    finally:
        with swarm_lock():
            with contextlib.suppress(NotFound):
                docker_client.api.remove_service(anchor)
            docker_client.swarm.reload()
            marked = ((docker_client.swarm.attrs.get("Spec") or {}).get("Labels") or {}).get(SWARM_MARK) == "1"
            if marked and not docker_client.api.services():
                docker_client.swarm.leave(force=True)


@dataclass
class Services:
    """Creates services for one test (labelled, on the busybox image) and removes them."""

    client: docker.DockerClient
    image: str
    made: list[Service] = field(default_factory=list)

    def httpd(self, replicas: int = 2, image: str | None = None) -> Service:
        labels = ours()
        service = self.client.services.create(
            image or self.image, ["sh", "-c", SERVE], name=f"paramedic-test-svc-{uuid.uuid4().hex[:8]}",
            mode=ServiceMode("replicated", replicas=replicas), labels=labels, container_labels=labels,
            env=["APP_MODE=prod"],
        )
        self.made.append(service)
        wait_running(self.client, service, replicas)
        return service

    def cleanup(self) -> None:
        for service in self.made:
            with contextlib.suppress(NotFound):
                service.remove()
        for service in self.made:  # tasks' containers go asynchronously
            self.wait_gone(service.name)
        self.made.clear()

    def wait_gone(self, name: str) -> None:
        def gone() -> bool | None:
            left = self.client.api.containers(all=True, filters={"label": f"{SERVICE_NAME_LABEL}={name}"})
            return None if left else True

        wait_until(gone, timeout=60, interval=0.2, what=f"containers of {name} to go")


@pytest.fixture
def services(swarm: docker.DockerClient, busybox_image: str) -> Iterator[Services]:
    factory = Services(swarm, busybox_image)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="session")
def bad_image(swarm: docker.DockerClient, busybox_image: str) -> Iterator[str]:
    """A "new version" of the test image whose docroot ``/www`` is a file: its tasks run, but
    the service's command cannot set up the docroot, so httpd never starts (a bad deploy).
    (Removing ``/bin/httpd`` would not do: busybox ``sh`` runs its applets without the links.)"""
    tag = f"paramedic-test/busybox:swarm-bad-{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {busybox_image}\nRUN rm -rf /www && echo broken > /www\nLABEL paramedic-test=1\n"
    swarm.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False,
                       labels={TEST_LABEL: "1", OWNER_LABEL: str(os.getpid())})
    try:
        yield tag
    finally:
        deadline = time.monotonic() + 30
        while True:
            try:
                swarm.images.remove(tag)
                break
            except NotFound:
                break
            except APIError:  # a removed service's container still holds it for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@pytest.fixture
def announced() -> list[str]:
    """The containers the action announced to the event listener (``expect_events``)."""
    return []


@pytest.fixture
def context(announced: list[str]) -> Iterator[ActionContext]:
    ctx = ActionContext(resources=Resources(), expect_events=lambda container, seconds: announced.append(container))
    try:
        yield ctx
    finally:
        asyncio.run(ctx.resources.close())


# --------------------------------------------------------------------------- observing a service


def running_tasks(client: docker.DockerClient, service: Service) -> list[dict[str, Any]]:
    tasks = client.api.tasks(filters={"service": service.id, "desired-state": "running"})
    return [t for t in tasks if t["Status"]["State"] == "running"]


def wait_running(client: docker.DockerClient, service: Service, count: int, timeout: float = 60) -> list[Any]:
    def attempt() -> list[Any] | None:
        wanted = client.api.tasks(filters={"service": service.id, "desired-state": "running"})
        done = len(wanted) == count and all(t["Status"]["State"] == "running" for t in wanted)
        return wanted if done else None

    result: list[Any] = wait_until(attempt, timeout=timeout, interval=0.2, what=f"{count} tasks of {service.name}")
    return result


def serving(client: docker.DockerClient, service: Service) -> list[bool]:
    """HTTP from inside each running task: does httpd answer on the task's own loopback?"""
    answers = []
    for task in running_tasks(client, service):
        container = client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
        code, output = container.exec_run(["timeout", "5", "wget", "-q", "-O-", "http://127.0.0.1/"])
        answers.append(code == 0 and output.strip() == b"ok")
    return answers


def spec_of(service: Service) -> dict[str, Any]:
    service.reload()
    spec: dict[str, Any] = copy.deepcopy(service.attrs["Spec"])
    return spec


def tasks_check(name: str, replicas: int) -> Result:
    """The triggering ``container`` check, from config text as the agent builds it."""
    config = parse_config(f"checks:\n  - {{name: swarm-tasks, type: container, replicas: {replicas}, timeout: 10s, "
                          f"labels: {{'{SERVICE_NAME_LABEL}': '{name}'}}}}\n")
    [spec] = config.checks

    async def run() -> Result:
        resources = Resources()
        try:
            return await ProbeRunner().run(spec, build_probe(spec, resources))
        finally:
            await resources.close()

    verdict = asyncio.run(verify(run, success_threshold=2, deadline_s=30, interval_s=0.5))
    assert verdict.ok, verdict.last_message
    return asyncio.run(run())


# --------------------------------------------------------------------------- restart


def test_restart_force_updates_the_service_and_every_task_serves_again(
    services: Services, context: ActionContext, announced: list[str]
) -> None:
    client = services.client
    service = services.httpd(replicas=2)
    before = spec_of(service)
    old = running_tasks(client, service)
    broken = client.containers.get(old[0]["Status"]["ContainerStatus"]["ContainerID"])
    broken.exec_run(["killall", "httpd"])
    assert sorted(serving(client, service)) == [False, True]  # wedged: the task still runs, httpd is gone

    plan, outcome = run_action(Restart(RestartParams(mode="force"), context), Target(swarm_service=service.name))

    assert plan.changes, plan.summary
    assert plan.summary == f"force-update swarm service {service.name}: Swarm replaces its 2 tasks (2 running now)"
    assert any("same force-update as graceful mode" in step for step in plan.steps)
    assert outcome is not None
    assert outcome.ok, outcome
    new = running_tasks(client, service)
    assert len(new) == 2
    assert not {t["ID"] for t in new} & {t["ID"] for t in old}
    after = spec_of(service)
    assert after["TaskTemplate"].pop("ForceUpdate") == before["TaskTemplate"].pop("ForceUpdate") + 1
    assert after == before  # nothing but the counter changed: no engine defaults written in
    assert serving(client, service) == [True, True]
    result = tasks_check(service.name, 2)
    assert result.observations["replicas_running"] >= 2
    assert sorted(announced) == sorted(t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in old)


def test_start_refuses_a_swarm_service(services: Services, context: ActionContext) -> None:
    service = services.httpd(replicas=1)
    plan, outcome = run_action(Start(StartParams(), context), Target(swarm_service=service.name))
    assert outcome is None
    assert plan.refused is not None
    assert "Swarm keeps the tasks" in plan.refused


def test_a_missing_service_is_refused(swarm: docker.DockerClient, context: ActionContext) -> None:
    plan, outcome = run_action(Restart(RestartParams(), context), Target(swarm_service="paramedic-test-no-such"))
    assert outcome is None
    assert plan.refused == "no Swarm service named paramedic-test-no-such"


# --------------------------------------------------------------------------- scale


def scale(context: ActionContext, name: str, bounds: Bounds) -> tuple[Plan, Outcome | None]:
    async def go() -> tuple[Plan, Outcome | None]:
        target = Target(swarm_service=name)
        plan = plan_scale(target, await inspect_service(context, target), bounds)
        if plan.refused or not plan.changes:
            return plan, None
        return plan, await apply_scale(context, plan)

    return asyncio.run(go())


def test_scale_up_then_down_leaves_the_running_task_alone(services: Services, context: ActionContext) -> None:
    client = services.client
    service = services.httpd(replicas=1)
    before = spec_of(service)
    [first] = running_tasks(client, service)

    plan, outcome = scale(context, service.name, Bounds(replicas=3))
    assert plan.summary == f"scale swarm service {service.name} from 1 to 3 replicas (1 running now)"
    assert outcome is not None
    assert outcome.ok, outcome
    tasks = running_tasks(client, service)
    assert len(tasks) == 3
    assert first["ID"] in {t["ID"] for t in tasks}  # docker-py's Service.scale() would have replaced it
    assert serving(client, service) == [True, True, True]
    tasks_check(service.name, 3)

    nothing, _ = scale(context, service.name, Bounds(step=+5, max=3))
    assert not nothing.changes
    assert nothing.refused is None

    plan, outcome = scale(context, service.name, Bounds(step=-2))
    assert plan.data["replicas"] == 1
    assert outcome is not None
    assert outcome.ok, outcome
    assert len(running_tasks(client, service)) == 1
    after = spec_of(service)
    assert after["Mode"] == {"Replicated": {"Replicas": 1}}
    assert after == before
    tasks_check(service.name, 1)


# --------------------------------------------------------------------------- rollback


def rollback(context: ActionContext, name: str) -> tuple[Plan, Outcome | None]:
    async def go() -> tuple[Plan, Outcome | None]:
        target = Target(swarm_service=name)
        plan = plan_rollback(target, await inspect_service(context, target))
        if plan.refused or not plan.changes:
            return plan, None
        return plan, await apply_rollback(context, plan)

    return asyncio.run(go())


def test_rollback_of_a_bad_deploy_and_never_twice(services: Services, bad_image: str, context: ActionContext) -> None:
    client = services.client
    service = services.httpd(replicas=2)
    before = spec_of(service)
    good = running_tasks(client, service)
    service.update(image=bad_image)  # the deploy, as docker-py users write it

    def deployed() -> bool | None:
        service.reload()
        done = (service.attrs.get("UpdateStatus") or {}).get("State") == "completed"
        tasks = running_tasks(client, service)
        return True if done and len(tasks) == 2 and all(
            t["Spec"]["ContainerSpec"]["Image"] == bad_image for t in tasks) else None

    wait_until(deployed, timeout=90, interval=0.3, what="the bad deploy to complete")
    assert serving(client, service) == [False, False]  # the new version does not serve

    plan, outcome = rollback(context, service.name)
    assert plan.changes, plan.summary
    assert plan.summary.startswith(f"roll back swarm service {service.name} to its previous spec: image "
                                   f"{bad_image} -> {before['TaskTemplate']['ContainerSpec']['Image']}")
    assert outcome is not None
    assert outcome.ok, outcome
    after = spec_of(service)
    assert after == before  # exactly the spec before the deploy (Swarm's own PreviousSpec)
    tasks = running_tasks(client, service)
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in tasks} == {before["TaskTemplate"]["ContainerSpec"]["Image"]}
    assert not {t["ID"] for t in tasks} & {t["ID"] for t in good}
    assert serving(client, service) == [True, True]
    tasks_check(service.name, 2)
    assert (service.attrs.get("UpdateStatus") or {}).get("State") in ("rollback_started", "rollback_completed")

    again, outcome = rollback(context, service.name)
    assert outcome is None
    assert again.refused is not None
    assert again.refused.startswith("already rolled back: Swarm reports rollback_")
    assert spec_of(service) == before
