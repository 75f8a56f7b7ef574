"""``recreate`` plans as pure functions over recorded inspect data (no Docker here)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Target
from remediations.recreate import Recreate, RecreateParams
from tests.support.rich_container import FIXTURES

BEFORE: dict[str, Any] = json.loads((FIXTURES / "rich_before.json").read_text())
IMAGE: dict[str, Any] = json.loads((FIXTURES / "rich_image.json").read_text())
NAME = BEFORE["Name"].lstrip("/")


def item(**state: Any) -> dict[str, Any]:
    attrs = copy.deepcopy(BEFORE)
    attrs["State"].update(state)
    return {"attrs": attrs, "image_config": IMAGE["Config"]}


def replica(name: str, number: int, **state: Any) -> dict[str, Any]:
    entry = item(**state)
    attrs = entry["attrs"]
    attrs["Name"] = f"/{name}"
    attrs["Id"] = f"{number:02d}" * 32
    attrs["Config"]["Labels"]["com.docker.compose.container-number"] = str(number)
    return entry


REF = BEFORE["Config"]["Image"]


def snapshot(*items: dict[str, Any], stops: dict[str, Any] | None = None,
             refs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"docker_host": None, "containers": list(items), "operator_stops": stops or {},
            "image_refs": {REF: BEFORE["Image"]} if refs is None else refs}


def plan_for(target: Target, snap: dict[str, Any], **params: Any) -> Any:
    return Recreate(RecreateParams(**params)).plan(target, snap)


SINGLE = Target(container=NAME)
GROUP = Target(compose_project="shop", compose_service="web")


def test_single_container_plan_holds_the_create_spec_and_the_old_name() -> None:
    plan = plan_for(SINGLE, snapshot(item()), stop_timeout=5)
    assert plan.changes
    assert plan.refused is None
    [entry] = plan.data["containers"]
    assert entry["id"] == BEFORE["Id"]
    assert entry["name"] == NAME
    assert entry["old_name"] == f"{NAME}-paramedic-old-{BEFORE['Id'][:12]}"
    assert entry["was_running"] is True
    assert entry["spec"]["name"] == NAME
    assert entry["spec"]["body"]["Image"] == "paramedic-test/busybox:latest"
    assert entry["clone"] == {"image": REF, "labels": {}}
    assert entry["spec"]["body"]["Env"] == ["GREETING=***", "EMPTY=***"]  # no environment values in plans
    assert plan.data["stop_timeout"] == 5
    assert plan.steps[0] == f"rename {NAME} to {entry['old_name']}"
    assert "stop the old container (SIGINT, SIGKILL after 5s)" in plan.steps
    json.dumps(plan.as_dict())


def test_a_tag_re_pointed_since_is_not_deployed_by_a_recreate() -> None:
    plan = plan_for(SINGLE, snapshot(item(), refs={REF: "sha256:" + "e" * 64}))
    assert plan.data["containers"][0]["spec"]["body"]["Image"] == BEFORE["Image"]


def test_a_stopped_container_is_not_stopped_again() -> None:
    plan = plan_for(SINGLE, snapshot(item(Running=False, Status="exited", ExitCode=137)))
    assert plan.changes
    assert plan.data["containers"][0]["was_running"] is False
    assert not any(s.startswith("stop the old") for s in plan.steps)


def test_single_container_is_recreated_even_when_it_looks_running() -> None:
    """A wedged container is "running": the triggering check knows better."""
    assert plan_for(SINGLE, snapshot(item())).changes


@pytest.mark.parametrize(
    ("target", "snap", "reason"),
    [
        (Target(check="c"), snapshot(), "no target"),
        (Target(swarm_service="web"), snapshot(), "Swarm services are not supported"),
        (SINGLE, {"error": "Docker at unix:///x is unreachable"}, "cannot inspect it: Docker at unix:///x"),
        (SINGLE, snapshot(), "no container matched"),
        (SINGLE, snapshot(item(Status="paused", Paused=True)), "is paused"),
        (SINGLE, snapshot(item(Status="removing")), "is removing"),
    ],
)
def test_refusals(target: Target, snap: dict[str, Any], reason: str) -> None:
    plan = plan_for(target, snap)
    assert plan.refused is not None
    assert reason in plan.refused
    assert not plan.changes


def test_operator_stop_wins() -> None:
    stops = {NAME: {"id": BEFORE["Id"], "event": "stop", "at": 1_700_000_000.0}}
    plan = plan_for(SINGLE, snapshot(item(Running=False, Status="exited"), stops=stops))
    assert plan.refused is not None
    assert "stopped by an operator at 2023-11-14 22:13:20Z (docker stop)" in plan.refused


def test_auto_remove_container_is_refused() -> None:
    entry = item()
    entry["attrs"]["HostConfig"]["AutoRemove"] = True
    plan = plan_for(SINGLE, snapshot(entry))
    assert plan.refused is not None
    assert "--rm" in plan.refused


def test_group_recreates_only_failing_replicas() -> None:
    healthy = replica("shop_web_1", 1)
    broken = replica("shop_web_2", 2, Running=False, Status="exited", ExitCode=1)
    unhealthy = replica("shop_web_3", 3, Health={"Status": "unhealthy"})
    plan = plan_for(GROUP, snapshot(healthy, broken, unhealthy))
    assert [c["name"] for c in plan.data["containers"]] == ["shop_web_2", "shop_web_3"]
    assert "left alone: shop_web_1" in plan.summary


def test_group_with_nothing_failing_has_nothing_to_do() -> None:
    plan = plan_for(GROUP, snapshot(replica("shop_web_1", 1), replica("shop_web_2", 2)))
    assert not plan.changes
    assert plan.refused is None
    assert "no replica is failing" in plan.summary


def test_params_are_strict() -> None:
    with pytest.raises(ValidationError):
        RecreateParams.model_validate({"stop_timeout": "soon"})
    with pytest.raises(ValidationError):
        RecreateParams.model_validate({"bogus": 1})
    assert RecreateParams.model_validate({"stop_timeout": "30s"}).stop_timeout == 30.0
