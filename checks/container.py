"""``container`` probe: state, health, restarts and uptime of Docker containers.

A check selects containers by exactly one of ``container`` (exact name), ``id`` (prefix),
``compose`` (``{project, service}``, matched on the ``com.docker.compose.*`` labels) or
``labels`` (all must match). ``container`` and ``id`` are *single* selections; ``compose``
and ``labels`` are *groups* (replicas).

Observations: ``containers`` (one entry per container looked at: ``name``, ``id`` (12
chars), ``state``, ``health`` (``none``/``starting``/``healthy``/``unhealthy``),
``restart_count``, ``exit_code``, ``oom_killed``, ``uptime_s`` (null unless running),
``image``, ``image_id``, ``started_at``), the summaries ``containers_found``, ``replicas_running``,
``replicas_healthy`` (running and health ``none`` or ``healthy``) and
``replicas_expected``, and for a single selection the container's own keys at top level
(``state``, ``health``, ...) so that conditions stay short.

Status mapping: no container matches -> ``TargetError`` (CRITICAL, "no container named
..."); the Docker API is unreachable, refuses us, errors or does not answer in time ->
``DependencyUnavailableError`` (UNKNOWN: the agent cannot tell, so nothing is remediated);
an ``id`` prefix matching several containers -> ``AgentSideError`` (UNKNOWN, a config
problem).

Why the Docker SDK runs the way it does: it is synchronous, so each run executes in
``asyncio.to_thread``. The probe gives Docker 90% of the check's timeout, both as the
client's socket timeout and as a total budget, so a hung Docker daemon surfaces as UNKNOWN
("did not answer in time") before the engine's hard timeout would call it a CRITICAL
target failure; a thread left behind by a cancelled run ends within one socket timeout
(it also checks a stop flag between API calls). The client is shared per
``(docker_host, timeout)`` through ``Resources.shared`` and connects lazily inside the
worker thread, because building a ``DockerClient`` already talks to the daemon (API
version negotiation).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from agent.kernel.conditions import CompiledCondition, compile_condition
from agent.kernel.durations import format_duration
from agent.kernel.errors import AgentSideError, DependencyUnavailableError, TargetError
from agent.kernel.models import Frozen
from agent.kernel.redact import redact_url
from agent.kernel.targets import Target
from checks.base import CheckSpec, Probe

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
SINGLE_CONDITIONS = ('state == "running"', 'health != "unhealthy"')
GROUP_CONDITIONS = ("replicas_running >= replicas_expected", "replicas_healthy >= replicas_expected")
HEALTHS = ("none", "starting", "healthy", "unhealthy")
#: Fraction of the check's timeout the probe gives Docker, per API call and in total (see above).
API_TIMEOUT_RATIO = 0.9
_HOST_SCHEMES = ("unix://", "tcp://", "http://", "https://")
_NEVER = datetime(1, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"(\.\d{6})\d+")


class ComposeSelector(Frozen):
    """The containers of one docker-compose service."""

    project: str = Field(min_length=1)
    service: str = Field(min_length=1)


class ContainerSpec(CheckSpec):
    """Which containers to inspect (exactly one selector) and how many should run."""

    type: Literal["container"]
    container: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,64}$")
    compose: ComposeSelector | None = None
    labels: dict[str, str] | None = None
    docker_host: str | None = None
    replicas: int | None = Field(default=None, ge=1)

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (not value or any(not key for key in value)):
            raise ValueError("labels must hold at least one non-empty key")
        return value

    @field_validator("docker_host")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_HOST_SCHEMES):
            raise ValueError("must start with unix://, tcp://, http:// or https://")
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> ContainerSpec:
        chosen = [k for k in ("container", "id", "compose", "labels") if getattr(self, k) is not None]
        if len(chosen) != 1:
            found = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"set exactly one of container, id, compose, labels (found: {found})")
        if self.replicas is not None and self.single:
            raise ValueError("replicas applies only to compose or labels selections")
        return self

    @property
    def single(self) -> bool:
        """True for ``container``/``id`` selections: one container, its keys at top level."""
        return self.container is not None or self.id is not None

    def effective_conditions(self) -> tuple[CompiledCondition, ...]:
        """Configured conditions, else running-and-not-unhealthy (single) or replicas (group)."""
        if self.conditions:
            return super().effective_conditions()
        defaults = SINGLE_CONDITIONS if self.single else GROUP_CONDITIONS
        return tuple(compile_condition(c, self.severity) for c in defaults)

    def selector(self) -> str:
        """The selection in words, as used in messages: ``named "web"``, ``of compose ...``."""
        if self.container is not None:
            return f'named "{self.container}"'
        if self.id is not None:
            return f'with id prefix "{self.id}"'
        if self.compose is not None:
            return f'of compose service "{self.compose.project}/{self.compose.service}"'
        return f"labelled {_label_text(self.labels or {})}"

    def target(self) -> str:
        if self.container is not None:
            what = f"container {self.container}"
        elif self.id is not None:
            what = f"container id {self.id}"
        elif self.compose is not None:
            what = f"compose {self.compose.project}/{self.compose.service}"
        else:
            what = f"containers {_label_text(self.labels or {})}"
        return f"{what} via {show_host(self.docker_host)}" if self.docker_host else what

    # ------------------------------------------------------------------ the engine's hooks

    watches_docker_events: ClassVar[bool] = True

    def docker_target(self) -> Target:
        """The selection itself: what a Docker action acts on when its step names no target."""
        return Target(
            container=self.container, container_id=self.id,
            compose_project=self.compose.project if self.compose else None,
            compose_service=self.compose.service if self.compose else None,
            labels=self.labels, docker_host=self.docker_host,
        )

    def deployed_images(self, observations: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """``(image, image_id)`` of each running container of the ``containers`` observation."""
        found: list[tuple[str, str]] = []
        for container in observations.get("containers") or ():
            image_id = container.get("image_id") if isinstance(container, Mapping) else None
            if image_id and container.get("state") == "running":
                found.append((str(container.get("image") or image_id), str(image_id)))
        return tuple(found)

    def list_filters(self) -> dict[str, Any]:
        """Server-side filters for ``containers(all=True, filters=...)`` (a superset: the
        name filter is a substring regex, so :meth:`matches` re-checks client-side)."""
        if self.container is not None:
            return {"name": self.container}
        if self.id is not None:
            return {"id": self.id}
        return {"label": [f"{key}={value}" for key, value in sorted(self._wanted_labels().items())]}

    def matches(self, summary: Mapping[str, Any]) -> bool:
        """Whether one entry of the container list really is selected (exact checks)."""
        if self.container is not None:
            return f"/{self.container}" in (summary.get("Names") or ())
        if self.id is not None:
            return str(summary.get("Id", "")).startswith(self.id)
        labels = summary.get("Labels") or {}
        return all(labels.get(key) == value for key, value in self._wanted_labels().items())

    def selects(self, name: str, container_id: str, labels: Mapping[str, str]) -> bool:
        """Whether this check selects the container ``name`` (no leading ``/``) with the
        full ``container_id`` and ``labels``: what a Docker event says about its container."""
        if self.container is not None:
            return name == self.container
        if self.id is not None:
            return container_id.startswith(self.id)
        return all(labels.get(key) == value for key, value in self._wanted_labels().items())

    def _wanted_labels(self) -> dict[str, str]:
        if self.compose is not None:
            return {COMPOSE_PROJECT: self.compose.project, COMPOSE_SERVICE: self.compose.service}
        return dict(self.labels or {})


def show_host(url: str) -> str:
    """A Docker host for messages: socket paths as given, URLs with any secret masked
    (``redact_url`` alone would turn ``unix:///x.sock`` into ``unix:/x.sock``)."""
    return url if url.startswith("unix://") else redact_url(url)


def _label_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


# --------------------------------------------------------------------------- pure shaping


def parse_docker_time(text: object) -> datetime | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z`` or offset) as an aware datetime.

    ``None`` for a container that never started (``0001-01-01T00:00:00Z``) or garbage.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return None if parsed <= _NEVER else parsed.astimezone(UTC)


