"""Guardrail policies (``agent.core.guardrails``), maintenance windows and their config: pure, fake clock.

Every policy is shown allowing and blocking with the sentence a person reads; the
decision order is pinned; settings errors are checked through ``parse_config`` with
their paths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config.model import parse_config
from agent.config.sections import GuardrailSettings, MaintenanceWindow
from agent.config.windows import validate_cron
from agent.core.guardrails import (
    POLICIES,
    Admission,
    Decision,
    Dependency,
    HistoryNeed,
    Member,
    PastAction,
    RunningAction,
    Silence,
    Situation,
    admit,
    backoff_delay,
    check_groups,
    counters_reset,
    gave_up,
    history_need,
    members_of,
    select_history,
)
from agent.core.state import CheckState, Health
from agent.core.windows import active_windows, covering, last_start
from agent.kernel.errors import ConfigError
from agent.kernel.results import Status
from agent.registry import spec_model
from remediations.base import Target

T0 = datetime(2026, 11, 18, 11, 0, tzinfo=UTC).timestamp()  # a Wednesday
WEB = "container web"
DEFAULT = GuardrailSettings()


def sit(**changes: Any) -> Situation:
    """A DOWN check whose step 1 (restart of container web) is up for admission at T0."""
    base: dict[str, Any] = {
        "now": T0, "check": "web-health", "status": Status.CRITICAL, "health": Health.DOWN,
        "action": "restart", "target": WEB, "runbook": "service-down",
    }
    return Situation(**(base | changes))


def cfg(**raw: Any) -> GuardrailSettings:
    return GuardrailSettings.model_validate(raw)


def decision(admission: Admission, policy: str) -> Decision:
    (found,) = [d for d in admission.decisions if d.policy == policy]
    return found


def only_block(admission: Admission) -> Decision:
    assert not admission.allowed
    (blocked,) = admission.blocked
    return blocked


def acted(*ago: float, target: str = WEB, action: str = "restart", dry_run: bool = False) -> tuple[PastAction, ...]:
    return tuple(PastAction(T0 - a, target, action, "ok", dry_run) for a in ago)


# --------------------------------------------------------------------------- order and the all-clear

ORDER = [
    "pause", "dry_run", "allowed_actions", "unknown_status", "flapping", "operator_stopped", "silence",
    "maintenance", "dependency", "blast_radius", "approval", "one_per_target", "max_concurrent",
    "global_budget", "target_budget", "cooldown", "backoff",
]


def test_policies_run_in_the_documented_order() -> None:
    assert [name for name, _ in POLICIES] == ORDER
    assert [d.policy for d in admit(DEFAULT, sit()).decisions] == ORDER


def test_a_plain_down_check_is_allowed_and_every_policy_says_why() -> None:
    admission = admit(DEFAULT, sit())
    assert admission.allowed
    assert not admission.give_up
    assert not admission.dry_run
    assert admission.reason == "allowed"
    assert admission.retry_at is None
    assert [(d.policy, d.reason) for d in admission.decisions] == [
        ("pause", "not paused"),
        ("dry_run", "live: the action will be applied"),
        ("allowed_actions", "restart is allowed (guardrails.allowed_actions is not set)"),
        ("unknown_status", "the last result of web-health is CRITICAL"),
        ("flapping", "web-health is not flapping (DOWN)"),
        ("operator_stopped", "container web was not stopped by an operator"),
        ("silence", "no active silence for web-health"),
        ("maintenance", "no maintenance window covers web-health now"),
        ("dependency", "web-health has no dependencies"),
        ("blast_radius", "container web shares no group with other checks"),
        ("approval", "step 1 (restart of container web) needs no approval"),
        ("one_per_target", "nothing else is running on container web"),
        ("max_concurrent", "0 of 2 concurrent actions running"),
        ("global_budget", "0 of 20 actions in the last hour"),
        ("target_budget", "0 of 3 actions on container web in the last 30m"),
        ("cooldown", "no earlier action on container web"),
        ("backoff", "attempt 1 on container web: no backoff"),
    ]


def test_every_policy_is_evaluated_even_after_a_block() -> None:
    admission = admit(DEFAULT, sit(paused=True, pause_reason="deploy", history=acted(10)))
    assert [d.policy for d in admission.blocked] == ["pause", "cooldown", "backoff"]
    assert len(admission.decisions) == len(ORDER)
    assert admission.reason.startswith("pause: paused: deploy; ")


def test_default_settings() -> None:
    s = DEFAULT
    assert s.dry_run is False
    assert s.allowed_actions is None
    p = s.per_target
    assert (p.budget, p.window, p.cooldown, p.reset_after) == (3, 1800.0, 120.0, 1800.0)
    assert (p.backoff.base, p.backoff.factor, p.backoff.max, p.backoff.jitter) == (30.0, 2.0, 600.0, 0.1)
    assert (s.global_.max_per_hour, s.global_.max_concurrent) == (20, 2)
    assert s.blast_radius.max_unhealthy == 0.5
    assert s.approval.expiry == 3600.0


# --------------------------------------------------------------------------- pause / dry-run / allow-list


def test_pause_blocks_with_its_reason() -> None:
    d = only_block(admit(DEFAULT, sit(paused=True, pause_reason="db failover in progress (alice)")))
    assert d.policy == "pause"
    assert d.reason == "paused: db failover in progress (alice); `paramedic resume` lets actions run again"
    assert d.retry_at is None


def test_pause_without_reason() -> None:
    assert only_block(admit(DEFAULT, sit(paused=True))).reason.startswith("paused: no reason given;")


def test_global_dry_run_marks_but_never_blocks() -> None:
    admission = admit(cfg(dry_run=True), sit())
    assert admission.allowed
    assert admission.dry_run
    assert decision(admission, "dry_run").reason == "dry-run (guardrails.dry_run): the plan is recorded, not applied"
    assert admission.reason == "allowed (dry-run: recorded, not applied)"


def test_runbook_dry_run_marks_but_never_blocks() -> None:
    admission = admit(DEFAULT, sit(runbook_dry_run=True))
    assert admission.allowed
    assert admission.dry_run
    assert decision(admission, "dry_run").reason == "dry-run (runbook service-down): the plan is recorded, not applied"


def test_dry_run_still_reports_what_would_block() -> None:
    admission = admit(cfg(dry_run=True), sit(status=Status.UNKNOWN))
    assert admission.dry_run
    assert not admission.allowed
    assert [d.policy for d in admission.blocked] == ["unknown_status"]


def test_allowed_actions_listed_and_unlisted() -> None:
    listed = admit(cfg(allowed_actions=["start", "restart"]), sit())
    assert decision(listed, "allowed_actions").reason == "restart is in guardrails.allowed_actions"
    d = only_block(admit(cfg(allowed_actions=["start", "scale"]), sit()))
    assert d.reason == "restart is not in guardrails.allowed_actions (start, scale); a person must act"
    assert d.escalate


def test_an_empty_allow_list_allows_nothing() -> None:
    d = only_block(admit(cfg(allowed_actions=[]), sit()))
    assert d.reason == "restart is not in guardrails.allowed_actions (none); a person must act"


# --------------------------------------------------------------------------- status, flapping, operator


def test_unknown_status_is_never_acted_on() -> None:
    d = only_block(admit(DEFAULT, sit(status=Status.UNKNOWN)))
    assert d.policy == "unknown_status"
    assert d.reason == (
        "the last result of web-health is UNKNOWN: paramedic could not tell whether it is broken, so it does not act"
    )


def test_ok_status_has_nothing_to_fix() -> None:
    d = only_block(admit(DEFAULT, sit(status=Status.OK)))
    assert d.reason == "the last result of web-health is OK: nothing to fix"


def test_warning_status_is_allowed() -> None:
    reason = decision(admit(DEFAULT, sit(status=Status.WARNING)), "unknown_status").reason
    assert reason == "the last result of web-health is WARNING"


def test_flapping_check_is_not_acted_on() -> None:
    d = only_block(admit(DEFAULT, sit(health=Health.FLAPPING)))
    assert d.policy == "flapping"
    assert d.reason == "web-health is flapping (its verdict keeps flipping): paramedic does not act until it settles"


def test_operator_stopped_target_stays_stopped() -> None:
    d = only_block(admit(DEFAULT, sit(operator_stopped=True, action="start")))
    assert d.policy == "operator_stopped"
    assert d.reason == "container web was stopped by an operator; it stays stopped until someone starts it"


# --------------------------------------------------------------------------- silence and maintenance


def test_active_silence_blocks_until_it_ends() -> None:
    silence = Silence("web-health", T0 + 4320, "db migration", "alice")
    d = only_block(admit(DEFAULT, sit(silences=(silence,))))
    assert d.policy == "silence"
    assert d.reason == "web-health is silenced by alice until 2026-11-18 12:12:00Z (in 1h12m): db migration"
    assert d.retry_at == T0 + 4320


def test_the_silence_ending_last_is_reported() -> None:
    silences = (Silence("web-health", T0 + 60), Silence("web-health", T0 + 600))
    d = only_block(admit(DEFAULT, sit(silences=silences)))
    assert d.reason == "web-health is silenced until 2026-11-18 11:10:00Z (in 10m)"
    assert d.retry_at == T0 + 600


def test_expired_or_foreign_silences_do_not_block() -> None:
    silences = (Silence("web-health", T0, "ended exactly now"), Silence("db", T0 + 3600, "other check"))
    admission = admit(DEFAULT, sit(silences=silences))
    assert admission.allowed
    assert decision(admission, "silence").reason == "no active silence for web-health"


def window(**raw: Any) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate(raw)


def test_active_maintenance_window_blocks_until_it_ends() -> None:
    windows = active_windows([window(cron="0 10 * * *", duration="2h", reason="weekly patching")], T0)
    d = only_block(admit(DEFAULT, sit(maintenance=windows)))
    assert d.policy == "maintenance"
    assert d.reason == (
        "in maintenance window maintenance[0] (0 10 * * * for 2h, UTC) until 2026-11-18 12:00:00Z (in 1h): "
        "weekly patching"
    )
    assert d.retry_at == T0 + 3600


def test_maintenance_window_scoped_by_check_or_tag() -> None:
    by_tag = active_windows([window(cron="0 10 * * *", duration="2h", tags=["db"])], T0)
    assert admit(DEFAULT, sit(maintenance=by_tag, check_tags=("app",))).allowed
    assert not admit(DEFAULT, sit(maintenance=by_tag, check_tags=("app", "db"))).allowed
    by_check = active_windows([window(cron="0 10 * * *", duration="2h", checks=["web-health"])], T0)
    assert not admit(DEFAULT, sit(maintenance=by_check)).allowed
    assert admit(DEFAULT, sit(maintenance=by_check, check="api-health")).allowed


def test_a_window_that_ended_does_not_block_even_if_passed_in() -> None:
    stale = active_windows([window(cron="0 10 * * *", duration="2h")], T0)
    assert admit(DEFAULT, sit(maintenance=stale, now=T0 + 3600)).allowed


# --------------------------------------------------------------------------- dependency


def test_a_down_dependency_makes_the_dependent_wait() -> None:
    d = only_block(admit(DEFAULT, sit(depends_on=(Dependency("db", Health.DOWN), Dependency("cache", Health.OK)))))
    assert d.policy == "dependency"
    assert d.reason == "waiting: web-health depends on db, which is DOWN; its own runbook goes first"
    assert d.retry_at is None
    assert not d.escalate


def test_several_down_dependencies_are_named() -> None:
    deps = (Dependency("db", Health.DOWN), Dependency("cache", Health.DOWN))
    assert only_block(admit(DEFAULT, sit(depends_on=deps))).reason == (
        "waiting: web-health depends on db, cache, which are DOWN; its own runbook goes first"
    )


def test_dependencies_that_are_not_down_allow() -> None:
    deps = (Dependency("db", Health.FAILING), Dependency("cache", Health.RECOVERING))
    admission = admit(DEFAULT, sit(depends_on=deps))
    assert admission.allowed
    assert decision(admission, "dependency").reason == "no dependency is DOWN: db (FAILING), cache (RECOVERING)"


# --------------------------------------------------------------------------- blast radius


def group(*health: Health, name: str = "compose:shop") -> tuple[Member, ...]:
    """Members of one group; the first is the target's own check."""
    members = [Member("web-health", Health.DOWN, frozenset({name}), WEB)]
    members += [Member(f"c{i}", h, frozenset({name})) for i, h in enumerate(health)]
    return tuple(members)


