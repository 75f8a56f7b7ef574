"""``rollback`` on the real Docker engine: a bad deploy is rolled back to the good image.

Two images are committed from the busybox test image with different ``CMD``s: *good*
serves HTTP 200 on port 80, *bad* keeps running but serves nothing (PID 1 a shell loop).
The container runs ``<repo>:latest`` without a command of its own, so its command comes
from whichever image it was created from. A deploy is what people do: re-tag
``:latest`` to the new image (and the old one as ``:previous``, the seed's convention),
then replace the container with the same ``docker run``. The agent's image history lives in a real
``Store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import APIError, NotFound

from agent.config.model import parse_config
from agent.core.targets import resolve_target
from agent.kernel.models import Resources
from agent.kernel.results import Result, Status
from agent.registry import probe_class
from agent.runtime.runner import ProbeRunner
from agent.store.sqlite import Store
from checks.base import CheckSpec
from remediations.base import ActionContext, Target, verify
from remediations.clone import LABEL_ROLLBACK_FROM
from remediations.rollback import Rollback, RollbackParams
from tests.support.rich_container import preserved
from tests.support.servers import free_port
from tests.support.waiting import wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.docker]

GOOD_CMD = 'CMD ["sh", "-c", "trap \\"exit 0\\" INT TERM; httpd -p 80 -h /www; while true; do sleep 1; done"]'
BAD_CMD = 'CMD ["sh", "-c", "trap \\"exit 0\\" INT TERM; while true; do sleep 1; done"]'


@dataclass
class Deployment:
    """The app container, its two images, the store that records what it ran."""

    client: docker.DockerClient
    repo: str
    name: str
    port: int
    good: str
    bad: str
    store: Store
    now: list[float]
    network: str

    @property
    def target(self) -> Target:
        return Target(container=self.name)

    def record(self) -> None:
        """What the agent's image watcher does: note the image the target runs now."""
        self.now[0] += 60
        attrs = self.client.api.inspect_container(self.name)
        self.store.record_image(self.target.key, attrs["Config"]["Image"], attrs["Image"])

    def context(self) -> ActionContext:
        return ActionContext(image_history=self.store.image_history)

    def run_app(self) -> None:
        """``docker run`` the app from ``:latest`` (the deploy script's one command)."""
        self.client.containers.run(
            f"{self.repo}:latest", name=self.name, detach=True,
            labels={"paramedic-test": "1", "paramedic-test.pid": str(os.getpid()), "app": "shop"},
            environment={"MODE": "prod"}, ports={"80/tcp": ("127.0.0.1", self.port)}, network=self.network,
            restart_policy={"Name": "unless-stopped"}, mem_limit="64m",
            volumes={f"{self.name}-data": {"bind": "/data"}},
        )

    def deploy_bad(self) -> None:
        """What a deploy does: keep the old image as ``:previous``, point ``:latest`` to the new
        one, replace the container with a new ``docker run``."""
        self.client.api.tag(self.good, self.repo, "previous", force=True)
        self.client.api.tag(self.bad, self.repo, "latest", force=True)
        self.client.api.stop(self.name, timeout=5)
        self.client.api.remove_container(self.name)
        self.run_app()
        self.record()


def commit(client: docker.DockerClient, image: str, repo: str, tag: str, change: str) -> str:
    holder = client.containers.create(image, labels={"paramedic-test": "1", "paramedic-test.pid": str(os.getpid())})
    try:
        result = client.api.commit(holder.id, repository=repo, tag=tag, changes=[change, f"LABEL build={tag}"])
    finally:
        holder.remove(force=True)
    return str(result["Id"])


@pytest.fixture
def deployment(docker_client: docker.DockerClient, busybox_image: str, tmp_path: Path) -> Iterator[Deployment]:
    repo = f"paramedic-test/rollback-{uuid.uuid4().hex[:8]}"
    name = repo.replace("/", "-")
    port = free_port()
    good = commit(docker_client, busybox_image, repo, "good", GOOD_CMD)
    bad = commit(docker_client, busybox_image, repo, "bad", BAD_CMD)
    docker_client.api.tag(good, repo, "latest", force=True)
    now = [1_700_000_000.0]
    store = Store(tmp_path / "store.db", clock=lambda: now[0])
    network = docker_client.networks.create(f"{name}-net", labels={"paramedic-test": "1"})
    try:
        deployment = Deployment(docker_client, repo, name, port, good, bad, store, now, network.name)
        deployment.run_app()
        wait_for_http(f"http://127.0.0.1:{port}/", status=200)
        deployment.record()
        yield deployment
    finally:
        store.close()
        for ctr in docker_client.containers.list(all=True, filters={"label": "app=shop"}):
            if ctr.name.startswith(name):
                ctr.remove(force=True, v=True)
        with contextlib.suppress(NotFound, APIError):
            network.remove()
        with contextlib.suppress(NotFound, APIError):
            docker_client.volumes.get(f"{name}-data").remove(force=True)
        for tag in ("latest", "previous", "good", "bad"):
            with contextlib.suppress(NotFound, APIError):
                docker_client.api.remove_image(f"{repo}:{tag}", force=True)


