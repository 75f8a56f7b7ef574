"""Docker fixtures: the engine, the local busybox test image, and throwaway containers.

Rules every Docker test follows:

* Tests reach a container **only through a port published on 127.0.0.1**:
  ``containers.run(..., ports={"80/tcp": ("127.0.0.1", None)})`` then
  ``published_port(container, "80/tcp")``. Never use a container's bridge address
  (172.17.x.x): no test traffic may leave the loopback range.
* Every container a test makes carries the label ``paramedic-test=1``; the ``containers``
  factory removes (force) what it made at teardown, and the first use of ``docker_client``
  in a session removes leftovers of an earlier, killed run.
* The only image is ``paramedic-test/busybox:latest`` (see ``tests.support.images``): it has
  ``sh``, ``httpd`` (``httpd -f -p 80 -h /www`` serves ``/www/index.html``), ``sleep``,
  ``nc``, ``wget`` and the other busybox applets. Nothing is pulled.

The engine is started by ``scripts/setup-test-env``; without it the tests are skipped on a
developer's machine and fail under ``CI=true`` (``server_missing``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from tests.support import images
from tests.support.processes import pid_alive
from tests.support.servers import server_missing
from tests.support.waiting import wait_for_http, wait_for_tcp

__all__ = ["TEST_IMAGE", "ContainerFactory", "published_port", "wait_for_http", "wait_for_tcp"]

TEST_LABEL = "paramedic-test"
OWNER_LABEL = "paramedic-test.pid"  # the pytest process that made the container
TEST_IMAGE = images.TEST_IMAGE


def _remove_leftovers(client: docker.DockerClient) -> None:
    """Remove containers labelled ``paramedic-test=1`` left behind by an earlier run.

    A container whose ``paramedic-test.pid`` names a live process belongs to a test session
    running right now (another developer's pytest on this machine) and is left alone.
    """
    try:
        leftovers = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"})
    except NotFound:  # another session removed one while Docker listed them: try once more
        leftovers = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}, ignore_removed=True)
    for container in leftovers:
        owner = container.labels.get(OWNER_LABEL, "")
        if owner.isdigit() and int(owner) != os.getpid() and pid_alive(int(owner)):
            continue
        _force_remove(container)


def _force_remove(container: Container) -> None:
    try:
        container.remove(force=True, v=True)
    except NotFound:
        pass
    except APIError as error:  # "removal already in progress" from auto_remove
        if error.status_code != 409:
            raise


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the local engine (``docker.from_env()``), pinged once per session."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except DockerException:
        server_missing("Docker engine")
        raise  # unreachable: server_missing skips or fails
    try:
        _remove_leftovers(client)
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """The name of the local busybox test image, built (``docker import``) if missing."""
    try:
        docker_client.images.get(TEST_IMAGE)
    except ImageNotFound:
        images.build_image(TEST_IMAGE)
        docker_client.images.get(TEST_IMAGE)
    return TEST_IMAGE


class ContainerFactory:
    """Starts containers for one test and removes every one of them afterwards.

    ``run(**kwargs)`` passes its arguments to ``docker_client.containers.run`` with
    ``image=<busybox test image>`` and ``detach=True`` by default and the labels
    ``paramedic-test=1`` and ``paramedic-test.pid=<this pytest's pid>`` always added. Publish ports on 127.0.0.1 only:
    ``ports={"80/tcp": ("127.0.0.1", None)}`` (a free host port is chosen by Docker).
    """

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.created: list[Container] = []

    def run(self, command: str | list[str] | None = None, **kwargs: Any) -> Container:
        """Start a container (detached) and return it; see the class docstring."""
        image = kwargs.pop("image", self.image)
        labels = {TEST_LABEL: "1", OWNER_LABEL: str(os.getpid())}
        labels.update(kwargs.pop("labels", None) or {})
        kwargs.setdefault("detach", True)
        container: Container = self.client.containers.run(image, command, labels=labels, **kwargs)
        self.created.append(container)
        return container

    def httpd(self, body: str = "ok\n", **kwargs: Any) -> Container:
        """A container serving ``body`` as ``/index.html`` with busybox httpd on port 80,
        published on 127.0.0.1 (a random host port: see ``published_port``)."""
        kwargs.setdefault("ports", {"80/tcp": ("127.0.0.1", None)})
        kwargs.setdefault("environment", {})["BODY"] = body
        script = 'printf %s "$BODY" > /www/index.html && exec httpd -f -p 80 -h /www'
        return self.run(["sh", "-c", script], **kwargs)

    def cleanup(self) -> None:
        """Force-remove every container this factory made (and their anonymous volumes)."""
        while self.created:
            _force_remove(self.created.pop())


@pytest.fixture
def containers(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[ContainerFactory]:
    """A ``ContainerFactory``: ``containers.run(...)``; all removed at teardown."""
    factory = ContainerFactory(docker_client, busybox_image)
    try:
        yield factory
    finally:
        factory.cleanup()


def published_port(container: Container, port: str = "80/tcp", timeout: float = 10.0) -> int:
    """The host port that ``port`` of ``container`` is published on, on 127.0.0.1.

    Reloads the container until the binding shows (it does once the container started).
    """
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(port)
        for binding in bindings or []:
            if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
                return int(binding["HostPort"])
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{container.name}: {port} is not published on 127.0.0.1 "
                f"(bindings: {bindings!r}, status {container.status})"
            )
        time.sleep(0.05)