def test_no_target_blocks_and_escalates() -> None:
    for changes in ({"target": ""}, {"target": "nothing"}, {"selected": 0}):
        d = only_block(admit(DEFAULT, sit(**changes)))
        assert d.policy == "blast_radius"
        assert d.reason == "no target: the step selects nothing, and paramedic never acts on everything"
        assert d.escalate


def test_half_of_a_group_unhealthy_is_allowed() -> None:
    members = group(Health.DOWN, Health.OK, Health.OK)
    admission = admit(DEFAULT, sit(groups=frozenset({"compose:shop"}), members=members))
    assert admission.allowed
    reason = decision(admission, "blast_radius").reason
    assert reason == "2 of 4 in compose:shop unhealthy or being acted on (50% <= 50%)"


def test_more_than_half_of_a_group_unhealthy_blocks_and_escalates() -> None:
    members = group(Health.DOWN, Health.FAILING, Health.OK)
    d = only_block(admit(DEFAULT, sit(groups=frozenset({"compose:shop"}), members=members)))
    assert d.policy == "blast_radius"
    assert d.reason == (
        "3 of 4 in compose:shop unhealthy or being acted on (75% > 50%): acting on none of them; escalated"
    )
    assert d.escalate
    assert d.retry_at is None


def test_flapping_counts_as_unhealthy_and_recovering_does_not() -> None:
    groups = frozenset({"compose:shop"})
    assert not admit(DEFAULT, sit(groups=groups, members=group(Health.FLAPPING, Health.OK))).allowed
    assert admit(DEFAULT, sit(groups=groups, members=group(Health.RECOVERING, Health.OK))).allowed


