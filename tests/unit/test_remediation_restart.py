"""``restart`` / ``start`` plans as pure functions over recorded inspect data.

The fixtures in tests/unit/fixtures/restart/ are real ``docker inspect`` output of busybox
containers in each state (recorded by record.py there, trimmed). No Docker here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Plan, Target
from remediations.restart import Restart, RestartParams, Start, StartParams, build_snapshot, container_facts

FIXTURES = Path(__file__).parent / "fixtures" / "restart"
SINGLE = Target(check="web", container="web")
GROUP = Target(check="web", compose_project="shop", compose_service="web")


def recorded(name: str, rename: str | None = None, **state: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    if rename is not None:
        attrs["Name"] = f"/{rename}"
    attrs["State"].update(state)
    return attrs


def started(attrs: dict[str, Any]) -> float:
    value = container_facts(attrs)["started_s"]
    assert value is not None
    return float(value)


def snap(*inspected: dict[str, Any], now: float | None = None, stops: dict[str, Any] | None = None) -> dict[str, Any]:
    """A snapshot as ``inspect`` builds it, ``now`` defaulting to an hour after the last start."""
    if now is None:
        now = max(started(a) for a in inspected) + 3600
    return build_snapshot(list(inspected), now, stops or {}, None)


def restart(target: Target, snapshot: dict[str, Any], **params: Any) -> Plan:
    return Restart(RestartParams.model_validate(params)).plan(target, snapshot)


def start(target: Target, snapshot: dict[str, Any], **params: Any) -> Plan:
    return Start(StartParams.model_validate(params)).plan(target, snapshot)


# --------------------------------------------------------------------------- shaping


def test_facts_from_recorded_inspect() -> None:
    facts = container_facts(recorded("restarting"))
    assert facts["name"] == "fixture-restarting"
    assert (facts["status"], facts["restarting"], facts["restart_count"]) == ("restarting", True, 1)
    assert facts["running"] is False  # State.Running is true while restarting; status is what counts
    assert (facts["restart_policy"], facts["max_retries"]) == ("always", 0)
    exhausted = container_facts(recorded("on_failure_exhausted"))
    assert (exhausted["restart_policy"], exhausted["max_retries"], exhausted["exit_code"]) == ("on-failure", 2, 1)
    assert container_facts(recorded("paused"))["running"] is False
    assert container_facts(recorded("unhealthy"))["health"] == "unhealthy"


def test_snapshot_keeps_only_stops_of_selected_containers_and_is_json() -> None:
    stops = {"web": {"id": "abc", "event": "stop", "at": 1.0}, "other": {"id": "x", "event": "kill", "at": 2.0}}
    snapshot = build_snapshot([recorded("running", "web")], 100.0, stops, "unix:///var/run/docker.sock")
    assert snapshot["operator_stops"] == {"web": {"id": "abc", "event": "stop", "at": 1.0}}
    assert json.loads(json.dumps(snapshot)) == snapshot


# --------------------------------------------------------------------------- params


def test_params_defaults_and_validation() -> None:
    p = RestartParams()
    assert (p.mode, p.stop_timeout, p.crash_loop_restarts, p.crash_loop_window) == ("graceful", 10.0, 3, 300.0)
    assert RestartParams.model_validate({"mode": "force", "stop_timeout": "2s"}).stop_timeout == 2.0
    with pytest.raises(ValidationError):
        RestartParams.model_validate({"mode": "brutal"})
    with pytest.raises(ValidationError):
        RestartParams.model_validate({"stop_timout": "2s"})  # typo: extra=forbid
    with pytest.raises(ValidationError):
        StartParams.model_validate({"mode": "force"})  # start has no mode
    with pytest.raises(ValidationError):
        RestartParams.model_validate({"crash_loop_restarts": 0})


# --------------------------------------------------------------------------- restart: single container


def test_running_single_container_is_restarted_gracefully() -> None:
    attrs = recorded("running", "web")
    plan = restart(SINGLE, snap(attrs), stop_timeout="5s")
    assert plan.changes
    assert plan.refused is None
    assert plan.steps == ("restart web: SIGTERM, SIGKILL after 5s if still running, then start",)
    assert plan.data["mode"] == "graceful"
    assert plan.data["stop_timeout"] == 5.0
    assert plan.data["containers"] == [{"id": attrs["Id"], "name": "web", "running": True}]
    assert json.loads(json.dumps(plan.as_dict()))["data"]["containers"][0]["name"] == "web"


def test_force_mode_kills_then_starts() -> None:
    plan = restart(SINGLE, snap(recorded("running", "web")), mode="force")
    assert plan.steps == ("kill web (SIGKILL), then start it",)
    assert plan.data["mode"] == "force"


def test_exited_single_container_is_started_by_restart() -> None:
    plan = restart(SINGLE, snap(recorded("exited", "web")))
    assert plan.changes
    assert plan.steps == ("start web (it is exited, exit code 2)",)
    assert plan.data["containers"][0]["running"] is False


def test_unhealthy_single_container_is_restarted() -> None:
    assert restart(SINGLE, snap(recorded("unhealthy", "web"))).changes


@pytest.mark.parametrize("fixture", ["running", "stopped_by_hand"])
def test_operator_stop_is_refused(fixture: str) -> None:
    stops = {"web": {"id": "0d33a225df9e", "event": "stop", "at": 1_795_000_000.0}}
    for plan in (restart(SINGLE, snap(recorded(fixture, "web"), stops=stops)),
                 start(SINGLE, snap(recorded(fixture, "web"), stops=stops))):
        assert plan.refused is not None
        assert not plan.changes
        assert "web was stopped by an operator at 2026-11-18 11:06:40Z (docker stop)" in plan.refused
        assert "(docker stop)" in plan.refused
        assert "docker start web" in plan.refused
        assert plan.summary.startswith(f"will not {plan.action} container web: ")


def test_operator_kill_is_named_as_such() -> None:
    stops = {"web": {"id": "x", "event": "kill", "at": 0.0}}
    plan = restart(SINGLE, snap(recorded("stopped_by_hand", "web"), stops=stops))
    assert plan.refused is not None
    assert "(docker kill)" in plan.refused
    assert "1970-01-01 00:00:00Z" in plan.refused


def test_docker_already_restarting_is_left_to_docker() -> None:
    plan = restart(SINGLE, snap(recorded("restarting", "web")))
    assert plan.refused == "Docker's restart policy always is already restarting web (restart 1); leave it to Docker"
    assert start(SINGLE, snap(recorded("restarting", "web"))).refused == plan.refused


def test_crash_loop_while_restarting_is_refused_whatever_the_window() -> None:
    attrs = recorded("crashloop_restarting", "web")
    plan = restart(SINGLE, snap(attrs, now=started(attrs) + 86400), mode="force")
    assert plan.refused is not None
    assert plan.refused.startswith("web is crash-looping (4 restarts by Docker's restart policy unless-stopped")
    assert "restarting will not help" in plan.refused
    assert "rollback" in plan.refused


def test_crash_loop_running_between_crashes_is_refused_when_recent() -> None:
    attrs = recorded("crashloop_running", "web")
    plan = restart(SINGLE, snap(attrs, now=started(attrs) + 2))
    assert plan.refused is not None
    assert "crash-looping (4 restarts" in plan.refused
    assert "last started 2s ago" in plan.refused
    # an hour later it has stayed up: not a loop any more
    assert restart(SINGLE, snap(attrs, now=started(attrs) + 3600)).changes
    # the threshold is a param
    assert restart(SINGLE, snap(attrs, now=started(attrs) + 2), crash_loop_restarts=5).changes
    assert restart(SINGLE, snap(attrs, now=started(attrs) + 200), crash_loop_window="1m").changes


def test_on_failure_policy_that_gave_up() -> None:
    attrs = recorded("on_failure_exhausted", "web")
    recent = snap(attrs, now=started(attrs) + 5)
    # 2 restarts < 3: Docker gave up, nothing races us; starting it is allowed
    assert start(SINGLE, recent).changes
    # with a lower threshold it is a crash loop, with the policy spelled as docker run does
    plan = start(SINGLE, recent, crash_loop_restarts=2)
    assert plan.refused is not None
    assert "restart policy on-failure:2" in plan.refused


def test_paused_is_refused() -> None:
    plan = restart(SINGLE, snap(recorded("paused", "web")))
    assert plan.refused == "web is paused (docker pause): someone froze it on purpose; unpause it by hand"
    assert start(SINGLE, snap(recorded("paused", "web"))).refused == plan.refused


def test_dead_or_removing_is_refused() -> None:
    assert restart(SINGLE, snap(recorded("exited", "web", Status="removing"))).refused == "web is removing"


# --------------------------------------------------------------------------- targets


def test_no_target_is_refused() -> None:
    plan = restart(Target(check="api-http"), {"containers": []})
    assert plan.refused is not None
    assert plan.refused.startswith("no target")
    assert plan.summary.startswith("will not restart check api-http: no target")


def test_swarm_target_is_refused() -> None:
    plan = restart(Target(swarm_service="web"), {"containers": []})
    assert plan.refused is not None
    assert "Swarm" in plan.refused


def test_no_container_matched_is_refused() -> None:
    assert restart(SINGLE, snap_empty()).refused == "no container matched"
    assert start(GROUP, snap_empty()).refused == "no container matched"


def snap_empty() -> dict[str, Any]:
    return build_snapshot([], 0.0, {}, None)


def test_docker_error_during_inspect_is_a_refusal() -> None:
    plan = restart(SINGLE, {"error": "cannot reach Docker at unix:///x.sock: no such socket"})
    assert plan.refused == "cannot inspect it: cannot reach Docker at unix:///x.sock: no such socket"


# --------------------------------------------------------------------------- groups


def test_group_restarts_only_failing_replicas_and_lists_the_rest() -> None:
    snapshot = snap(recorded("running", "shop-web-1"), recorded("exited", "shop-web-2"),
                    recorded("unhealthy", "shop-web-3"), recorded("restarting", "shop-web-4"))
    plan = restart(GROUP, snapshot)
    assert plan.changes
    assert [c["name"] for c in plan.data["containers"]] == ["shop-web-2", "shop-web-3"]
    assert plan.data["left_alone"] == [
        {"name": "shop-web-1", "reason": "is running and not unhealthy"},
        {"name": "shop-web-4", "reason": "Docker's restart policy always is already restarting shop-web-4 "
                                         "(restart 1); leave it to Docker"},
    ]
    assert plan.summary.startswith("restart shop-web-2, shop-web-3 (left alone: shop-web-1: is running")


def test_group_all_healthy_is_nothing_to_do() -> None:
    plan = restart(GROUP, snap(recorded("running", "shop-web-1"), recorded("running", "shop-web-2")))
    assert not plan.changes
    assert plan.refused is None
    assert plan.summary == ("nothing to do for compose service shop/web: shop-web-1 is running and not "
                            "unhealthy; shop-web-2 is running and not unhealthy")


def test_group_operator_stopped_replica_is_left_stopped() -> None:
    stops = {"shop-web-2": {"id": "x", "event": "stop", "at": 0.0}}
    snapshot = snap(recorded("exited", "shop-web-1"), recorded("stopped_by_hand", "shop-web-2"), stops=stops)
    plan = start(GROUP, snapshot)
    assert [c["name"] for c in plan.data["containers"]] == ["shop-web-1"]
    assert "stopped by an operator" in plan.data["left_alone"][0]["reason"]


def test_group_where_every_failing_replica_is_protected_is_refused() -> None:
    stops = {"shop-web-2": {"id": "x", "event": "stop", "at": 0.0}}
    snapshot = snap(recorded("running", "shop-web-1"), recorded("stopped_by_hand", "shop-web-2"),
                    recorded("restarting", "shop-web-3"), stops=stops)
    plan = restart(GROUP, snapshot)
    assert plan.refused is not None
    assert "shop-web-2 was stopped by an operator" in plan.refused
    assert "already restarting shop-web-3" in plan.refused


# --------------------------------------------------------------------------- start


def test_start_exited_container() -> None:
    attrs = recorded("exited", "web")
    plan = start(SINGLE, snap(attrs))
    assert plan.changes
    assert plan.steps == ("start web (it is exited, exit code 2)",)
    assert plan.data["containers"] == [{"id": attrs["Id"], "name": "web", "running": False}]


def test_start_running_container_is_nothing_to_do() -> None:
    plan = start(SINGLE, snap(recorded("running", "web")))
    assert not plan.changes
    assert plan.refused is None
    assert plan.summary == "nothing to do for container web: web is already running"


def test_start_created_container() -> None:
    assert start(SINGLE, snap(recorded("exited", "web", Status="created"))).changes


def test_plans_are_pure() -> None:
    snapshot = snap(recorded("running", "shop-web-1"), recorded("exited", "shop-web-2"))
    before = json.dumps(snapshot, sort_keys=True)
    action = Restart(RestartParams())
    assert action.plan(GROUP, snapshot) == action.plan(GROUP, snapshot)
    assert json.dumps(snapshot, sort_keys=True) == before
