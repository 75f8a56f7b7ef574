"""``rollback`` plans as pure functions over recorded inspect data and image history."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from remediations.base import Target
from remediations.clone import LABEL_ROLLBACK_FROM
from remediations.rollback import Rollback, RollbackParams, previous_from_history, split_reference
from tests.support.rich_container import FIXTURES

BEFORE: dict[str, Any] = json.loads((FIXTURES / "rich_before.json").read_text())
IMAGE: dict[str, Any] = json.loads((FIXTURES / "rich_image.json").read_text())
NAME = BEFORE["Name"].lstrip("/")
CURRENT = BEFORE["Image"]
OLD = "sha256:" + "0ld" * 21 + "0"
REF = BEFORE["Config"]["Image"]  # paramedic-test/busybox:latest
TARGET = Target(container=NAME)


def item(**labels: str) -> dict[str, Any]:
    attrs = copy.deepcopy(BEFORE)
    attrs["Config"]["Labels"].update(labels)
    return {"attrs": attrs, "image_config": IMAGE["Config"]}


def history(*entries: tuple[str, str, float]) -> list[dict[str, Any]]:
    return [{"image": ref, "image_id": image_id, "first_seen": at} for ref, image_id, at in entries]


HISTORY = history((REF, CURRENT, 1_700_000_600.0), ("app:1.0", OLD, 1_700_000_000.0))


def snapshot(*items: dict[str, Any], hist: list[dict[str, Any]] | None = None,
             images: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    return {"docker_host": None, "containers": list(items) or [item()], "operator_stops": {},
            "history": HISTORY if hist is None else hist,
            "images": {REF: CURRENT, CURRENT: CURRENT, "app:1.0": OLD, OLD: OLD} if images is None else images}


def plan_for(snap: dict[str, Any], **params: Any) -> Any:
    return Rollback(RollbackParams(**params)).plan(TARGET, snap)


def test_rolls_back_to_the_newest_earlier_image_by_its_tag() -> None:
    plan = plan_for(snapshot())
    assert plan.changes, plan.summary
    assert (plan.data["image"], plan.data["image_id"], plan.data["from_image_id"]) == ("app:1.0", OLD, CURRENT)
    [entry] = plan.data["containers"]
    body = entry["spec"]["body"]
    assert body["Image"] == "app:1.0"
    assert body["Labels"][LABEL_ROLLBACK_FROM] == CURRENT
    assert body["Cmd"] == BEFORE["Config"]["Cmd"]  # the container's own command (it set an entrypoint)
    assert plan.data["retag"] is None
    assert plan.summary.startswith(f"roll back {NAME} from {REF} ({CURRENT[7:19]}) to app:1.0 ({OLD[7:19]}, "
                                   "first seen 2023-11-14 22:13:20Z)")
    json.dumps(plan.as_dict())


def test_a_tag_that_moved_on_is_replaced_by_the_image_id() -> None:
    images = {REF: CURRENT, CURRENT: CURRENT, "app:1.0": "sha256:" + "9" * 64, OLD: OLD}
    plan = plan_for(snapshot(images=images))
    assert plan.data["image"] == OLD


def test_no_history_refuses() -> None:
    plan = plan_for(snapshot(hist=[]))
    assert plan.refused == f"no earlier image recorded for container {NAME}"


def test_history_of_only_the_current_image_refuses() -> None:
    plan = plan_for(snapshot(hist=history((REF, CURRENT, 1.0))))
    assert plan.refused is not None
    assert plan.refused.startswith(f"no earlier image recorded for container {NAME} (history: 1 entry")


def test_a_pruned_earlier_image_refuses() -> None:
    images = {REF: CURRENT, CURRENT: CURRENT, "app:1.0": None, OLD: None}
    plan = plan_for(snapshot(images=images))
    assert plan.refused is not None
    assert "is no longer on this Docker host" in plan.refused


def test_a_rollback_is_never_rolled_back() -> None:
    plan = plan_for(snapshot(item(**{LABEL_ROLLBACK_FROM: OLD})))
    assert plan.refused is not None
    assert f"already runs an image installed by a paramedic rollback (rolled back from {OLD[7:19]})" in plan.refused
    assert plan.refused.endswith("a person must decide")


def test_replicas_on_different_images_refuse() -> None:
    other = item()
    other["attrs"]["Image"] = OLD
    plan = plan_for(snapshot(item(), other))
    assert plan.refused is not None
    assert "run different images" in plan.refused


def test_operator_stop_refuses() -> None:
    snap = snapshot()
    snap["operator_stops"] = {NAME: {"event": "kill", "at": 0}}
    plan = plan_for(snap)
    assert plan.refused is not None
    assert "stopped by an operator" in plan.refused


# --------------------------------------------------------------------------- the seed's tags


def test_previous_tag() -> None:
    images = {"paramedic-test/busybox:previous": OLD}
    plan = plan_for(snapshot(images=images), previous_tag="previous")
    assert plan.data["image"] == "paramedic-test/busybox:previous"
    assert plan.data["image_id"] == OLD


def test_missing_previous_tag_refuses() -> None:
    plan = plan_for(snapshot(images={"paramedic-test/busybox:previous": None}), previous_tag="previous")
    assert plan.refused == "no image paramedic-test/busybox:previous on this Docker host"


def test_previous_tag_that_is_the_running_image_refuses() -> None:
    plan = plan_for(snapshot(images={"paramedic-test/busybox:previous": CURRENT}), previous_tag="previous")
    assert plan.refused is not None
    assert "is the image running now" in plan.refused


def test_retag_repoints_the_running_tag_first() -> None:
    plan = plan_for(snapshot(images={"paramedic-test/busybox:previous": OLD}), previous_tag="previous", retag=True)
    assert plan.data["retag"] == {"repository": "paramedic-test/busybox", "tag": "latest", "image_id": OLD,
                                  "restore_id": CURRENT}
    assert plan.data["image"] == REF
    assert plan.data["containers"][0]["spec"]["body"]["Image"] == REF
    assert plan.steps[0] == f"re-tag {REF} to {OLD[7:19]} (it points to {CURRENT[7:19]} now)"


def test_container_running_an_image_id_cannot_be_retagged() -> None:
    by_id = item()
    by_id["attrs"]["Config"]["Image"] = CURRENT
    plan = plan_for(snapshot(by_id), retag=True)
    assert plan.refused is not None
    assert "not a tag" in plan.refused
    plan = plan_for(snapshot(by_id), previous_tag="previous")
    assert plan.refused is not None
    assert "there is no repository" in plan.refused


# --------------------------------------------------------------------------- helpers and params


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("app", ("app", "latest")),
        ("app:1.2", ("app", "1.2")),
        ("registry:5000/team/app", ("registry:5000/team/app", "latest")),
        ("registry:5000/team/app:2", ("registry:5000/team/app", "2")),
        ("app@sha256:abcd", None),
        ("sha256:abcd", None),
        ("", None),
    ],
)
def test_split_reference(reference: str, parts: tuple[str, str] | None) -> None:
    assert split_reference(reference) == parts


def test_previous_from_history_skips_the_current_image() -> None:
    assert previous_from_history(HISTORY, CURRENT) == HISTORY[1]
    assert previous_from_history(HISTORY, OLD) == HISTORY[0]
    assert previous_from_history([], CURRENT) is None


def test_rollback_needs_approval_by_default() -> None:
    assert Rollback.requires_approval is True
    assert Rollback.action == "rollback"
    with pytest.raises(ValueError, match="previous_tag"):
        RollbackParams.model_validate({"previous_tag": "bad tag"})