def test_the_worst_group_is_reported() -> None:
    members = group(Health.OK, Health.OK, name="tag:app") + group(Health.DOWN, name="compose:shop")[1:]
    members = (Member("web-health", Health.DOWN, frozenset({"tag:app", "compose:shop"}), WEB), *members[1:])
    d = only_block(admit(DEFAULT, sit(groups=frozenset({"tag:app", "compose:shop"}), members=members)))
    assert d.reason.startswith("2 of 2 in compose:shop")


def test_a_group_of_one_is_exempt() -> None:
    admission = admit(DEFAULT, sit(groups=frozenset({"tag:app"}), members=group(name="tag:app")))
    assert decision(admission, "blast_radius").reason == "container web shares no group with other checks"
    assert admission.allowed


def test_checks_of_the_same_target_count_once() -> None:
    members = (
        Member("web-health", Health.DOWN, frozenset({"tag:app"}), WEB),
        Member("web-container", Health.DOWN, frozenset({"tag:app"}), WEB),
        Member("api", Health.OK, frozenset({"tag:app"})),
    )
    admission = admit(DEFAULT, sit(groups=frozenset({"tag:app"}), members=members))
    assert decision(admission, "blast_radius").reason == "1 of 2 in tag:app unhealthy or being acted on (50% <= 50%)"
    assert admission.allowed
    without_targets = tuple(Member(m.check, m.health, m.groups) for m in members)
    assert not admit(DEFAULT, sit(groups=frozenset({"tag:app"}), members=without_targets)).allowed


