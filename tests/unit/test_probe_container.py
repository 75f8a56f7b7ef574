"""Unit tests for the ``container`` probe: spec validation, selection, shaping, error mapping.

No Docker engine here: the pure functions get inspect data shaped like ``container.attrs``;
the real engine is exercised in tests/integration/test_probe_container.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import urllib3
from docker.errors import APIError, DockerException
from pydantic import ValidationError

from agent.config.model import parse_config
from agent.kernel.conditions import evaluate
from agent.kernel.errors import ConfigError, DependencyUnavailableError
from checks.container import (
    ContainerSpec,
    DockerHandle,
    container_observation,
    parse_docker_time,
    summarize,
    unavailable,
)

NOW = datetime(2024, 11, 27, 12, 0, 0, tzinfo=UTC)


def spec(**fields: Any) -> ContainerSpec:
    return ContainerSpec.model_validate({"name": "c", "type": "container", **fields})


def attrs(
    name: str = "web-1",
    status: str = "running",
    health: str | None = None,
    started: str = "2024-11-27T11:59:00.123456789Z",
    **extra: Any,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Status": status, "Running": status == "running", "ExitCode": extra.pop("exit_code", 0),
        "OOMKilled": extra.pop("oom", False), "StartedAt": started,
    }
    if health is not None:
        state["Health"] = {"Status": health, "FailingStreak": 0, "Log": []}
    return {
        "Id": "0123456789abcdef" * 4, "Name": f"/{name}", "State": state,
        "RestartCount": extra.pop("restarts", 0),
        "Config": {"Image": extra.pop("image", "app:1.2")}, "Image": "sha256:feed", **extra,
    }


def check(s: ContainerSpec, observations: dict[str, Any]) -> tuple[int, str]:
    code, _, message = evaluate(s.effective_conditions(), observations)
    return code, message


# --------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({}, "exactly one of container, id, compose, labels (found: none)"),
        ({"container": "a", "id": "ab"}, "(found: container, id)"),
        ({"container": "-bad"}, "should match pattern"),
        ({"container": "a b"}, "should match pattern"),
        ({"id": "XYZ"}, "should match pattern"),
        ({"labels": {}}, "at least one non-empty key"),
        ({"compose": {"project": "p"}}, "service"),
        ({"container": "a", "replicas": 2}, "replicas applies only to compose or labels"),
        ({"labels": {"a": "b"}, "replicas": 0}, "greater than or equal to 1"),
        ({"container": "a", "docker_host": "/var/run/docker.sock"}, "must start with unix://"),
        ({"container": "a", "image": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_spec_rejects(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=None) as info:
        spec(**fields)
    assert needle in str(info.value)


def test_yaml_config_validates_through_the_registry() -> None:
    config = parse_config(
        """
checks:
  - name: lab-app
    type: container
    container: counterfactual-lab-prod
  - name: lab-workers
    type: container
    compose: {project: lab, service: worker}
    replicas: 3
    docker_host: unix:///var/run/docker.sock
    conditions: ["replicas_healthy >= 2", "containers[0].restart_count < 5"]
