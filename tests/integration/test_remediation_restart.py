"""``restart`` / ``start`` on the real Docker engine, judged by the check that triggered them.

Each container runs busybox httpd behind a fixed port published on 127.0.0.1 while PID 1 (a
shell loop) stays up, so killing httpd breaks the HTTP check without Docker noticing: the
realistic "process wedged, container running" case. After ``apply`` the same HTTP check
must pass (``remediations.base.verify``) and the container's configuration must be the
one it had before.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container

from agent.config.model import parse_config
from agent.kernel.models import Resources
from agent.kernel.results import Result, Status
from agent.runtime.runner import ProbeRunner, build_probe
from agent.store.sqlite import Store
from remediations.base import ActionContext, Outcome, Remediation, Target, verify
from remediations.restart import Restart, RestartParams, Start, StartParams
from tests.support.docker import ContainerFactory
from tests.support.remediation import run_action
from tests.support.servers import free_port
from tests.support.waiting import http_get, wait_for_http, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

#: httpd daemonizes; PID 1 keeps looping (and exits promptly on SIGTERM, like a real app).
SERVE = ("mkdir -p /www && echo ok > /www/index.html && httpd -p 80 -h /www; "
         "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
#: Exits 1 the first time (the app "crashed on boot"), serves once started again.
FLAKY_BOOT = f"if [ -e /crashed-once ]; then {SERVE}; else touch /crashed-once; exit 1; fi"


def unique(prefix: str) -> str:
    return f"paramedic-test-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def context() -> Iterator[ActionContext]:
    ctx = ActionContext(resources=Resources())
    try:
        yield ctx
    finally:
        asyncio.run(ctx.resources.close())


def web(containers: ContainerFactory, script: str = SERVE, **kwargs: Any) -> tuple[Container, int]:
    port = free_port()
    labels = {"app": "shop", **kwargs.pop("labels", {})}
    container = containers.run(["sh", "-c", script], name=unique("web"), ports={"80/tcp": ("127.0.0.1", port)},
                               environment={"APP_MODE": "prod"}, labels=labels, **kwargs)
    return container, port


def http_check(port: int) -> Callable[[], Awaitable[Result]]:
    """The triggering check, built from config text the way the agent builds it."""
    config = parse_config(f"checks:\n  - {{name: web-http, type: http, url: 'http://127.0.0.1:{port}/', "
                          "timeout: 1s}\n")
    [spec] = config.checks
    runner = ProbeRunner()

    async def run() -> Result:
        resources = Resources()
        try:
            return await runner.run(spec, build_probe(spec, resources))
        finally:
            await resources.close()

    return run


def config_of(container: Container) -> dict[str, Any]:
    """What a restart must not change."""
    container.reload()
    a = container.attrs
    return {
        "id": a["Id"], "name": a["Name"], "image": a["Image"], "cmd": a["Config"]["Cmd"],
        "env": a["Config"]["Env"], "labels": a["Config"]["Labels"], "mounts": a["Mounts"],
        "restart_policy": a["HostConfig"]["RestartPolicy"], "ports": a["HostConfig"]["PortBindings"],
        "networks": sorted(a["NetworkSettings"]["Networks"]),
    }


def check_passes(port: int) -> bool:
    verdict = asyncio.run(verify(http_check(port), success_threshold=2, deadline_s=15, interval_s=0.2))
    return verdict.ok


def break_httpd(container: Container, port: int) -> None:
    container.exec_run(["killall", "httpd"])

    def down() -> bool | None:
        try:
            http_get(f"http://127.0.0.1:{port}/", timeout=1)
        except OSError:
            return True
        return None

    wait_until(down, timeout=10, what="httpd to stop answering")
    result = asyncio.run(http_check(port)())
    assert result.status is Status.CRITICAL, result.message
    container.reload()
    assert container.status == "running"  # PID 1 is fine: Docker sees nothing wrong


def wait_status(container: Container, status: str, timeout: float = 15.0) -> None:
    def attempt() -> bool | None:
        container.reload()
        return True if container.status == status else None

    wait_until(attempt, timeout=timeout, what=f"{container.name} {status}")


# --------------------------------------------------------------------------- restart heals


@pytest.mark.parametrize("mode", ["graceful", "force"])
def test_restart_brings_the_http_check_back_and_keeps_the_config(
    containers: ContainerFactory, context: ActionContext, mode: str
) -> None:
    container, port = web(containers, restart_policy={"Name": "on-failure", "MaximumRetryCount": 5})
    wait_for_http(f"http://127.0.0.1:{port}/", status=200)
    before = config_of(container)
    started_before = container.attrs["State"]["StartedAt"]
    break_httpd(container, port)

    expected: list[tuple[str, float]] = []
    context.expect_events = lambda name, seconds: expected.append((name, seconds))
    action = Restart(RestartParams.model_validate({"mode": mode, "stop_timeout": "5s"}), context)
    t0 = time.monotonic()
    plan, outcome = run_action(action, Target(container=container.name))

    assert plan.changes, plan.summary
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert outcome.message == f"restarted {container.name}"
    assert expected == [(container.name, 35.0)]
    [line] = outcome.data["containers"]
    assert line["running"] is True
    assert line["started_at"] > started_before
    assert line["restart_count"] == 0  # Docker counts only its policy's restarts
    assert time.monotonic() - t0 < 5  # PID 1 honours SIGTERM: no waiting out the grace period
    assert check_passes(port)
    assert config_of(container) == before


def test_start_a_container_that_exited_on_its_own(containers: ContainerFactory, context: ActionContext) -> None:
    container, port = web(containers, script=FLAKY_BOOT)
    wait_status(container, "exited")
    before = config_of(container)
    assert asyncio.run(http_check(port)()).status is Status.CRITICAL

    plan, outcome = run_action(Start(StartParams(), context), Target(container=container.name))

    assert plan.steps == (f"start {container.name} (it is exited, exit code 1)",)
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert check_passes(port)
    assert config_of(container) == before
    # started now: a second start has nothing to do
    again, _ = run_action(Start(StartParams(), context), Target(container=container.name))
    assert again.summary == f"nothing to do for container {container.name}: {container.name} is already running"


def test_group_restart_touches_only_the_failing_replica(
    containers: ContainerFactory, context: ActionContext
) -> None:
    project = unique("proj")
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "web"}
    healthy, healthy_port = web(containers, labels={**labels, "com.docker.compose.container-number": "1"})
    broken, broken_port = web(containers, script=FLAKY_BOOT,
                              labels={**labels, "com.docker.compose.container-number": "2"})
    wait_for_http(f"http://127.0.0.1:{healthy_port}/", status=200)
    wait_status(broken, "exited")
    healthy.reload()
    healthy_started = healthy.attrs["State"]["StartedAt"]

    plan, outcome = run_action(Restart(RestartParams(), context),
                               Target(compose_project=project, compose_service="web"))

    assert [c["name"] for c in plan.data["containers"]] == [broken.name]
    assert plan.data["left_alone"] == [{"name": healthy.name, "reason": "is running and not unhealthy"}]
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert check_passes(broken_port)
    healthy.reload()
    assert healthy.attrs["State"]["StartedAt"] == healthy_started


# --------------------------------------------------------------------------- refusals


def test_operator_stopped_container_is_refused(
    containers: ContainerFactory, context: ActionContext, tmp_path: Path
) -> None:
    container, _ = web(containers)
    wait_status(container, "running")
    container.stop(timeout=5)
    store = Store(tmp_path / "state.db")
    try:
        store.record_operator_stop(container.name, container.id or "", "stop")  # as the event listener does
        context.operator_stops = store.operator_stops
        target = Target(container=container.name)
        for action in (Restart(RestartParams(), context), Start(StartParams(), context)):
            plan, outcome = run_action(action, target)
            assert outcome is None
            assert plan.refused is not None
            assert plan.refused.startswith(f"{container.name} was stopped by an operator at ")
            assert f"docker start {container.name}" in plan.refused
    finally:
        store.close()
    container.reload()
    assert container.status == "exited"


def crash_looper(containers: ContainerFactory) -> Container:
    return containers.run(["sh", "-c", "sleep 0.3; exit 1"], name=unique("crash"),
                          restart_policy={"Name": "always"})


def caught(action: Remediation[Any], target: Target, wanted: Callable[[Mapping[str, Any]], bool],
           timeout: float = 60.0) -> Mapping[str, Any]:
    """Inspect through the action until the container is in the wanted state (a real snapshot)."""

    async def go() -> Mapping[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snapshot = await action.inspect(target)
            if wanted(snapshot["containers"][0]):
                return snapshot
            await asyncio.sleep(0.01)
        raise AssertionError("state not reached")

    return asyncio.run(go())


def test_docker_restart_policy_in_progress_is_not_raced(
    containers: ContainerFactory, context: ActionContext
) -> None:
    container = crash_looper(containers)
    target = Target(container=container.name)
    action = Restart(RestartParams(crash_loop_restarts=50), context)  # only the race rule applies
    snapshot = caught(action, target, lambda c: c["restarting"])

    plan = action.plan(target, snapshot)

    count = snapshot["containers"][0]["restart_count"]
    assert plan.refused == (f"Docker's restart policy always is already restarting {container.name} "
                            f"(restart {count}); leave it to Docker")


def test_crash_loop_is_refused(containers: ContainerFactory, context: ActionContext) -> None:
    container = crash_looper(containers)
    target = Target(container=container.name)
    action = Restart(RestartParams(mode="force"), context)
    snapshot = caught(action, target, lambda c: c["restart_count"] >= 3)

    plan = action.plan(target, snapshot)

    assert plan.refused is not None
    assert plan.refused.startswith(f"{container.name} is crash-looping (")
    assert "restart policy always" in plan.refused
    assert "restarting will not help" in plan.refused
    assert Start(StartParams(), context).plan(target, snapshot).refused == plan.refused


def test_missing_container_is_refused_and_a_vanished_one_fails_cleanly(
    containers: ContainerFactory, context: ActionContext
) -> None:
    plan, _ = run_action(Restart(RestartParams(), context), Target(container=unique("nobody")))
    assert plan.refused == "no container matched"

    container, _ = web(containers)
    action = Restart(RestartParams(), context)
    target = Target(container=container.name)

    async def go() -> Outcome:
        planned = action.plan(target, await action.inspect(target))
        container.remove(force=True)
        return await action.apply(planned)

    outcome = asyncio.run(go())
    assert not outcome.ok
    assert outcome.message == f"{container.name} is gone (removed or recreated since the plan)"