def test_a_member_being_acted_on_counts_as_touched() -> None:
    members = (Member("web-health", Health.DOWN, frozenset({"g"}), WEB),
               Member("api", Health.OK, frozenset({"g"}), "container api"))
    running = (RunningAction("container api", "restart", T0 - 5),)
    d = only_block(admit(DEFAULT, sit(groups=frozenset({"g"}), members=members, running=running)))
    assert d.reason.startswith("2 of 2 in g unhealthy or being acted on (100% > 50%)")


def test_max_unhealthy_one_turns_the_blast_radius_off() -> None:
    members = group(Health.DOWN, Health.DOWN)
    situation = sit(groups=frozenset({"compose:shop"}), members=members)
    assert not admit(DEFAULT, situation).allowed
    assert admit(cfg(blast_radius={"max_unhealthy": 1.0}), situation).allowed


# --------------------------------------------------------------------------- approval

ROLLBACK = {"action": "rollback", "step": 2, "needs_approval": True}


def test_a_step_needing_approval_asks_for_it() -> None:
    admission = admit(DEFAULT, sit(**ROLLBACK))
    d = only_block(admission)
    assert d.policy == "approval"
    assert d.reason == (
        "step 3 (rollback of container web) needs approval: a request is made for `paramedic approve`; "
        "it expires after 1h"
    )
    assert admission.request_approval
    assert not admission.escalate


def test_no_approval_request_while_something_earlier_blocks() -> None:
    assert not admit(DEFAULT, sit(**ROLLBACK, paused=True)).request_approval
    assert not admit(DEFAULT, sit(**ROLLBACK, silences=(Silence("web-health", T0 + 60),))).request_approval


def test_an_approval_request_is_made_even_while_waiting_for_a_cooldown() -> None:
    admission = admit(DEFAULT, sit(**ROLLBACK, history=acted(60)))
    assert [d.policy for d in admission.blocked] == ["approval", "cooldown"]
    assert admission.request_approval


def test_pending_approval_waits_and_says_when_it_expires() -> None:
    admission = admit(DEFAULT, sit(**ROLLBACK, approval="pending", approval_requested_at=T0 - 600))
    d = only_block(admission)
    assert d.reason == (
        "step 3 (rollback of container web) waits for a person: `paramedic approve` or `paramedic reject` "
        "since 2026-11-18 10:50:00Z; it expires in 50m"
    )
    assert not admission.request_approval


def test_pending_approval_expires_and_escalates() -> None:
    for changes in ({"approval": "pending", "approval_requested_at": T0 - 3600}, {"approval": "expired"}):
        admission = admit(DEFAULT, sit(**ROLLBACK, **changes))
        d = only_block(admission)
        assert d.reason == (
            "the approval request for step 3 (rollback of container web) expired after 1h without a decision; "
            "escalated"
        )
        assert admission.escalate
        assert not admission.request_approval


def test_approval_expiry_is_a_setting() -> None:
    pending = sit(**ROLLBACK, approval="pending", approval_requested_at=T0 - 600)
    assert "expired after 5m" in only_block(admit(cfg(approval={"expiry": "5m"}), pending)).reason


def test_approved_step_runs_and_rejected_step_escalates() -> None:
    approved = admit(DEFAULT, sit(**ROLLBACK, approval="approved", approval_by="alice"))
    assert approved.allowed
    assert decision(approved, "approval").reason == "step 3 (rollback of container web) was approved by alice"
    rejected = admit(DEFAULT, sit(**ROLLBACK, approval="rejected", approval_by="bob"))
    assert only_block(rejected).reason == "step 3 (rollback of container web) was rejected by bob; escalated"
    assert rejected.escalate


# --------------------------------------------------------------------------- concurrency


def test_one_action_per_target_at_a_time() -> None:
    d = only_block(admit(DEFAULT, sit(running=(RunningAction(WEB, "restart", T0 - 12),))))
    assert d.policy == "one_per_target"
    assert d.reason == "a restart of container web is already running (started 12s ago)"


