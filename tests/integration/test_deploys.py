"""Deploy tracking: ``paramedic check`` records each watched container's image, so a
rollback knows the previous one. Real Docker, real store, the installed command."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.core.deploys import image_records
from agent.kernel.results import Result, Status
from agent.store.sqlite import Store
from checks.container import ContainerSpec

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(120)]

PARAMEDIC = Path(sys.executable).with_name("paramedic")


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PARAMEDIC), "check", "-c", str(config)], capture_output=True, text=True, timeout=60,
                          check=False)


def test_check_records_each_image_change_of_a_watched_container(
    tmp_path: Path, containers: Any, docker_client: Any, busybox_image: str
) -> None:
    name = f"paramedic-deploy-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"checks": [{"name": "app", "type": "container", "container": name}]}))
    first = containers.run(["sleep", "300"], name=name)
    assert _check(config).returncode == 0

    # "deploy" a new image: the same container name from a committed copy of the first
    second_image = first.commit(repository="paramedic-test/deploy", tag=uuid.uuid4().hex[:8])
    try:
        first.remove(force=True)
        containers.run(["sleep", "300"], name=name, image=second_image.id)
        assert _check(config).returncode == 0
        assert _check(config).returncode == 0  # no change: not a new deploy

        store = Store(tmp_path / "paramedic.db")
        history = store.image_history(f"container {name}")
        store.close()
        assert [h["image_id"] for h in history] == [second_image.id, docker_client.images.get(busybox_image).id]
    finally:
        containers.cleanup()
        docker_client.images.remove(second_image.id, force=True)


def test_only_running_containers_from_probe_results_are_recorded() -> None:
    spec = ContainerSpec.model_validate({"name": "app", "type": "container", "container": "web"})
    containers = [
        {"name": "web", "state": "running", "image": "app:2", "image_id": "sha256:b"},
        {"name": "web", "state": "exited", "image": "app:1", "image_id": "sha256:a"},
    ]
    probe = Result("app", "container", Status.OK, "", 1.0, {"containers": containers})
    event = Result("app", "container", Status.CRITICAL, "", 0.0, {"source": "docker-event"})
    assert image_records({"app": spec}, [probe]) == [("container web", "app:2", "sha256:b")]
    assert image_records({"app": spec}, [probe, event]) == [("container web", "app:2", "sha256:b")]
    assert image_records({}, [probe]) == []