"""
    )
    single, group = config.checks
    assert isinstance(single, ContainerSpec)
    assert isinstance(group, ContainerSpec)
    assert single.target() == "container counterfactual-lab-prod"
    assert group.target() == "compose lab/worker via unix:///var/run/docker.sock"
    assert group.replicas == 3


def test_yaml_errors_carry_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("checks:\n  - {name: x, type: container, container: a, compose: {project: p, service: s}}\n")
    assert "checks[0]" in str(info.value)
    assert "exactly one of" in str(info.value)


def test_targets_describe_the_selector_without_secrets() -> None:
    assert spec(id="0123abcd").target() == "container id 0123abcd"
    assert spec(labels={"tier": "web", "app": "lab"}).target() == "containers app=lab,tier=web"
    remote = spec(container="a", docker_host="tcp://ops:hunter2@127.0.0.1:2375")
    assert remote.target() == "container a via tcp://ops:***@127.0.0.1:2375"
    assert "hunter2" not in remote.target()


def test_selector_wording_for_missing_messages() -> None:
    assert spec(container="counterfactual-lab-prod").selector() == 'named "counterfactual-lab-prod"'
    assert spec(id="abc").selector() == 'with id prefix "abc"'
    assert spec(compose={"project": "p", "service": "s"}).selector() == 'of compose service "p/s"'
    assert spec(labels={"b": "2", "a": "1"}).selector() == "labelled a=1,b=2"


def test_default_conditions_depend_on_the_selector_kind() -> None:
    single = [c.expr for c in spec(container="a").effective_conditions()]
    group = [c.expr for c in spec(labels={"a": "b"}).effective_conditions()]
    own = [c.expr for c in spec(container="a", conditions=["restart_count < 3"]).effective_conditions()]
    assert single == ['state == "running"', 'health != "unhealthy"']
    assert group == ["replicas_running >= replicas_expected", "replicas_healthy >= replicas_expected"]
    assert own == ["restart_count < 3"]


def test_filters_and_exact_matching() -> None:
    by_name = spec(container="web")
    assert by_name.list_filters() == {"name": "web"}
    assert by_name.matches({"Names": ["/web"]})
    assert not by_name.matches({"Names": ["/web-2"]})  # Docker's name filter is a substring
    by_id = spec(id="0123")
    assert by_id.list_filters() == {"id": "0123"}
    assert by_id.matches({"Id": "0123ff"})
    assert not by_id.matches({"Id": "ff0123"})
    compose = spec(compose={"project": "lab", "service": "api"})
    assert compose.list_filters() == {
        "label": ["com.docker.compose.project=lab", "com.docker.compose.service=api"]
    }
    labels = {"com.docker.compose.project": "lab", "com.docker.compose.service": "api", "x": "1"}
    assert compose.matches({"Labels": labels})
    assert not compose.matches({"Labels": {**labels, "com.docker.compose.service": "apiv2"}})
    assert spec(labels={"x": "1"}).list_filters() == {"label": ["x=1"]}
    assert not spec(labels={"x": "1", "y": "2"}).matches({"Labels": {"x": "1"}})


# --------------------------------------------------------------------------- shaping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-11-27T11:59:00.123456789Z", datetime(2024, 11, 27, 11, 59, 0, 123456, tzinfo=UTC)),
        ("2024-11-27T11:59:00Z", datetime(2024, 11, 27, 11, 59, 0, tzinfo=UTC)),
        ("2024-11-27T12:59:00.5+01:00", datetime(2024, 11, 27, 11, 59, 0, 500000, tzinfo=UTC)),
        ("2024-11-27T11:59:00.1234567", datetime(2024, 11, 27, 11, 59, 0, 123456, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_docker_time(text: object, expected: datetime | None) -> None:
    assert parse_docker_time(text) == expected


def test_observation_of_a_running_healthy_container() -> None:
    obs = container_observation(attrs(health="healthy", restarts=2), NOW)
    assert obs == {
        "name": "web-1", "id": "0123456789ab", "state": "running", "health": "healthy",
        "restart_count": 2, "exit_code": 0, "oom_killed": False, "uptime_s": 59.877,
        "image": "app:1.2", "image_id": "sha256:feed", "started_at": "2024-11-27T11:59:00.123456Z",
    }


def test_observation_of_an_exited_container() -> None:
    obs = container_observation(attrs(status="exited", exit_code=137, oom=True, image=""), NOW)
    assert obs["state"] == "exited"
    assert obs["health"] == "none"
    assert obs["exit_code"] == 137
    assert obs["oom_killed"] is True
    assert obs["uptime_s"] is None
    assert obs["image"] == "sha256:feed"  # no tag recorded: the image id


def test_observation_of_a_container_that_never_started() -> None:
    obs = container_observation(attrs(status="created", started="0001-01-01T00:00:00Z"), NOW)
    assert obs["started_at"] is None
    assert obs["uptime_s"] is None


def test_single_selection_puts_the_container_at_top_level_and_passes() -> None:
    s = spec(container="web-1")
    obs = summarize(s, [container_observation(attrs(), NOW)])
    assert obs["state"] == "running"
    assert obs["name"] == "web-1"
    assert (obs["containers_found"], obs["replicas_running"], obs["replicas_expected"]) == (1, 1, 1)
    assert check(s, obs) == (0, "all conditions passed")


def test_single_unhealthy_container_fails_with_a_readable_message() -> None:
    s = spec(container="web-1")
    obs = summarize(s, [container_observation(attrs(health="unhealthy"), NOW)])
    assert obs["replicas_healthy"] == 0
    assert check(s, obs) == (2, "health != \"unhealthy\" failed (actual: 'unhealthy')")


def test_group_counts_running_and_healthy_replicas() -> None:
    s = spec(compose={"project": "lab", "service": "api"})
    found = [
        container_observation(attrs("api-1", health="healthy"), NOW),
        container_observation(attrs("api-2", health="starting"), NOW),
        container_observation(attrs("api-3", status="exited", exit_code=1), NOW),
    ]
    obs = summarize(s, found)
    assert "state" not in obs  # no top-level container keys for a group
    assert [c["name"] for c in obs["containers"]] == ["api-1", "api-2", "api-3"]
    assert (obs["containers_found"], obs["replicas_running"], obs["replicas_healthy"]) == (3, 2, 1)
    assert obs["replicas_expected"] == 3  # default: every container found should run
    code, message = check(s, obs)
    assert code == 2
    assert message.startswith("replicas_running >= replicas_expected failed (actual: {")
    assert "'replicas_running': 2" in message


def test_group_with_explicit_replicas() -> None:
    s = spec(labels={"app": "lab"}, replicas=2)
    obs = summarize(s, [container_observation(attrs(f"lab-{i}"), NOW) for i in range(2)])
    assert obs["replicas_expected"] == 2
    assert check(s, obs)[0] == 0
    short = summarize(spec(labels={"app": "lab"}, replicas=3), obs["containers"])
    assert check(spec(labels={"app": "lab"}, replicas=3), short)[0] == 2


# --------------------------------------------------------------------------- errors


def _wrapped(os_error: OSError) -> DockerException:
    """The shape docker-py raises when the socket fails while fetching the API version."""
    inner = requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", os_error))
    try:
        raise DockerException(f"Error while fetching server API version: {inner}") from inner
    except DockerException as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_wrapped(FileNotFoundError(2, "No such file or directory")),
         "cannot reach Docker at unix:///x.sock: no such socket"),
        (_wrapped(PermissionError(13, "Permission denied")),
         "cannot reach Docker at unix:///x.sock: permission denied"),
        (_wrapped(ConnectionRefusedError(111, "Connection refused")),
         "cannot reach Docker at unix:///x.sock: connection refused"),
        (_wrapped(ConnectionResetError(104, "Connection reset by peer")),
         "cannot reach Docker at unix:///x.sock: connection reset by peer"),
        (requests.ReadTimeout("read timed out"), "Docker at unix:///x.sock did not answer in time (timeout 1s)"),
        (APIError("500 Server Error", explanation="driver failed"),
         "Docker API error at unix:///x.sock: driver failed"),
        (DockerException("odd"), "cannot reach Docker at unix:///x.sock: DockerException"),
    ],
)
def test_docker_failures_become_unknown_with_a_short_message(error: Exception, expected: str) -> None:
    mapped = unavailable(error, "unix:///x.sock", 1.0)
    assert isinstance(mapped, DependencyUnavailableError)
    assert str(mapped) == expected


def test_urllib3_max_retry_reason_is_followed() -> None:
    reason = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    reason.__cause__ = ConnectionRefusedError(111, "Connection refused")
    error = requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v1.41/version", reason))  # type: ignore[arg-type]
    assert "connection refused" in str(unavailable(error, "tcp://127.0.0.1:1", 1))


class _FailingHandle(DockerHandle):
    """Connection always fails, slowly, and counts attempts."""

    def __init__(self) -> None:
        super().__init__("unix:///x.sock", 2.0)
        self.attempts = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def _connect(self) -> Any:
        self.attempts += 1
        self.entered.set()
        self.release.wait(2)
        raise DependencyUnavailableError("cannot reach Docker at unix:///x.sock: no such socket")


def test_threads_waiting_on_a_failing_connect_share_its_error() -> None:
    handle = _FailingHandle()
    errors: list[BaseException] = []

    def use() -> None:
        try:
            handle.get()
        except DependencyUnavailableError as exc:
            errors.append(exc)

    first = threading.Thread(target=use)
    first.start()
    assert handle.entered.wait(2)
    others = [threading.Thread(target=use) for _ in range(3)]
    for t in others:
        t.start()
    handle.release.set()
    for t in (first, *others):
        t.join(5)
    assert handle.attempts == 1
    assert len(errors) == 4
    with pytest.raises(DependencyUnavailableError):
        handle.get()  # a later run tries again
    assert handle.attempts == 2


def test_importing_the_module_does_not_import_docker() -> None:
    code = (
        "import sys, checks.container, agent.registry\n"
        "agent.registry.spec_model('container')\n"
        "heavy = [m for m in ('docker', 'requests', 'urllib3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