def test_max_concurrent_actions() -> None:
    running = (RunningAction("container a", "restart", T0 - 3), RunningAction("container b", "scale", T0 - 1))
    d = only_block(admit(DEFAULT, sit(running=running)))
    assert d.policy == "max_concurrent"
    assert d.reason == "2 actions are already running (limit 2)"
    one = admit(DEFAULT, sit(running=running[:1]))
    assert decision(one, "max_concurrent").reason == "1 of 2 concurrent actions running"
    assert one.allowed


# --------------------------------------------------------------------------- budgets


def test_global_budget_per_hour() -> None:
    history = tuple(PastAction(T0 - 3500 + 10 * i, f"container t{i}", "restart") for i in range(20))
    d = only_block(admit(DEFAULT, sit(history=history)))
    assert d.policy == "global_budget"
    assert d.reason == "global budget: 20 actions in the last hour (limit 20); next allowed in 1m40s"
    assert d.retry_at == T0 + 100
    assert admit(DEFAULT, sit(history=history[1:])).allowed


def test_dry_run_actions_never_spend_a_live_budget_but_count_for_a_dry_run() -> None:
    history = tuple(PastAction(T0 - 3500 + 10 * i, f"container t{i}", "restart", dry_run=True) for i in range(20))
    assert admit(DEFAULT, sit(history=history)).allowed
    dry = admit(cfg(dry_run=True), sit(history=history))
    assert [d.policy for d in dry.blocked] == ["global_budget"]


def test_budget_spent_since_the_last_reset_gives_up_and_escalates() -> None:
    admission = admit(DEFAULT, sit(history=acted(600, 400, 200)))
    d = only_block(admission)
    assert d.policy == "target_budget"
    assert d.reason == (
        "given up: 3 actions on container web in 30m (the last at 2026-11-18 10:56:40Z); escalated; "
        "it is retried after 30m healthy"
    )
    assert admission.give_up
    assert admission.escalate
    assert d.retry_at is None


def test_given_up_sticks_after_the_window_until_a_healthy_reset() -> None:
    later = T0 + 3 * 3600
    assert admit(DEFAULT, sit(now=later, history=acted(600, 400, 200))).give_up
    reset = admit(DEFAULT, sit(now=later, history=acted(600, 400, 200), reset_at=T0 - 100))
    assert reset.allowed
    assert not reset.give_up


def test_a_spent_window_before_the_reset_waits_without_giving_up() -> None:
    admission = admit(DEFAULT, sit(history=acted(1200, 900, 600), reset_at=T0 - 300))
    d = only_block(admission)
    assert d.reason == "budget: 3 actions on container web in the last 30m (limit 3); next allowed in 10m"
    assert d.retry_at == T0 + 600
    assert not admission.give_up


def test_actions_spread_wider_than_the_window_do_not_give_up() -> None:
    admission = admit(DEFAULT, sit(history=acted(7200, 3600, 200)))
    assert admission.allowed
    assert decision(admission, "target_budget").reason == "1 of 3 actions on container web in the last 30m"


def test_other_targets_actions_do_not_spend_this_targets_budget() -> None:
    assert admit(DEFAULT, sit(history=acted(600, 400, 200, target="container db"))).allowed


def test_gave_up_finds_the_action_that_spent_the_budget() -> None:
    actions = [PastAction(t, WEB, "restart") for t in (0.0, 1000.0, 1900.0, 2500.0)]
    assert gave_up(actions, 3, 1800.0) == actions[3]  # 1000..2500 is within 30m; 0..1900 is not
    assert gave_up(actions[:3], 3, 1800.0) is None
    assert gave_up(actions[:3], 3, 1900.1) == actions[2]
    assert gave_up([], 1, 60.0) is None


# --------------------------------------------------------------------------- cooldown and backoff


def test_cooldown_after_an_action_on_the_target() -> None:
    d = only_block(admit(DEFAULT, sit(history=acted(45))))
    assert d.policy == "cooldown"
    assert d.reason == "cooldown: last restart of container web 45s ago; next allowed in 1m15s"
    assert d.retry_at == T0 + 75


def test_cooldown_over() -> None:
    admission = admit(DEFAULT, sit(history=acted(300)))
    assert admission.allowed
    assert decision(admission, "cooldown").reason == "last restart of container web 5m ago (cooldown 2m)"


def test_backoff_grows_between_attempts() -> None:
    settings = cfg(per_target={"cooldown": 0, "backoff": {"jitter": 0}})
    d = only_block(admit(settings, sit(history=acted(100, 40))))
    assert d.policy == "backoff"
    assert d.reason == (
        "backoff: attempt 3 on container web waits 1m after the last (30s x 2^1, capped at 10m, jitter 0%); "
        "next allowed in 20s"
    )
    assert d.retry_at == T0 + 20
    allowed = admit(settings, sit(history=acted(100, 60)))
    assert allowed.allowed
    assert decision(allowed, "backoff").reason == "attempt 3 on container web: waited 1m of 1m"