def container_observation(attrs: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """One container's entry in ``containers``, from its inspect data (``container.attrs``)."""
    state: Mapping[str, Any] = attrs.get("State") or {}
    status = str(state.get("Status") or "unknown")
    health = str((state.get("Health") or {}).get("Status") or "none")
    started = parse_docker_time(state.get("StartedAt"))
    running = status in ("running", "paused")
    uptime = round(max(0.0, (now - started).total_seconds()), 3) if running and started else None
    config: Mapping[str, Any] = attrs.get("Config") or {}
    return {
        "name": str(attrs.get("Name") or "").lstrip("/"),
        "id": str(attrs.get("Id") or "")[:12],
        "state": status,
        "health": health if health in HEALTHS else "none",
        "restart_count": int(attrs.get("RestartCount") or 0),
        "exit_code": int(state.get("ExitCode") or 0),
        "oom_killed": bool(state.get("OOMKilled")),
        "uptime_s": uptime,
        "image": str(config.get("Image") or attrs.get("Image") or ""),
        "image_id": str(attrs.get("Image") or ""),
        "started_at": started.isoformat().replace("+00:00", "Z") if started else None,
    }


def summarize(spec: ContainerSpec, containers: list[dict[str, Any]]) -> dict[str, Any]:
    """All observations for one run: the list, the replica counts, single-container keys."""
    running = [c for c in containers if c["state"] == "running"]
    expected = spec.replicas if spec.replicas is not None else (1 if spec.single else len(containers))
    out: dict[str, Any] = {
        "containers": containers,
        "containers_found": len(containers),
        "replicas_running": len(running),
        "replicas_healthy": sum(1 for c in running if c["health"] in ("none", "healthy")),
        "replicas_expected": expected,
    }
    if spec.single and len(containers) == 1:
        out.update(containers[0])
    return out


# --------------------------------------------------------------------------- docker I/O


class DockerHandle:
    """A Docker client shared by every container check with the same host and timeout.

    Creating the handle is free; the ``DockerClient`` is built on first :meth:`get`, inside
    the worker thread, because building it already asks the daemon for its API version.
    Its socket timeout is ``API_TIMEOUT_RATIO`` of the check's timeout. A failed
    connection is not cached, so the next run retries; threads that were already waiting
    while it failed get that same error instead of each paying another full timeout.
    """

    def __init__(self, base_url: str | None, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.api_timeout = round(timeout * API_TIMEOUT_RATIO, 3)
        self._client: Any = None
        self._lock = threading.Lock()
        self._failure: tuple[float, DependencyUnavailableError] | None = None

    @property
    def url(self) -> str:
        """The daemon address this handle talks to (``DOCKER_HOST`` or the default socket)."""
        return self.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    @property
    def where(self) -> str:
        """The daemon address for messages (secrets masked)."""
        return show_host(self.url)

    def get(self) -> Any:
        """The connected ``docker.DockerClient``; raises ``DependencyUnavailableError``."""
        asked = time.monotonic()
        if not self._lock.acquire(timeout=self.api_timeout):
            raise DependencyUnavailableError(f"Docker at {self.where} is busy connecting; try again")
        try:
            if self._client is None:
                if self._failure is not None and self._failure[0] >= asked:
                    raise self._failure[1]
                try:
                    self._client = self._connect()
                except DependencyUnavailableError as exc:
                    self._failure = (time.monotonic(), exc)
                    raise
            return self._client
        finally:
            self._lock.release()

    def _connect(self) -> Any:
        import docker
        from docker.errors import DockerException

        try:
            if self.base_url is None:
                return docker.from_env(timeout=self.api_timeout)
            return docker.DockerClient(base_url=self.base_url, timeout=self.api_timeout)
        except DockerException as exc:
            raise unavailable(exc, self.where, self.timeout) from None

    def preflight(self) -> None:
        """Connect to a ``unix://`` socket once ourselves and hang up.

        docker-py 7.x leaks the socket object when connecting to a Unix socket fails (it
        never closes it: docker/docker-py#3356), which Python reports as an unclosed-socket
        ``ResourceWarning`` on every failed run. Checking first, with a socket we close,
        keeps the common failures (no socket file, permission denied, refused) clean and
        gives a precise message. Costs one local connect per run.
        """
        url = self.url
        if not url.startswith("unix://"):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.api_timeout)
            try:
                sock.connect(url.removeprefix("unix://"))
            except OSError as exc:
                raise unavailable(exc, self.where, self.timeout) from None

    def close(self) -> None:
        """Close the client's connection pool (at shutdown)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _Stopped(Exception):
    """The awaiting coroutine gave up; the worker thread stops between API calls."""


def fetch(handle: DockerHandle, spec: ContainerSpec, stop: threading.Event) -> list[dict[str, Any]]:
    """List the selected containers and inspect each one (runs in a worker thread)."""
    import requests
    from docker.errors import DockerException, NotFound

    handle.preflight()
    client = handle.get()
    try:
        listed = client.api.containers(all=True, filters=spec.list_filters())
        chosen = [s for s in listed if spec.matches(s)]
        if spec.id is not None and len(chosen) > 1:
            names = ", ".join(sorted(_summary_name(s) for s in chosen))
            raise AgentSideError(f'id prefix "{spec.id}" matches {len(chosen)} containers ({names})')
        inspected: list[dict[str, Any]] = []
        for summary in chosen:
            if stop.is_set():
                raise _Stopped
            try:
                inspected.append(client.api.inspect_container(summary["Id"]))
            except NotFound:  # removed between list and inspect: it is gone
                continue
    except (DockerException, requests.RequestException, OSError) as exc:
        raise unavailable(exc, handle.where, handle.timeout) from None
    return inspected


def _summary_name(summary: Mapping[str, Any]) -> str:
    names = summary.get("Names") or [str(summary.get("Id", ""))[:12]]
    return str(names[0]).lstrip("/")


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and everything it wraps (cause, context, args, urllib3's ``reason``), breadth first."""
    seen: set[int] = set()
    queue = [exc]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        queue.extend(e for e in nested if isinstance(e, BaseException))


def too_slow(where: str, timeout: float) -> DependencyUnavailableError:
    """The error for a Docker daemon that accepts but does not answer in time."""
    return DependencyUnavailableError(f"Docker at {where} did not answer in time (timeout {format_duration(timeout)})")


def unavailable(exc: BaseException, where: str, timeout: float) -> DependencyUnavailableError:
    """A short UNKNOWN error for a Docker API failure, naming the likely cause.

    ``timeout`` is the check's timeout, quoted when the daemon was too slow.
    """
    import requests
    from docker.errors import APIError

    for cause in _causes(exc):
        if isinstance(cause, TimeoutError | requests.Timeout):
            return too_slow(where, timeout)
        if isinstance(cause, FileNotFoundError):
            return DependencyUnavailableError(f"cannot reach Docker at {where}: no such socket")
        if isinstance(cause, PermissionError):
            return DependencyUnavailableError(f"cannot reach Docker at {where}: permission denied")
        if isinstance(cause, ConnectionRefusedError):
            return DependencyUnavailableError(f"cannot reach Docker at {where}: connection refused")
        if isinstance(cause, APIError):
            detail = str(cause.explanation or cause)[:200]
            return DependencyUnavailableError(f"Docker API error at {where}: {detail}")
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return DependencyUnavailableError(f"cannot reach Docker at {where}: {cause.strerror.lower()}")
    return DependencyUnavailableError(f"cannot reach Docker at {where}: {type(exc).__name__}")


class ContainerProbe(Probe[ContainerSpec]):
    """Lists and inspects the selected containers; one shared Docker client per host."""

    spec_model = ContainerSpec
    lazy_imports = ("docker", "docker.errors", "requests")

    def _handle(self) -> DockerHandle:
        host, timeout = self.spec.docker_host, self.spec.timeout
        key = f"docker:{host or 'env'}:{timeout}"
        return self.resources.shared(key, lambda: DockerHandle(host, timeout), DockerHandle.close)

    async def observe(self) -> dict[str, Any]:
        handle = self._handle()
        stop = threading.Event()
        try:
            work = asyncio.to_thread(fetch, handle, self.spec, stop)
            inspected = await asyncio.wait_for(work, handle.api_timeout)
        except TimeoutError:
            raise too_slow(handle.where, self.spec.timeout) from None
        finally:
            stop.set()
        if not inspected:
            raise TargetError(f"no container {self.spec.selector()}")
        now = datetime.now(UTC)
        containers = sorted((container_observation(a, now) for a in inspected), key=lambda c: c["name"])
        return summarize(self.spec, containers)
