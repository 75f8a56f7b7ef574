"""Swarm plans (restart / scale / rollback of a service) as pure functions over recorded data.

The fixtures in tests/unit/fixtures/swarm/ are real ``docker service inspect`` output and
the service's tasks, recorded on a single-node swarm by record.py there (trimmed). No
Docker here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from remediations.base import Plan, Target
from remediations.restart import Restart, RestartParams, Start, StartParams
from remediations.swarm import (
    build_snapshot,
    describe_changes,
    image_of,
    plan_restart,
    plan_rollback,
    plan_scale,
    progress,
    read_service,
    rolling_wait,
    spec_changes,
    task_facts,
)
from tests.support.remediation import Bounds

FIXTURES = Path(__file__).parent / "fixtures" / "swarm"
WEB = Target(swarm_service="paramedic-fixture-web")
V1 = "paramedic-test/busybox:latest"
V2 = "paramedic-test/busybox:fixture-v2"


@dataclass(frozen=True)
class RollbackOpts:
    previous_tag: str | None = None
    retag: bool = False


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def snap(name: str, **service_changes: Any) -> dict[str, Any]:
    """The snapshot ``inspect_service`` builds from the recorded service ``name``."""
    data = recorded(name)
    service = copy.deepcopy(data["service"])
    service.update(service_changes)
    return build_snapshot(service["Spec"]["Name"], service, data["tasks"], None)


def target_of(snapshot: dict[str, Any]) -> Target:
    return Target(swarm_service=snapshot["name"])


def with_state(name: str, state: str, message: str = "") -> dict[str, Any]:
    return snap(name, UpdateStatus={"State": state, "Message": message})


def with_mode(name: str, mode: dict[str, Any]) -> dict[str, Any]:
    snapshot = snap(name)
    snapshot["service"]["Spec"]["Mode"] = mode
    return snapshot


def running_ids(name: str) -> list[str]:
    return [t["ID"] for t in recorded(name)["tasks"] if t["DesiredState"] == "running"]


# --------------------------------------------------------------------------- shaping


def test_snapshot_from_recorded_service() -> None:
    snapshot = snap("deployed")
    service = snapshot["service"]
    assert set(service) == {"ID", "Version", "CreatedAt", "UpdatedAt", "Spec", "PreviousSpec", "UpdateStatus"}
    assert image_of(service["Spec"]) == V2
    assert image_of(service["PreviousSpec"]) == V1
    facts = snapshot["tasks"]
    assert [t["desired"] for t in facts].count("running") == 2
    first = task_facts(recorded("deployed")["tasks"][0])
    assert set(first) >= {"id", "slot", "desired", "state", "error", "container_id", "image"}
    assert json.loads(json.dumps(snapshot)) == snapshot  # JSON-safe: it goes to the journal


def test_image_of_hides_a_pinned_digest_only_when_a_tag_is_there() -> None:
    spec = {"TaskTemplate": {"ContainerSpec": {"Image": "registry:5000/app:2.1@sha256:" + "a" * 64}}}
    assert image_of(spec) == "registry:5000/app:2.1"
    by_digest = {"TaskTemplate": {"ContainerSpec": {"Image": "app@sha256:" + "b" * 64}}}
    assert image_of(by_digest) == "app@sha256:" + "b" * 64


def test_spec_changes_between_recorded_specs() -> None:
    service = recorded("deployed")["service"]
    assert spec_changes(service["PreviousSpec"], service["Spec"]) == ["TaskTemplate.ContainerSpec.Image"]
    scaled = recorded("scaled_after_deploy")["service"]
    assert spec_changes(scaled["PreviousSpec"], scaled["Spec"]) == ["Mode.Replicated.Replicas"]
    restarted = recorded("restarted_after_deploy")["service"]
    assert spec_changes(restarted["PreviousSpec"], restarted["Spec"]) == ["TaskTemplate.ForceUpdate"]


def test_describe_changes_names_image_and_replicas_and_lists_the_rest() -> None:
    service = recorded("deployed")["service"]
    old, new = service["Spec"], copy.deepcopy(service["PreviousSpec"])
    new["Mode"]["Replicated"]["Replicas"] = 5
    new["TaskTemplate"]["ContainerSpec"]["Env"] = ["A=1"]
    paths = spec_changes(old, new)
    assert describe_changes(paths, old, new) == f"image {V2} -> {V1}, replicas 2 -> 5; restores Env"


def test_read_service_matches_the_exact_name_only() -> None:
    class Api:
        def services(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = [{"ID": "b", "Spec": {"Name": "web2"}}, {"ID": "a", "Spec": {"Name": "web"}}]
            return [s for s in found if s["Spec"]["Name"].startswith(filters["name"])]  # a prefix match

        def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"ID": "t1", "ServiceID": filters["service"]}]

    class Client:
        api = Api()

    attrs, tasks = read_service(Client(), "web")
    assert attrs is not None
    assert attrs["ID"] == "a"
    assert tasks == [{"ID": "t1", "ServiceID": "a"}]
    assert read_service(Client(), "we") == (None, [])


def test_rolling_wait_follows_the_update_config() -> None:
    spec = recorded("created")["service"]["Spec"]  # StopGracePeriod 2s, parallelism 1
    assert rolling_wait(spec, spec["UpdateConfig"], 3, given=1.0) == pytest.approx(3 * (2 + 10))
    assert rolling_wait(spec, {"Parallelism": 0}, 3, given=1.0) == pytest.approx(12)
    assert rolling_wait(spec, spec["UpdateConfig"], 1, given=300.0) == 300.0


# --------------------------------------------------------------------------- common refusals


@pytest.mark.parametrize("planner", ["restart", "scale", "rollback"])
def test_missing_service_error_and_jobs_are_refused(planner: str) -> None:
    def plan(target: Target, snapshot: dict[str, Any]) -> Plan:
        if planner == "restart":
            return plan_restart(target, snapshot)
        if planner == "scale":
            return plan_scale(target, snapshot, Bounds(step=1))
        return plan_rollback(target, snapshot)

    missing = plan(Target(swarm_service="nope"), build_snapshot("nope", None, [], None))
    assert missing.refused == "no Swarm service named nope"
    assert missing.summary.startswith(f"will not {planner} swarm service nope")
    error = plan(WEB, {"error": "This node is not a swarm manager.", "name": WEB.swarm_service})
    assert error.refused == "cannot inspect it: This node is not a swarm manager."
    job = plan(WEB, with_mode("created", {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}))
    assert job.refused is not None
    assert "replicated-job" in job.refused


# --------------------------------------------------------------------------- restart


def test_restart_force_updates_every_task() -> None:
    snapshot = snap("created")
    plan = plan_restart(target_of(snapshot), snapshot, wait=5.0)
    assert plan.changes
    assert plan.refused is None
    assert plan.target == "swarm service paramedic-fixture-web"
    assert plan.summary == ("force-update swarm service paramedic-fixture-web: Swarm replaces its 2 tasks "
                            "(2 running now)")
    assert plan.steps[0].startswith("force-update paramedic-fixture-web (ForceUpdate 0 -> 1): Swarm replaces its "
                                    "2 tasks (1 at a time, stop-first); each old task gets its stop signal and 2s")
    data = plan.data
    assert data["swarm"] is True
    assert data["op"] == "restart"
    assert data["service_id"] == recorded("created")["service"]["ID"]
    assert sorted(data["replace"]) == sorted(running_ids("created"))
    assert len(data["containers"]) == 2
    assert data["expected"] == 2
    assert data["wait"] == pytest.approx(2 * (2 + 10))  # two batches of (grace + start allowance) > 5s given
    assert json.loads(json.dumps(plan.as_dict()))["data"] == dict(data)


def test_restart_class_delegates_and_says_force_is_the_same() -> None:
    snapshot = snap("created")
    plan = Restart(RestartParams(mode="force", running_timeout=120)).plan(target_of(snapshot), snapshot)
    assert plan.changes
    assert any("mode force: a Swarm service has no kill-then-start" in s for s in plan.steps)
    assert plan.data["wait"] == 120.0
    graceful = Restart(RestartParams()).plan(target_of(snapshot), snapshot)
    assert not any("mode force" in s for s in graceful.steps)


def test_start_refuses_swarm_services() -> None:
    snapshot = snap("created")
    plan = Start(StartParams()).plan(target_of(snapshot), snapshot)
    assert plan.refused is not None
    assert "Swarm keeps the tasks of service paramedic-fixture-web running itself" in plan.refused


def test_restart_refuses_while_swarm_updates() -> None:
    updating = snap("updating")
    plan = plan_restart(target_of(updating), updating)
    assert plan.refused == ("an update of paramedic-fixture-web is in progress (update in progress): another "
                            "update now would interrupt it; leave it to Swarm")
    rolling_back = with_state("created", "rollback_started", "manually requested rollback")
    refused = plan_restart(target_of(rolling_back), rolling_back).refused
    assert refused is not None
    assert refused.startswith("a rollback of paramedic-fixture-web is in progress")


def test_restart_refuses_a_paused_deploy() -> None:
    paused = snap("paused")
    plan = plan_restart(target_of(paused), paused)
    assert plan.refused is not None
    assert plan.refused.startswith("Swarm paused the last update of paramedic-fixture-crashing because its tasks "
                                   "failed (update paused due to failure")
    assert "roll back or let a person decide" in plan.refused
    stuck = with_state("created", "rollback_paused", "rollback paused")
    assert "a person must decide" in str(plan_restart(target_of(stuck), stuck).refused)


def test_restart_after_a_deploy_warns_that_the_previous_spec_goes() -> None:
    deployed = snap("deployed")
    plan = plan_restart(target_of(deployed), deployed)
    assert plan.changes
    assert plan.steps[-1] == (
        "note: Swarm keeps one previous spec; this update replaces it, so a later rollback of paramedic-fixture-web "
        f"returns to this spec ({V2}), no longer to the one before its last deploy ({V1})")
    created = snap("created")
    assert not any(s.startswith("note:") for s in plan_restart(target_of(created), created).steps)


def test_restart_of_a_service_scaled_to_zero_has_nothing_to_do() -> None:
    zero = with_mode("created", {"Replicated": {"Replicas": 0}})
    plan = plan_restart(target_of(zero), zero)
    assert not plan.changes
    assert plan.refused is None
    assert plan.summary.endswith("is scaled to 0 replicas: there is no task to restart")


def test_restart_of_a_global_service_counts_its_nodes_tasks() -> None:
    snapshot = snap("global")
    plan = plan_restart(target_of(snapshot), snapshot)
    assert plan.changes
    assert plan.data["expected"] == 1
    assert "replaces its 1 task (" in plan.summary


def test_restart_summary_names_the_last_task_error_when_tasks_are_down() -> None:
    snapshot = snap("created")
    task = snapshot["tasks"][0]
    task.update(state="failed", error="task: non-zero exit (3)", updated_at="2099-01-01T00:00:00Z")
    plan = plan_restart(target_of(snapshot), snapshot)
    assert plan.summary.endswith("(1 running now; last task error: task: non-zero exit (3))")


# --------------------------------------------------------------------------- scale


def test_scale_up_and_down() -> None:
    snapshot = snap("created")
    up = plan_scale(target_of(snapshot), snapshot, Bounds(replicas=3))
    assert up.summary == "scale swarm service paramedic-fixture-web from 2 to 3 replicas (2 running now)"
    assert up.steps[0] == (f"set paramedic-fixture-web's replicas from 2 to 3: Swarm starts 1 task(s) from the "
                           f"same spec ({V1}); the running ones are not touched")
    assert (up.data["op"], up.data["from"], up.data["replicas"], up.data["containers"]) == ("scale", 2, 3, [])
    down = plan_scale(target_of(snapshot), snapshot, Bounds(step=-1))
    assert down.data["replicas"] == 1
    assert "Swarm stops 1 task(s) of its choosing" in down.steps[0]
    assert len(down.data["containers"]) == 2  # any of them may be the one Swarm stops: all announced


def test_scale_clamps_and_has_nothing_to_do_at_the_number() -> None:
    snapshot = snap("created")
    clamped = plan_scale(target_of(snapshot), snapshot, Bounds(step=+20, max=4))
    assert clamped.data["replicas"] == 4
    assert clamped.summary.endswith("; 22 clamped to 4 (min 1, max 4)")
    floor = plan_scale(target_of(snapshot), snapshot, Bounds(step=-5, min=2))
    assert not floor.changes
    assert floor.refused is None
    assert floor.summary.endswith("has 2 replica(s) already (2 running); -3 clamped to 2 (min 2, max 10)")
    same = plan_scale(target_of(snapshot), snapshot, Bounds(replicas=2))
    assert not same.changes
    assert same.refused is None


def test_scale_refuses_global_services_and_unfinished_updates() -> None:
    global_ = snap("global")
    refused = plan_scale(target_of(global_), global_, Bounds(step=1)).refused
    assert refused is not None
    assert refused.startswith("paramedic-fixture-global is a global service")
    updating = snap("updating")
    assert "is in progress" in str(plan_scale(target_of(updating), updating, Bounds(step=1)).refused)
    paused = snap("paused")
    assert "Swarm paused the last update" in str(plan_scale(target_of(paused), paused, Bounds(step=1)).refused)


# --------------------------------------------------------------------------- rollback


def test_rollback_of_a_deploy() -> None:
    snapshot = snap("deployed")
    plan = plan_rollback(target_of(snapshot), snapshot)
    assert plan.changes
    assert plan.refused is None
    assert plan.summary == f"roll back swarm service paramedic-fixture-web to its previous spec: image {V2} -> {V1}"
    assert plan.steps[0].startswith("ask Swarm to roll paramedic-fixture-web back to its previous spec "
                                    "(POST /services/{id}/update?rollback=previous")
    assert (plan.data["op"], plan.data["image"], plan.data["from_image"]) == ("rollback", V1, V2)
    assert plan.data["changes"] == ["TaskTemplate.ContainerSpec.Image"]
    assert sorted(plan.data["replace"]) == sorted(running_ids("deployed"))
    assert plan.data["expected"] == 2


def test_a_rollback_is_never_rolled_back() -> None:
    rolled = snap("rolled_back")
    plan = plan_rollback(target_of(rolled), rolled)
    assert plan.refused == ("already rolled back: Swarm reports rollback_completed (rollback completed) for "
                            "paramedic-fixture-web; a rollback is never rolled back (it would re-deploy what was "
                            "rolled back): a person must decide")
    for state in ("rollback_started", "rollback_paused"):
        snapshot = with_state("deployed", state)
        assert str(plan_rollback(target_of(snapshot), snapshot).refused).startswith("already rolled back")


def test_rollback_refuses_without_a_previous_spec_worth_restoring() -> None:
    created = snap("created")
    assert plan_rollback(target_of(created), created).refused == (
        "Swarm has no previous spec for paramedic-fixture-web (not updated since it was created): nothing to roll "
        "back to")
    restarted = snap("restarted_after_deploy")
    refused = str(plan_rollback(target_of(restarted), restarted).refused)
    assert refused.startswith("paramedic-fixture-restarted's previous spec is its current one but for a forced "
                              "restart (ForceUpdate 1 -> 0)")
    scaled = snap("scaled_after_deploy")
    assert plan_rollback(target_of(scaled), scaled).refused == (
        "paramedic-fixture-scaled's previous spec differs only in the replica count (3 -> 2): rolling back would "
        "only undo a scale; a person must decide")


def test_rollback_of_a_paused_deploy_is_what_rollback_is_for() -> None:
    paused = snap("paused")
    plan = plan_rollback(target_of(paused), paused)
    assert plan.changes
    assert plan.summary.startswith("roll back swarm service paramedic-fixture-crashing to its previous spec: "
                                   "restores Command (Swarm paused its last update: update paused due to failure")
    assert plan.data["expected"] == 2


def test_rollback_refuses_during_an_update_and_container_only_options() -> None:
    updating = snap("updating")
    assert str(plan_rollback(target_of(updating), updating).refused).startswith(
        "an update of paramedic-fixture-web is in progress")
    deployed = snap("deployed")
    for options in (RollbackOpts(previous_tag="previous"), RollbackOpts(retag=True)):
        refused = plan_rollback(target_of(deployed), deployed, options).refused
        assert refused is not None
        assert refused.startswith("previous_tag and retag apply to containers")
    assert plan_rollback(target_of(deployed), deployed, RollbackOpts()).changes


# --------------------------------------------------------------------------- apply's wait (pure part)


def test_progress_of_a_restart() -> None:
    deployed = recorded("deployed")
    old = running_ids("created")
    data = {"expected": 2, "replace": old}
    assert progress("restart", deployed["service"], deployed["tasks"], data) == ("done", "2 tasks running")
    same = {"expected": 2, "replace": running_ids("deployed")}
    verdict, words = progress("restart", deployed["service"], deployed["tasks"], same)
    assert (verdict, words) == ("waiting", "0 of 2 new task(s) running (2 wanted)")
    paused = recorded("paused")
    verdict, words = progress("restart", paused["service"], paused["tasks"], data)
    assert verdict == "failed"
    assert words.startswith("Swarm paused the update: update paused due to failure")


def test_progress_of_a_rollback_and_a_scale() -> None:
    rolled = recorded("rolled_back")
    data = {"expected": 2, "replace": running_ids("deployed")}
    assert progress("rollback", rolled["service"], rolled["tasks"], data)[0] == "done"
    stuck = copy.deepcopy(rolled["service"])
    stuck["UpdateStatus"] = {"State": "rollback_paused", "Message": "rollback paused"}
    assert progress("rollback", stuck, rolled["tasks"], data) == ("failed",
                                                                  "Swarm paused the rollback: rollback paused")
    scaled = recorded("scaled_after_deploy")
    assert progress("scale", scaled["service"], scaled["tasks"], {"expected": 3, "replace": []})[0] == "done"
    verdict, words = progress("scale", scaled["service"], scaled["tasks"], {"expected": 1, "replace": []})
    assert (verdict, words) == ("waiting", "3 of 1 task(s) running (3 wanted)")


def test_scale_and_rollback_actions_delegate_swarm_targets_to_the_swarm_planners() -> None:
    from remediations.base import ActionContext
    from remediations.rollback import Rollback, RollbackParams
    from remediations.scale import Scale, ScaleParams

    deployed = snap("deployed")
    scale_plan = Scale(ScaleParams(step=1), ActionContext()).plan(target_of(deployed), deployed)
    assert scale_plan == plan_scale(target_of(deployed), deployed, Bounds(step=1))
    assert scale_plan.data.get("swarm")
    rollback_plan = Rollback(RollbackParams(), ActionContext()).plan(target_of(deployed), deployed)
    assert rollback_plan == plan_rollback(target_of(deployed), deployed, RollbackOpts())