def test_backoff_uses_the_jittered_delay() -> None:
    settings = cfg(per_target={"cooldown": 0})
    delay = backoff_delay(settings, WEB, 2)
    assert 54.0 <= delay <= 66.0
    assert delay != 60.0
    assert not admit(settings, sit(history=acted(100, delay - 0.001))).allowed
    assert admit(settings, sit(history=acted(100, delay + 0.001))).allowed
    d = only_block(admit(settings, sit(history=acted(100, 40))))
    assert d.retry_at == pytest.approx(T0 - 40 + delay)


def test_backoff_delay_is_deterministic_capped_and_jittered_within_bounds() -> None:
    settings = cfg(per_target={"backoff": {"base": "10s", "factor": 3, "max": "5m", "jitter": 0.2}})
    assert backoff_delay(settings, WEB, 0) == 0.0
    for attempts in range(1, 12):
        raw = min(300.0, 10.0 * 3 ** (attempts - 1))
        for target in ("container a", "container b", "compose service shop/web"):
            delay = backoff_delay(settings, target, attempts)
            assert raw * 0.8 <= delay <= raw * 1.2
            assert delay == backoff_delay(settings, target, attempts)
    spread = {backoff_delay(settings, f"container {i}", 1) for i in range(20)}
    assert len(spread) > 10  # targets do not retry in lockstep


def test_backoff_without_jitter_is_exact() -> None:
    settings = cfg(per_target={"backoff": {"jitter": 0}})
    assert [backoff_delay(settings, WEB, n) for n in range(1, 7)] == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0]


def test_backoff_attempts_restart_after_a_reset() -> None:
    settings = cfg(per_target={"cooldown": 0, "budget": 10})
    assert not admit(settings, sit(history=acted(100, 40))).allowed
    reset = admit(settings, sit(history=acted(100, 40), reset_at=T0 - 30))
    assert reset.allowed
    assert decision(reset, "backoff").reason == "attempt 1 on container web: no backoff"


# --------------------------------------------------------------------------- admission summary


def test_retry_at_is_when_every_block_lifts_or_none() -> None:
    silenced = sit(history=acted(45), silences=(Silence("web-health", T0 + 600),))
    assert admit(DEFAULT, silenced).retry_at == T0 + 600
    waiting_for_db = sit(history=acted(45), depends_on=(Dependency("db", Health.DOWN),))
    assert admit(DEFAULT, waiting_for_db).retry_at is None


def test_admission_as_dict_is_json_shaped() -> None:
    data = admit(DEFAULT, sit(history=acted(45))).as_dict()
    assert data["allowed"] is False
    assert data["retry_at"] == T0 + 75
    assert [d["policy"] for d in data["decisions"]] == ORDER
    assert data["decisions"][-2] == {
        "policy": "cooldown", "allowed": False, "escalate": False, "retry_at": T0 + 75,
        "reason": "cooldown: last restart of container web 45s ago; next allowed in 1m15s",
    }


def test_admit_is_pure() -> None:
    situation = sit(history=acted(45, 900), silences=(Silence("x", T0 + 1),))
    assert admit(DEFAULT, situation) == admit(DEFAULT, situation)


# --------------------------------------------------------------------------- helpers for the executor


def test_history_need_and_select_history() -> None:
    need = history_need(DEFAULT, T0, reset_at=T0 - 7200)
    assert need == HistoryNeed(T0 - 3600, T0 - 7200)
    actions = (*acted(9000, 5000, 100), *acted(5000, 3000, target="container db"))
    assert select_history(actions, need, WEB) == (*acted(5000, 100), *acted(3000, target="container db"))
    everything = history_need(cfg(per_target={"window": "2h"}), T0, None)
    assert everything == HistoryNeed(T0 - 7200, None)
    assert select_history(actions, everything, WEB) == actions


def test_counters_reset_after_a_healthy_period() -> None:
    assert counters_reset(CheckState("web", Health.OK, since=T0 - 1800), T0, DEFAULT)
    assert not counters_reset(CheckState("web", Health.OK, since=T0 - 1799), T0, DEFAULT)
    assert not counters_reset(CheckState("web", Health.DOWN, since=T0 - 9999), T0, DEFAULT)


def test_check_groups_and_members() -> None:
    container = spec_model("container").model_validate(
        {"name": "web", "type": "container", "compose": {"project": "shop", "service": "web"}, "tags": ["app"]}
    )
    labelled = spec_model("container").model_validate({"name": "workers", "type": "container", "labels": {"role": "w"}})
    tcp = spec_model("tcp").model_validate({"name": "db", "type": "tcp", "host": "127.0.0.1", "port": 5432})
    assert check_groups(container) == {"tag:app", "compose:shop", "service:shop/web"}
    assert check_groups(labelled) == {"labels:role=w"}
    assert check_groups(tcp) == frozenset()
    target = Target(check="db", compose_project="data", compose_service="pg", swarm_service="pgs")
    assert check_groups(tcp, target) == {"compose:data", "service:data/pg", "swarm:pgs"}
    states = {"web": CheckState("web", Health.DOWN), "db": CheckState("db", Health.OK, flapping=True)}
    assert members_of([container, tcp, labelled], states, {"web": "container web"}) == (
        Member("web", Health.DOWN, frozenset({"tag:app", "compose:shop", "service:shop/web"}), "container web"),
        Member("db", Health.FLAPPING, frozenset()),
        Member("workers", Health.OK, frozenset({"labels:role=w"})),
    )


