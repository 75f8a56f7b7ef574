"""``docker.prune`` on the real engine: it removes exactly what it listed, and nothing else.

Images are made by committing busybox containers that wrote 200 kB of random data (a real
unique layer), each labelled ``paramedic-test.prune=<this test's id>``; committing twice
under one tag leaves the first image dangling. ``only_labels`` keeps the action inside
this test's own objects: other tests and sessions share the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import ImageNotFound, NotFound
from docker.models.containers import Container

from agent.kernel.models import Resources
from agent.store.sqlite import Store
from remediations.base import ActionContext, Outcome, Plan, Target
from remediations.prune import Prune, PruneParams
from tests.support.docker import ContainerFactory
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

LABEL = "paramedic-test.prune"


@dataclass
class Scene:
    client: docker.DockerClient
    containers: ContainerFactory
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.uid}

    def image(self, tag: str) -> str:
        """Commit a container holding a fresh 200 kB file as ``paramedic-test/prune-<uid>:<tag>``; its id."""
        builder = self.containers.run(["sh", "-c", "head -c 200000 /dev/urandom > /blob"])
        wait_exited(builder)
        image = builder.commit(repository=f"paramedic-test/prune-{self.uid}", tag=tag,
                               changes=[f"LABEL {LABEL}={self.uid}"])
        return str(image.id)

    def cleanup(self) -> None:
        self.containers.cleanup()
        for image in self.client.images.list(all=True, filters={"label": f"{LABEL}={self.uid}"}):
            with contextlib.suppress(ImageNotFound, NotFound):
                self.client.images.remove(image.id, force=True)


@pytest.fixture
def scene(docker_client: docker.DockerClient, containers: ContainerFactory) -> Iterator[Scene]:
    made = Scene(docker_client, containers)
    try:
        yield made
    finally:
        made.cleanup()


def wait_exited(container: Container) -> None:
    def done() -> bool | None:
        container.reload()
        return True if container.status == "exited" else None

    wait_until(done, timeout=15, what=f"{container.name} to exit")


def exists(client: docker.DockerClient, kind: str, ref: str) -> bool:
    try:
        (client.images if kind == "image" else client.containers).get(ref)
    except (ImageNotFound, NotFound):
        return False
    return True


def run(action: Prune) -> tuple[Plan, Outcome | None]:
    async def go() -> tuple[Plan, Outcome | None]:
        try:
            plan = action.plan(Target(check="disk"), await action.inspect(Target(check="disk")))
            return plan, (await action.apply(plan) if plan.changes else None)
        finally:
            await action.context.resources.close()

    return asyncio.run(go())


def test_prune_removes_exactly_the_listed_objects(scene: Scene, tmp_path: Path) -> None:
    client, uid = scene.client, scene.uid
    # A: dangling, used only by an old stopped container -> both go
    image_a = scene.image("app")
    image_b = scene.image("app")  # retags: A is now dangling
    stopped = scene.containers.run(["true"], image=image_a)
    wait_exited(stopped)
    # C: dangling but used by a running container -> stays
    image_c = scene.image("worker")
    running = scene.containers.run(["sleep", "300"], image=image_c)
    scene.image("worker")
    # E: dangling and unused -> goes
    image_e = scene.image("cron")
    scene.image("cron")
    # an operator stopped this one on purpose -> stays
    held = scene.containers.run(["sleep", "300"], image=image_b)
    held.stop(timeout=1)
    wait_exited(held)
    store = Store(tmp_path / "state.db")
    store.record_operator_stop(held.name, held.id or "", "stop")
    context = ActionContext(resources=Resources(), operator_stops=store.operator_stops)
    params = PruneParams.model_validate({"stopped_containers_older_than": "0s", "build_cache": False,
                                         "only_labels": {LABEL: uid}})
    removing: list[str] = []
    context.expect_events = lambda name, seconds: removing.append(name)

    try:
        plan, outcome = run(Prune(params, context))
    finally:
        store.close()

    assert [c["name"] for c in plan.data["containers"]] == [stopped.name]
    assert sorted(i["id"] for i in plan.data["images"]) == sorted([image_a, image_e])
    kept = {k["what"]: k["reason"] for k in plan.data["kept"]}
    assert kept[f"container {held.name}"] == "stopped by an operator: kept as they left it"
    assert kept[f"image {image_c[7:19]}"] == f"used by container {running.name}"
    assert plan.data["bytes_to_free"] >= 2 * 200_000  # two unique 200 kB layers, plus the container's
    assert f"remove stopped container {stopped.name} (exited " in plan.steps[0]
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert outcome.data["bytes_freed"] == plan.data["bytes_to_free"]
    assert removing == [stopped.name]

    assert not exists(client, "container", stopped.id or "")
    assert not exists(client, "image", image_a)
    assert not exists(client, "image", image_e)
    assert exists(client, "image", image_b)
    assert exists(client, "image", image_c)
    assert exists(client, "container", held.id or "")
    running.reload()
    assert running.status == "running"

    again, _ = run(Prune(params, ActionContext(resources=Resources(), operator_stops=lambda: {
        held.name: {"id": held.id, "event": "stop", "at": 0.0}})))
    assert not again.changes
    assert again.summary.startswith("nothing to do for check disk: nothing to remove (kept ")


def test_containers_are_kept_unless_asked_for_and_young_ones_are_kept(scene: Scene) -> None:
    image = scene.image("app")
    stopped = scene.containers.run(["true"], image=image)
    wait_exited(stopped)
    only = {"only_labels": {LABEL: scene.uid}, "build_cache": False}
    plan, _ = run(Prune(PruneParams.model_validate(only), ActionContext(resources=Resources())))
    assert not plan.changes  # default: no containers, and the image is tagged
    plan, _ = run(Prune(PruneParams.model_validate({**only, "stopped_containers_older_than": "1h"}),
                        ActionContext(resources=Resources())))
    assert not plan.changes
    assert exists(scene.client, "container", stopped.id or "")


def test_build_cache_estimate_is_in_the_plan(docker_client: docker.DockerClient) -> None:
    """Read-only: the plan shows build cache only when some is unused; never applied here."""
    action = Prune(PruneParams(dangling_images=False), ActionContext(resources=Resources()))

    async def go() -> tuple[dict[str, Any], Plan]:
        try:
            snapshot = await action.inspect(Target(check="disk"))
            return snapshot, action.plan(Target(check="disk"), snapshot)
        finally:
            await action.context.resources.close()

    snapshot, plan = asyncio.run(go())
    unused = sum(b["size"] for b in snapshot["build_cache"] if not b["in_use"] and not b["shared"])
    if snapshot["build_cache"] and unused:
        assert plan.data["build_cache_bytes"] == unused
    else:
        assert not plan.changes
