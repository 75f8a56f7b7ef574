"""``scale`` plans as pure functions over a recorded docker-compose v1 container.

``compose_web_1.json`` is ``shop_web_1`` of a compose v1 project (see
tests/support/rich_container.py); more replicas are derived from it by changing the
name, id and container number, as compose itself would have made them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Target
from remediations.scale import Scale, ScaleParams, service_of
from tests.support.rich_container import FIXTURES

WEB_1: dict[str, Any] = json.loads((FIXTURES / "compose_web_1.json").read_text())
IMAGE_ID = WEB_1["Image"]
REF = WEB_1["Config"]["Image"]
GROUP = Target(compose_project="shop", compose_service="web")


def replica(number: int, name: str | None = None, **state: Any) -> dict[str, Any]:
    attrs = copy.deepcopy(WEB_1)
    attrs["Name"] = f"/{name or f'shop_web_{number}'}"
    attrs["Id"] = f"{number:02x}" * 32
    for endpoint in attrs["NetworkSettings"]["Networks"].values():  # Docker's own short-id alias
        endpoint["Aliases"] = [attrs["Id"][:12] if a == WEB_1["Id"][:12] else a for a in endpoint["Aliases"]]
    attrs["Config"]["Labels"]["com.docker.compose.container-number"] = str(number)
    attrs["State"].update(state)
    return attrs


def snapshot(*containers: dict[str, Any], refs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"docker_host": None, "project": "shop", "service": "web", "containers": list(containers),
            "image_refs": {REF: IMAGE_ID} if refs is None else refs}


def plan_for(snap: dict[str, Any], target: Target = GROUP, **params: Any) -> Any:
    return Scale(ScaleParams(**params)).plan(target, snap)


def test_up_copies_the_highest_numbered_healthy_container_with_compose_v1_names() -> None:
    plan = plan_for(snapshot(replica(1), replica(2), replica(3, Running=False, Status="exited")), replicas=5)
    assert plan.summary == "scale shop/web from 3 to 5"
    assert plan.data["template"]["name"] == "shop_web_2"
    create = plan.data["create"]
    assert [c["name"] for c in create] == ["shop_web_4", "shop_web_5"]
    assert create[0]["clone"] == {"image": REF, "labels": {"com.docker.compose.container-number": "4"}}
    specs = [c["spec"] for c in create]
    assert specs[0]["body"]["Env"] == ["MODE=***"]  # plans never hold environment values
    labels = specs[0]["body"]["Labels"]
    assert labels["com.docker.compose.container-number"] == "4"
    assert labels["com.docker.compose.project"] == "shop"
    assert labels["com.docker.compose.service"] == "web"
    assert labels["com.docker.compose.oneoff"] == "False"
    assert specs[0]["body"]["Image"] == REF
    endpoint = specs[0]["body"]["NetworkingConfig"]["EndpointsConfig"]["shop_default"]
    assert sorted(endpoint["Aliases"]) == ["web", "www"]  # not the template's short id
    assert specs[0]["body"]["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert plan.steps[0] == f"create shop_web_4 like shop_web_2 (image {REF}) and start it"
    json.dumps(plan.as_dict())


def test_compose_v2_names_are_followed() -> None:
    plan = plan_for(snapshot(replica(1, "shop-web-1")), step=1)
    assert plan.data["create"][0]["name"] == "shop-web-2"


def test_names_outside_compose_schemes_refuse() -> None:
    plan = plan_for(snapshot(replica(1, "my-web")), step=1)
    assert plan.refused is not None
    assert "follow no compose naming" in plan.refused


def test_a_tag_that_moved_is_replaced_by_the_template_image_id() -> None:
    plan = plan_for(snapshot(replica(1), refs={REF: "sha256:" + "f" * 64}), step=1)
    assert plan.data["create"][0]["spec"]["body"]["Image"] == IMAGE_ID


def test_fixed_host_port_refuses_and_names_it() -> None:
    fixed = replica(1)
    fixed["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    plan = plan_for(snapshot(fixed), step=1)
    assert plan.refused == ("cannot add containers to shop/web: host port 127.0.0.1:8080->80/tcp is fixed "
                            "(only one container can publish it)")


def test_fixed_port_does_not_matter_when_scaling_down() -> None:
    fixed = [replica(1), replica(2)]
    for attrs in fixed:
        attrs["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert plan_for(snapshot(*fixed), step=-1).changes


def test_nothing_healthy_to_copy_refuses() -> None:
    plan = plan_for(snapshot(replica(1, Health={"Status": "unhealthy"}), replica(2, Running=False)), step=1)
    assert plan.refused == "no running, healthy container of shop/web to copy"


def test_down_removes_highest_numbers_first() -> None:
    plan = plan_for(snapshot(replica(3), replica(1), replica(2), replica(4, Running=False, Status="exited")),
                    replicas=1, stop_timeout=5)
    assert plan.summary == "scale shop/web from 4 to 1"
    assert [r["name"] for r in plan.data["remove"]] == ["shop_web_4", "shop_web_3", "shop_web_2"]
    assert plan.steps == ("remove shop_web_4 (it is exited)",
                          "stop shop_web_3 (SIGTERM, SIGKILL after 5s), then remove it",
                          "stop shop_web_2 (SIGTERM, SIGKILL after 5s), then remove it")
    assert plan.data["stop_timeout"] == 5


@pytest.mark.parametrize(
    ("params", "summary"),
    [
        ({"replicas": 0}, "scale shop/web from 2 to 1; 0 clamped to 1 (min 1, max 10)"),
        ({"step": 20}, "scale shop/web from 2 to 10; 22 clamped to 10 (min 1, max 10)"),
        ({"replicas": 0, "min": 0}, "scale shop/web from 2 to 0"),
    ],
)
def test_clamping_is_said(params: dict[str, Any], summary: str) -> None:
    assert plan_for(snapshot(replica(1), replica(2)), **params).summary == summary


def test_no_change_is_nothing_to_do() -> None:
    plan = plan_for(snapshot(replica(1), replica(2)), step=1, max=2)
    assert not plan.changes
    assert plan.refused is None
    assert plan.summary == "nothing to do for compose service shop/web: shop/web has 2 container(s) already; " \
                           "3 clamped to 2 (min 1, max 2)"


@pytest.mark.parametrize(
    ("target", "snap", "reason"),
    [
        (Target(check="c"), snapshot(), "no target"),
        (GROUP, {"error": "boom"}, "cannot inspect it: boom"),
        (Target(container="x"), {"project": None, "service": None, "containers": []}, "scale acts on a compose"),
        (GROUP, snapshot(), "has no containers"),
    ],
)
def test_refusals(target: Target, snap: dict[str, Any], reason: str) -> None:
    plan = plan_for(snap, target, step=1)
    assert plan.refused is not None
    assert reason in plan.refused


def test_service_of_a_single_compose_container() -> None:
    assert service_of(Target(container="shop_web_1"), [WEB_1]) == ("shop", "web")
    assert service_of(GROUP, []) == ("shop", "web")
    plain = copy.deepcopy(WEB_1)
    plain["Config"]["Labels"] = {}
    assert service_of(Target(container="x"), [plain]) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "exactly one of replicas, step"),
        ({"replicas": 2, "step": 1}, "exactly one of replicas, step"),
        ({"step": 0}, "step must not be 0"),
        ({"step": 1, "min": 5, "max": 2}, "min (5) is above max (2)"),
        ({"replicas": -1}, "greater than or equal to 0"),
    ],
)
def test_params_validation(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ScaleParams.model_validate(raw)


def test_param_defaults() -> None:
    params = ScaleParams(step=1)
    assert (params.min, params.max, params.stop_timeout) == (1, 10, 10.0)