# --------------------------------------------------------------------------- maintenance windows

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN).timestamp()


SUNDAY_2AM = {"cron": "0 2 * * SUN", "duration": "2h", "timezone": "Europe/Berlin", "reason": "db upgrade"}


@pytest.mark.parametrize(
    ("when", "active"),
    [
        ((2026, 11, 22, 1, 59, 59), False),
        ((2026, 11, 22, 2, 0, 0), True),  # t <= now
        ((2026, 11, 22, 3, 59, 59), True),
        ((2026, 11, 22, 4, 0, 0), False),  # now < t + duration
        ((2026, 11, 23, 2, 30, 0), False),  # a Monday
        ((2026, 7, 5, 3, 0, 0), True),  # summer time: still 02:00 local
    ],
)
def test_window_is_active_from_each_firing_for_its_duration(when: tuple[int, ...], active: bool) -> None:
    assert bool(active_windows([window(**SUNDAY_2AM)], berlin(*when))) is active


def test_active_window_reports_its_start_and_end() -> None:
    (found,) = active_windows([window(**SUNDAY_2AM)], berlin(2026, 11, 22, 3, 0))
    assert (found.index, found.started_at, found.ends_at) == (0, berlin(2026, 11, 22, 2, 0), berlin(2026, 11, 22, 4, 0))
    assert found.describe() == "maintenance[0] (0 2 * * SUN for 2h, Europe/Berlin)"


def test_a_firing_exactly_now_counts() -> None:
    assert last_start(window(**SUNDAY_2AM), berlin(2026, 11, 22, 2, 0)) == berlin(2026, 11, 22, 2, 0)
    assert last_start(window(**SUNDAY_2AM), berlin(2026, 11, 22, 1, 59)) == berlin(2026, 11, 15, 2, 0)


def test_duration_is_elapsed_time_across_spring_forward() -> None:
    # 2026-03-29: Berlin skips 02:00-03:00; the 02:00 firing happens at 03:00 CEST and lasts 2 real hours.
    w = window(**SUNDAY_2AM)
    assert last_start(w, berlin(2026, 3, 29, 3, 30)) == berlin(2026, 3, 29, 3, 0)
    assert active_windows([w], berlin(2026, 3, 29, 4, 59))
    assert not active_windows([w], berlin(2026, 3, 29, 5, 0))


def test_windows_longer_than_their_period_are_always_active() -> None:
    w = window(cron="@hourly", duration="90m")
    assert all(active_windows([w], T0 + k * 997.0) for k in range(20))


def test_several_windows_and_their_scope() -> None:
    windows = [window(cron="0 10 * * *", duration="2h", tags=["db"]), window(cron="0 3 * * *", duration="1h"),
               window(cron="30 10 * * WED", duration="1h", checks=["web-health"])]
    active = active_windows(windows, T0)
    assert [a.index for a in active] == [0, 2]
    assert [a.index for a in covering(active, "web-health", ("app",))] == [2]
    assert [a.index for a in covering(active, "db", ("db",))] == [0]


def test_validate_cron() -> None:
    assert validate_cron("0  2 * *   SUN") == "0 2 * * SUN"
    assert validate_cron("@daily") == "@daily"
    for bad, message in [
        ("0 2 * * FUNDAY", "not a valid cron expression: '0 2 * * FUNDAY'"),
        ("0 2 * *", "cron must have 5 fields: minute hour day-of-month month day-of-week (got '0 2 * *')"),
        ("0 0 30 2 *", "cron expression '0 0 30 2 *' never fires"),
        ("@fortnightly", "unknown cron alias '@fortnightly'"),
    ]:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
            validate_cron(bad)


# --------------------------------------------------------------------------- config sections

CHECKS = """checks:
  - {name: web, type: tcp, host: 127.0.0.1, port: 80, tags: [app]}
  - {name: db, type: tcp, host: 127.0.0.1, port: 5432}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml", env={})
    return info.value.problems


def test_config_without_guardrails_gets_the_defaults() -> None:
    config = parse_config(CHECKS, "test.yaml", env={})
    assert config.guardrails == GuardrailSettings()
    assert config.maintenance == ()
    assert config.checks[0].depends_on == ()


def test_full_guardrails_section_parses() -> None:
    config = parse_config(CHECKS + """
guardrails:
  dry_run: true
  allowed_actions: [restart, start]
  per_target: {budget: 5, window: 1h, cooldown: 30s, reset_after: 15m,
               backoff: {base: 10s, factor: 3, max: 5m, jitter: 0}}
  global: {max_per_hour: 50, max_concurrent: 4}
  blast_radius: {max_unhealthy: 0.34}
  approval: {expiry: 30m}