def http_check(port: int) -> CheckSpec:
    config = parse_config(f"checks:\n  - {{name: shop, type: http, url: 'http://127.0.0.1:{port}/', timeout: 2}}\n")
    return config.checks[0]


async def run_check(spec: CheckSpec) -> Result:
    return await ProbeRunner().run(spec, probe_class(spec.type)(spec, Resources()))


def roll_back(d: Deployment, **params: Any) -> tuple[Any, Any, Any]:
    p = RollbackParams(container=d.name, stop_timeout=5, **params)
    action = Rollback(p, d.context())
    target = resolve_target(p, None)
    spec = http_check(d.port)

    async def go() -> tuple[Any, Any, Any]:
        plan = action.plan(target, await action.inspect(target))
        if not plan.changes:
            return plan, None, None
        outcome = await action.apply(plan)
        check = await verify(lambda: run_check(spec), success_threshold=2, deadline_s=20, interval_s=0.3)
        return plan, outcome, check

    return asyncio.run(go())


def comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Preserved settings, less what a rollback changes on purpose (image, its labels)."""
    out = preserved(attrs)
    out.pop("Image")
    out["Labels"] = {k: v for k, v in out["Labels"].items() if k not in ("build", LABEL_ROLLBACK_FROM)}
    return out


def test_bad_deploy_is_rolled_back_to_the_recorded_good_image(deployment: Deployment) -> None:
    d = deployment
    client = d.client
    original = client.api.inspect_container(d.name)
    spec = http_check(d.port)
    d.deploy_bad()
    bad_attrs = client.api.inspect_container(d.name)
    assert bad_attrs["Image"] == d.bad
    assert asyncio.run(run_check(spec)).status is not Status.OK

    plan, outcome, check = roll_back(d)

    assert plan.changes, plan.summary
    assert plan.data["image_id"] == d.good
    assert plan.data["image"] == d.good  # :latest points to the bad image now: the good one by id
    assert outcome.ok, outcome.message
    assert check.ok, check.as_dict()
    after = client.api.inspect_container(d.name)
    assert after["Image"] == d.good
    assert after["Id"] not in (original["Id"], bad_attrs["Id"])
    assert after["Config"]["Labels"][LABEL_ROLLBACK_FROM] == d.bad
    assert after["Config"]["Cmd"] == original["Config"]["Cmd"]  # the good image's own command again
    assert comparable(after) == comparable(original)

    d.record()
    again, _, _ = roll_back(d)
    assert again.refused is not None
    assert f"rolled back from {d.bad.removeprefix('sha256:')[:12]}" in again.refused
    assert "a person must decide" in again.refused


def test_previous_tag_with_retag_points_latest_back_at_the_good_image(deployment: Deployment) -> None:
    d = deployment
    d.deploy_bad()

    plan, outcome, check = roll_back(d, previous_tag="previous", retag=True)

    assert plan.changes, plan.summary
    assert plan.steps[0].startswith(f"re-tag {d.repo}:latest to {d.good.removeprefix('sha256:')[:12]}")
    assert outcome.ok, outcome.message
    assert check.ok, check.as_dict()
    assert d.client.api.inspect_image(f"{d.repo}:latest")["Id"] == d.good
    after = d.client.api.inspect_container(d.name)
    assert (after["Config"]["Image"], after["Image"]) == (f"{d.repo}:latest", d.good)


def test_without_an_earlier_image_the_plan_refuses(deployment: Deployment) -> None:
    plan, _, _ = roll_back(deployment)
    assert plan.refused == f"no earlier image recorded for container {deployment.name} (history: 1 entry, " \
                           "all the current image)"
