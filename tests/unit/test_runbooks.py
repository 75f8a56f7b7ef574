"""Runbook matching and the step ladder (``agent.core.runbooks``): pure, with explicit times."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config.model import Runbook
from agent.core.runbooks import (
    Escalate,
    LadderPosition,
    StepChoice,
    after_health,
    escalated,
    match,
    next_step,
    recovered,
    start,
    took_step,
)
from agent.core.state import CheckState, Health
from agent.kernel.results import Status
from agent.registry import spec_model
from checks.base import CheckSpec

T0 = 1_800_000_000.0
CRIT, WARN, OK, UNK = Status.CRITICAL, Status.WARNING, Status.OK, Status.UNKNOWN


def check(name: str = "web", type_: str = "tcp", tags: tuple[str, ...] = ()) -> CheckSpec:
    raw: dict[str, Any] = {"name": name, "type": type_, "tags": list(tags)}
    if type_ == "tcp":
        raw |= {"host": "127.0.0.1", "port": 80}
    elif type_ == "container":
        raw |= {"container": name}
    return spec_model(type_).model_validate(raw)


def book(name: str = "rb", steps: tuple[dict[str, Any], ...] = (), **match: Any) -> Runbook:
    return Runbook.model_validate({"name": name, "match": match, "steps": list(steps)})


# --------------------------------------------------------------------------- match


def test_first_matching_runbook_wins_in_config_order() -> None:
    books = [book("narrow", checks=["db"]), book("web-a", checks=["web"]), book("web-b", checks=["web"])]
    found = match(books, check("web"), CRIT)
    assert found is not None
    assert found.name == "web-a"


def test_no_runbook_matches_returns_none() -> None:
    assert match([book("db", checks=["db"])], check("web"), CRIT) is None
    assert match([], check("web"), CRIT) is None


def test_empty_match_matches_any_critical_check() -> None:
    found = match([book("catch-all")], check("anything", tags=("x",)), CRIT)
    assert found is not None


@pytest.mark.parametrize(
    ("rule", "spec", "expected"),
    [
        ({"checks": ["web", "api"]}, check("api"), True),
        ({"checks": ["web"]}, check("api"), False),
        ({"tags": ["app", "edge"]}, check("web", tags=("edge",)), True),  # any tag
        ({"tags": ["app"]}, check("web", tags=("db",)), False),
        ({"tags": ["app"]}, check("web"), False),
        ({"types": ["container"]}, check("web", type_="container"), True),
        ({"types": ["container"]}, check("web"), False),
        ({"checks": ["web"], "tags": ["app"]}, check("web", tags=("db",)), False),  # all fields must match
        ({"checks": ["web"], "tags": ["app"], "types": ["tcp"]}, check("web", tags=("app",)), True),
    ],
)
def test_each_match_field(rule: dict[str, Any], spec: CheckSpec, expected: bool) -> None:
    assert (match([book(**rule)], spec, CRIT) is not None) is expected


def test_statuses_default_to_critical_only() -> None:
    books = [book("crit")]
    assert match(books, check(), CRIT) is not None
    assert match(books, check(), WARN) is None
    assert match(books, check(), UNK) is None


def test_statuses_can_name_warning() -> None:
    books = [book("warn", statuses=["WARNING"]), book("crit")]
    assert match(books, check(), WARN).name == "warn"  # type: ignore[union-attr]
    assert match(books, check(), CRIT).name == "crit"  # type: ignore[union-attr]


def test_empty_statuses_match_unknown_but_ok_never_matches() -> None:
    books = [book("any", statuses=[])]
    assert match(books, check(), UNK) is not None
    assert match(books, check(), OK) is None


def test_alert_labels_must_be_a_subset_of_the_alerts_labels() -> None:
    books = [book("alert", alert_labels={"alertname": "HighErrorRate", "severity": "page"})]
    labels = {"alertname": "HighErrorRate", "severity": "page", "job": "lab"}
    assert match(books, check(), CRIT, labels) is not None
    assert match(books, check(), CRIT, {"alertname": "HighErrorRate"}) is None
    assert match(books, check(), CRIT, {"alertname": "Other", "severity": "page"}) is None
    assert match(books, check(), CRIT, None) is None


def test_runbook_without_alert_labels_matches_results_with_or_without_labels() -> None:
    books = [book("plain")]
    assert match(books, check(), CRIT, {"alertname": "X"}) is not None
    assert match(books, check(), CRIT) is not None


# --------------------------------------------------------------------------- ladder

LADDER = book(
    "service-down",
    steps=(
        {"action": "restart", "params": {"mode": "graceful"}},
        {"action": "restart", "params": {"mode": "force"}},
        {"action": "rollback", "on_failure": "escalate"},
    ),
    checks=["web"],
)


def choose(position: LadderPosition, ok: bool | None) -> StepChoice:
    choice = next_step(LADDER, position, ok)
    assert isinstance(choice, StepChoice), choice
    return choice


def test_a_fresh_position_takes_the_first_step() -> None:
    choice = choose(start(LADDER, "container web"), None)
    assert (choice.index, choice.number, choice.step.action) == (0, 1, "restart")
    assert choice.reason == "step 1 (restart) is the first step of runbook service-down"


def test_the_first_step_is_chosen_whatever_the_verification_argument() -> None:
    fresh = start(LADDER, "container web")
    assert choose(fresh, False).index == 0
    assert choose(fresh, True).index == 0


def test_full_ladder_walk_then_escalation() -> None:
    pos = start(LADDER, "container web")
    first = choose(pos, None)
    pos = took_step(pos, first, T0)
    assert pos == LadderPosition("service-down", "container web", next_step=1, attempts=1, last_step_at=T0)

    second = choose(pos, False)
    assert second.index == 1
    assert second.step.params == {"mode": "force"}
    assert second.reason == "step 1 (restart) did not verify; trying step 2 (restart)"
    pos = took_step(pos, second, T0 + 60)

    third = choose(pos, False)
    assert third.step.action == "rollback"
    pos = took_step(pos, third, T0 + 120)
    assert (pos.next_step, pos.attempts, pos.last_step_at) == (3, 3, T0 + 120)

    final = next_step(LADDER, pos, False)
    assert final == Escalate("step 3 (rollback) did not verify; its on_failure is escalate")
    pos = escalated(pos)
    assert pos.exhausted
    assert next_step(LADDER, pos, None) == Escalate(
        "runbook service-down already escalated for container web; waiting for it to recover"
    )


def test_on_failure_escalate_in_the_middle_stops_the_ladder() -> None:
    rb = book("x", steps=({"action": "restart", "on_failure": "escalate"}, {"action": "rollback"}))
    pos = took_step(start(rb, "t"), StepChoice(0, rb.steps[0], ""), T0)
    assert next_step(rb, pos, False) == Escalate("step 1 (restart) did not verify; its on_failure is escalate")


def test_last_step_with_on_failure_next_escalates_for_lack_of_steps() -> None:
    rb = book("x", steps=({"action": "restart"},))
    pos = took_step(start(rb, "t"), StepChoice(0, rb.steps[0], ""), T0)
    assert next_step(rb, pos, False) == Escalate("step 1 (restart) did not verify and it is the last step of runbook x")


def test_a_fix_that_did_not_hold_climbs_like_a_failure() -> None:
    pos = took_step(start(LADDER, "t"), choose(start(LADDER, "t"), None), T0)
    choice = choose(pos, True)
    assert choice.index == 1
    assert choice.reason == "step 1 (restart) verified but did not hold; trying step 2 (restart)"


def test_unknown_outcome_repeats_the_position_it_points_at() -> None:
    pos = took_step(start(LADDER, "t"), choose(start(LADDER, "t"), None), T0)
    choice = choose(pos, None)
    assert choice.index == 1
    assert choice.reason == "step 2 (restart) is next on runbook service-down"
    assert choose(pos, None) == choice  # pure: asking twice gives the same answer


def test_runbook_without_steps_escalates() -> None:
    assert next_step(book("empty"), start(book("empty"), "t"), None) == Escalate("runbook empty has no steps")


def test_a_position_for_another_runbook_starts_fresh() -> None:
    stale = LadderPosition("old-name", "t", next_step=2, attempts=2, exhausted=True)
    assert choose(stale, False).index == 0


def test_a_ladder_that_shrank_under_the_position_escalates() -> None:
    pos = LadderPosition("service-down", "t", next_step=5, attempts=5)
    assert isinstance(next_step(LADDER, pos, None), Escalate)
    assert isinstance(next_step(LADDER, pos, False), Escalate)


# --------------------------------------------------------------------------- reset after recovery


def state(health: Health, since: float, flapping: bool = False) -> CheckState:
    return CheckState("web", health=health, since=since, flapping=flapping)


def test_recovered_needs_ok_for_the_whole_period() -> None:
    assert recovered(state(Health.OK, T0), T0 + 1800, 1800)
    assert not recovered(state(Health.OK, T0), T0 + 1799, 1800)
    assert not recovered(state(Health.RECOVERING, T0), T0 + 9999, 1800)
    assert not recovered(state(Health.DOWN, T0), T0 + 9999, 1800)
    assert not recovered(state(Health.OK, T0, flapping=True), T0 + 9999, 1800)


def test_after_health_resets_the_ladder_only_after_a_healthy_period() -> None:
    pos = escalated(LadderPosition("service-down", "t", next_step=3, attempts=3, last_step_at=T0))
    assert after_health(pos, state(Health.OK, T0 + 60), T0 + 600, 1800) is pos
    assert after_health(pos, state(Health.DOWN, T0 + 60), T0 + 9000, 1800) is pos
    fresh = after_health(pos, state(Health.OK, T0 + 60), T0 + 60 + 1800, 1800)
    assert fresh == LadderPosition("service-down", "t")
    assert choose(fresh, None).index == 0