maintenance:
  - {cron: "0 2 * * SUN", duration: 2h, timezone: Europe/Berlin, tags: [app], reason: weekly}
runbooks:
  - {name: rb, match: {checks: [web]}, dry_run: true, steps: [{action: restart}]}
""", "test.yaml", env={})
    g = config.guardrails
    assert g.dry_run
    assert g.allowed_actions == ("restart", "start")
    assert (g.per_target.budget, g.per_target.window, g.per_target.cooldown, g.per_target.reset_after) == (
        5, 3600.0, 30.0, 900.0)
    assert g.per_target.backoff.model_dump() == {"base": "10s", "factor": 3.0, "max": "5m", "jitter": 0.0}
    assert (g.global_.max_per_hour, g.global_.max_concurrent) == (50, 4)
    assert g.blast_radius.max_unhealthy == 0.34
    assert g.approval.expiry == 1800.0
    assert config.maintenance[0].timezone == "Europe/Berlin"
    assert config.maintenance[0].duration == 7200.0
    assert config.runbooks[0].dry_run


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("guardrails: {dry_run: maybe}",
         "guardrails.dry_run: input should be a valid boolean, unable to interpret input"),
        ("guardrails: {per_target: {budget: 0}}",
         "guardrails.per_target.budget: input should be greater than or equal to 1"),
        ("guardrails: {per_target: {window: 0}}", "guardrails.per_target.window: window must be greater than 0"),
        ("guardrails: {per_target: {cooldown: soon}}",
         "guardrails.per_target.cooldown: input should be a valid duration like 500ms, 10s, 5m, 1h (got 'soon')"),
        ("guardrails: {per_target: {backoff: {base: 5m, max: 1m}}}",
         "guardrails.per_target.backoff: max must not be smaller than base"),
        ("guardrails: {per_target: {backoff: {jitter: 1}}}",
         "guardrails.per_target.backoff.jitter: input should be less than 1"),
        ("guardrails: {global: {max_concurent: 3}}", "guardrails.global.max_concurent: unknown key"),
        ("guardrails: {global: {max_per_hour: 0}}",
         "guardrails.global.max_per_hour: input should be greater than or equal to 1"),
        ("guardrails: {blast_radius: {max_unhealthy: 1.5}}",
         "guardrails.blast_radius.max_unhealthy: input should be less than or equal to 1"),
        ("guardrails: {approval: {expiry: -1}}",
         "guardrails.approval.expiry: input should be a valid duration, not negative"),
        ("guardrails: {allowed_actions: [restart, restrat]}",
         "guardrails.allowed_actions[1]: unknown action 'restrat' (known: "),
        ("guardrails: {paused: true}", "guardrails.paused: unknown key"),
        ("maintenance: [{cron: '0 2 * * FUNDAY', duration: 1h}]",
         "maintenance[0].cron: not a valid cron expression: '0 2 * * FUNDAY'"),
        ("maintenance: [{cron: '0 2 * * *', duration: 0}]", "maintenance[0].duration: duration must be greater than 0"),
        ("maintenance: [{cron: '0 2 * * *'}]", "maintenance[0].duration: field required"),
        ("maintenance: [{cron: '0 2 * * *', duration: 1h, timezone: Europe/Berln}]",
         "maintenance[0].timezone: unknown timezone 'Europe/Berln' (use an IANA name such as Europe/Berlin or UTC)"),
        ("maintenance: [{cron: '0 2 * * *', duration: 1h, checks: [web, ghost]}]",
         "maintenance[0].checks[1]: no check named 'ghost'"),
        ("runbooks: [{name: rb, match: {}, dry_run: sometimes}]",
         "runbooks[0].dry_run: input should be a valid boolean, unable to interpret input"),
    ],
)
def test_settings_errors_have_paths(section: str, expected: str) -> None:
    (problem,) = problems(CHECKS + section + "\n")
    assert problem.startswith(expected), problem


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ({"web": ["ghost"]}, ["checks[0].depends_on[0]: no check named 'ghost'"]),
        ({"web": ["web"]}, ["checks[0].depends_on[0]: a check cannot depend on itself"]),
        ({"web": ["db"], "db": ["web"]}, ["checks[0].depends_on: dependency cycle web -> db -> web"]),
        ({"db": ["cache"], "cache": ["web"], "web": ["db"]},
         ["checks[0].depends_on: dependency cycle web -> db -> cache -> web"]),
        ({"web": ["db", "cache"], "cache": ["db"]}, []),  # a diamond is not a cycle
    ],
)
def test_depends_on_names_existing_checks_without_cycles(deps: dict[str, list[str]], expected: list[str]) -> None:
    lines = ["checks:"]
    for name in ("web", "db", "cache"):
        lines.append(f"  - {{name: {name}, type: tcp, host: 127.0.0.1, port: 1, depends_on: {deps.get(name, [])}}}")
    text = "\n".join(lines) + "\n"
    if expected:
        assert problems(text) == expected
    else:
        config = parse_config(text, "test.yaml", env={})
        assert config.check("web").depends_on == ("db", "cache")
