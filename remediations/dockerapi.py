"""Docker plumbing shared by the Docker actions: one client per daemon, target lookup.

Every call here is synchronous (the docker SDK is); actions run them in
``asyncio.to_thread``. Errors from Docker become :class:`DockerActionError` with a short
message, which actions turn into a failed :class:`~remediations.base.Outcome` or a
refusing plan. The client is shared through ``Resources`` under the same key scheme as
the container probe's, so the agent holds one connection pool per Docker daemon.
"""

from __future__ import annotations

import os
from typing import Any

from agent.kernel.errors import DependencyUnavailableError
from agent.kernel.models import Resources
from remediations.base import Target

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_NUMBER = "com.docker.compose.container-number"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT = 60


class DockerActionError(Exception):
    """Docker refused or failed an action's call; the message is safe to show."""


def docker_client(resources: Resources, docker_host: str | None, timeout: int = API_TIMEOUT) -> Any:
    """The shared ``docker.DockerClient`` for ``docker_host`` (``DOCKER_HOST`` / default socket)."""
    url = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    def connect() -> Any:
        import docker
        from docker.errors import DockerException

        try:
            return docker.DockerClient(base_url=url, timeout=timeout)
        except DockerException as exc:
            raise DependencyUnavailableError(f"Docker at {url} is unreachable: {exc}") from None

    return resources.shared(f"docker-action:{url}:{timeout}", connect, lambda c: c.close())


def find_containers(client: Any, target: Target, all_states: bool = True) -> list[Any]:
    """Containers selected by ``target``, sorted by compose container number then name.

    An empty list means nothing matched; callers refuse rather than act on "everything".
    """
    from docker.errors import DockerException, NotFound

    try:
        if target.container or target.container_id:
            ref = target.container or target.container_id
            try:
                return [client.containers.get(ref)]
            except NotFound:
                return []
        labels: dict[str, str] = {}
        if target.compose_project and target.compose_service:
            labels = {COMPOSE_PROJECT: target.compose_project, COMPOSE_SERVICE: target.compose_service}
        elif target.labels:
            labels = dict(target.labels)
        if not labels:
            return []
        found = client.containers.list(all=all_states, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
    except DockerException as exc:
        raise DockerActionError(f"Docker error while looking up {target.describe()}: {exc}") from None
    return sorted(found, key=lambda c: (_number(c), c.name))


def _number(container: Any) -> int:
    labels = (container.attrs.get("Config") or {}).get("Labels") or {}
    try:
        return int(labels.get(COMPOSE_NUMBER, "0"))
    except ValueError:
        return 0
