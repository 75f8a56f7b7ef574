"""``docker.prune`` plans as pure functions over recorded Docker answers.

tests/unit/fixtures/prune/raw.json holds the raw ``df()``, dangling-image list, container
list and ``FinishedAt`` values of a real scene (record.py there): images committed from
busybox with a 200 kB unique layer; ``fixture-old-stopped`` runs a dangling image only it
uses; ``fixture-running`` runs another dangling image; a third dangling image is unused;
``fixture-operator-stopped`` was stopped by hand; seven builder containers (exited, busybox,
without the scene label). The build cache entries are made up (that engine had none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Plan, Target
from remediations.prune import Prune, PruneParams, human_bytes, shape_snapshot

RAW: dict[str, Any] = json.loads((Path(__file__).parent / "fixtures" / "prune" / "raw.json").read_text())
SCENE = {"paramedic-fixture-recorder": RAW["listed"][0]["Labels"]["paramedic-fixture-recorder"]}
TARGET = Target(check="disk")
LATER = float(RAW["recorded_at"]) + 3600  # an hour after the recording


def snapshot(now: float = LATER, stops: dict[str, Any] | None = None) -> dict[str, Any]:
    return shape_snapshot(RAW["df"], RAW["dangling"], RAW["listed"], RAW["finished"], now,
                          stops if stops is not None else {"fixture-operator-stopped": {"event": "stop", "at": 1.0}},
                          None)


def plan(snap: dict[str, Any] | None = None, **fields: Any) -> Plan:
    return Prune(PruneParams.model_validate(fields)).plan(TARGET, snap if snap is not None else snapshot())


def container_id(name: str) -> str:
    [cid] = [c["Id"] for c in RAW["listed"] if c["Names"] == [f"/{name}"]]
    return str(cid)


def image_of(name: str) -> str:
    [image] = [c["ImageID"] for c in RAW["listed"] if c["Names"] == [f"/{name}"]]
    return str(image)


UNUSED = next(i["Id"] for i in RAW["dangling"] if i["Id"] not in {c["ImageID"] for c in RAW["listed"]})


def test_params() -> None:
    p = PruneParams()
    assert (p.dangling_images, p.stopped_containers_older_than, p.build_cache, p.only_labels) == (True, None, True,
                                                                                                 None)
    assert PruneParams.model_validate({"stopped_containers_older_than": "7d"}).stopped_containers_older_than == 604800
    with pytest.raises(ValidationError):
        PruneParams.model_validate({"only_labels": {}})
    with pytest.raises(ValidationError):
        PruneParams.model_validate({"volumes": True})


def test_snapshot_shape() -> None:
    snap = snapshot()
    [image] = [i for i in snap["images"] if i["id"] == UNUSED]
    assert (image["size"], image["unique_size"]) == (2184256, 200000)  # shares busybox's layer with the others
    [old] = [c for c in snap["containers"] if c["name"] == "fixture-old-stopped"]
    assert old["status"] == "exited"
    assert old["finished_s"] is not None
    assert json.loads(json.dumps(snap)) == snap


def test_default_removes_unused_dangling_images_and_build_cache_only() -> None:
    p = plan()
    assert p.changes
    assert p.data["containers"] == []
    assert [i["id"] for i in p.data["images"]] == [UNUSED]
    assert p.data["build_cache"] is True
    assert p.data["build_cache_bytes"] == 5_000_000  # the in-use entry stays
    assert p.data["bytes_to_free"] == 200_000 + 5_000_000
    assert p.summary == f"remove 1 image(s), unused build cache: about {human_bytes(5_200_000)} to free"
    kept = {k["what"]: k["reason"] for k in p.data["kept"]}
    assert kept[f"image {image_of('fixture-running')[7:19]}"] == "used by container fixture-running"
    assert kept[f"image {image_of('fixture-old-stopped')[7:19]}"] == "used by container fixture-old-stopped"


def test_old_stopped_containers_go_with_the_images_only_they_use() -> None:
    p = plan(stopped_containers_older_than="30m", only_labels=SCENE)
    assert [c["name"] for c in p.data["containers"]] == ["fixture-old-stopped"]
    assert sorted(i["id"] for i in p.data["images"]) == sorted([UNUSED, image_of("fixture-old-stopped")])
    assert p.steps[0].startswith("remove stopped container fixture-old-stopped (exited 1h")
    assert p.steps[0].endswith(" ago, 0 B)")
    kept = {k["what"]: k["reason"] for k in p.data["kept"]}
    assert kept["container fixture-operator-stopped"] == "stopped by an operator: kept as they left it"
    assert kept["build cache"] == "build cache has no labels; left alone because only_labels is set"
    assert p.data["build_cache"] is False


def test_running_containers_are_never_candidates() -> None:
    p = plan(snapshot(stops={}), stopped_containers_older_than="0s")
    names = [c["name"] for c in p.data["containers"]]
    assert "fixture-running" not in names
    assert "fixture-operator-stopped" in names  # not recorded as an operator stop here: just stopped
    assert len(names) == 9 - 1


def test_young_stopped_containers_are_kept() -> None:
    p = plan(snapshot(now=float(RAW["recorded_at"])), stopped_containers_older_than="1h", only_labels=SCENE,
             dangling_images=False, build_cache=False)
    assert not p.changes
    assert p.refused is None
    assert p.summary == ("nothing to do for check disk: nothing to remove (kept container fixture-operator-stopped: "
                         "stopped by an operator: kept as they left it)")


def test_only_labels_narrows_images_and_containers() -> None:
    p = plan(stopped_containers_older_than="0s", only_labels={"no-such": "label"})
    assert not p.changes


def test_everything_off_is_nothing_to_do() -> None:
    p = plan(dangling_images=False, build_cache=False)
    assert not p.changes
    assert p.summary == "nothing to do for check disk: nothing to remove"


def test_inspect_error_is_a_refusal() -> None:
    p = plan({"error": "cannot reach Docker at unix:///var/run/docker.sock: no such socket"})
    assert p.refused == "cannot inspect Docker: cannot reach Docker at unix:///var/run/docker.sock: no such socket"


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**3)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
