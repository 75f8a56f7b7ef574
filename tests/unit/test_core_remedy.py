"""The runbook engine's decisions (``agent.core.remedy``): the ladder, de-duplication of blocks,
escalate-once, approval and reset rules, pure, with explicit times. No Docker, no store: the
guardrails' verdicts come from the real :func:`agent.core.guardrails.admit` over small situations.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.config.model import Runbook, parse_config
from agent.config.sections import GuardrailSettings
from agent.core import guardrails
from agent.core.remedy import (
    MOVES_LADDER,
    Act,
    AskApproval,
    Block,
    Decision,
    Escalation,
    Ladder,
    LadderKey,
    Nothing,
    Reset,
    Situation,
    after_step,
    block_key,
    choose,
    decide,
    escalate_once,
    last_block,
    resets,
    trigger,
)
from agent.core.runbooks import Escalate, LadderPosition, StepChoice
from agent.core.state import CheckState, Health
from agent.kernel.results import Status

T0 = 1_800_000_000.0
WEB = "container web"
KEY: LadderKey = ("service-down", WEB)
DEFAULT = GuardrailSettings()
HOUR = 3600.0


# --------------------------------------------------------------------------- builders


def book(*steps: dict[str, Any], name: str = "service-down", checks: tuple[str, ...] = ("web",)) -> Runbook:
    """A runbook for container checks ``checks``, validated as the config loads it (which
    settles each step's approval); a step defaults to a restart climbing to the next on failure."""
    raw = [{"action": "restart"} | step for step in steps] or [{"action": "restart"}]
    doc = {"checks": [{"name": c, "type": "container", "container": c} for c in checks],
           "runbooks": [{"name": name, "match": {"checks": list(checks)}, "steps": raw}]}
    [found] = parse_config(json.dumps(doc), env={}).runbooks
    return found


LADDER3 = book({"action": "restart"}, {"action": "restart", "params": {"mode": "force"}}, {"action": "start"})


def state(health: Health = Health.DOWN, since: float = T0 - 60, flapping: bool = False) -> CheckState:
    return CheckState("web", health, failures=3, since=since, last_status=Status.CRITICAL, flapping=flapping)


def settings(**raw: Any) -> GuardrailSettings:
    return GuardrailSettings.model_validate(raw)


def admission(choice: StepChoice, now: float = T0, config: GuardrailSettings = DEFAULT,
              **changes: Any) -> guardrails.Admission:
    """The real guardrails' verdict on ``choice`` (a restart of container web) at ``now``."""
    base: dict[str, Any] = {
        "now": now, "check": "web", "status": Status.CRITICAL, "health": Health.DOWN, "action": choice.step.action,
        "target": WEB, "runbook": KEY[0], "step": choice.index, "needs_approval": choice.step.needs_approval,
    }
    return guardrails.admit(config, guardrails.Situation(**(base | changes)))


def restarted(ago: float, now: float = T0) -> tuple[guardrails.PastAction, ...]:
    """One live restart of container web ``ago`` seconds before ``now`` (in the journal)."""
    return (guardrails.PastAction(now - ago, WEB, "restart", "ok"),)


def step(index: int = 0, runbook: Runbook = LADDER3) -> StepChoice:
    return StepChoice(index, runbook.steps[index], "test")


def ladder(next_step: int = 0, attempts: int = 0, exhausted: bool = False, last_verified: bool | None = None,
           at: float | None = None) -> Ladder:
    return Ladder(LadderPosition(KEY[0], KEY[1], next_step, attempts, at, exhausted), last_verified)


def situation(choice: StepChoice | Escalate, judged: guardrails.Admission | None = None, **changes: Any) -> Situation:
    return Situation(KEY, choice, judged, **changes)


class Engine:
    """The driver's bookkeeping in memory: the persisted ladder and the last journaled block,
    moved only by what the pure functions return; ``journal`` is what the driver would write."""

    def __init__(self, runbook: Runbook = LADDER3, config: GuardrailSettings = DEFAULT) -> None:
        self.book, self.config = runbook, config
        self.ladder: Ladder | None = None
        self.block: str | None = None
        self.journal: list[str] = []
        self.escalations: list[str] = []

    def failing(self, now: float = T0, outcome: str = "failed", **guard: Any) -> Decision:
        """One CRITICAL result of the DOWN check: choose, judge, decide, carry out."""
        choice = choose(self.book, KEY, self.ladder)
        judged = admission(choice, now, self.config, **guard) if isinstance(choice, StepChoice) else None
        decision = decide(Situation(KEY, choice, judged, self.ladder, self.block))
        self.block = last_block(decision, self.block)
        escalation = decision.escalation if isinstance(decision, Block) else decision
        if isinstance(decision, Block) and decision.new:
            self.journal.append(f"blocked {decision.reasons}")
        if isinstance(decision, AskApproval):
            self.journal.append("pending-approval")
        if isinstance(escalation, Escalation):
            self.ladder = escalation.ladder
            self.escalations.append(escalation.reason)
        if isinstance(decision, Act):
            self.journal.append(f"step {decision.choice.number} {outcome}")
            self.ladder = after_step(KEY, self.ladder, decision.choice, outcome, now) or self.ladder
        return decision

    def recovered(self, now: float) -> None:
        for reset in resets("web", state(Health.OK, since=now - DEFAULT.per_target.reset_after), now, self.config,
                            [self.book], {KEY: self.ladder} if self.ladder else {}):
            self.ladder = reset.ladder or self.ladder


# --------------------------------------------------------------------------- which results start a decision


@pytest.mark.parametrize(("status", "check", "expected"), [
    (Status.CRITICAL, state(Health.DOWN), "remediate"),
    (Status.WARNING, state(Health.DOWN), None),  # DOWN, but this result is not a failure to act on
    (Status.UNKNOWN, state(Health.DOWN), None),
    (Status.CRITICAL, state(Health.FAILING), None),  # not yet past failure_threshold
    (Status.CRITICAL, state(Health.DOWN, flapping=True), "remediate"),  # the `flapping` guardrail says why not
    (Status.OK, state(Health.OK, flapping=True), None),  # not visibly OK: no reset
    (Status.OK, state(Health.RECOVERING), None),
    (Status.OK, state(Health.OK), "reset"),
    (Status.CRITICAL, None, None),  # no state yet
])
def test_only_a_critical_result_of_a_down_check_starts_a_remediation(
        status: Status, check: CheckState | None, expected: str | None) -> None:
    assert trigger(status, check) == expected


# --------------------------------------------------------------------------- the ladder


def test_first_failure_acts_on_step_1() -> None:
    choice = choose(LADDER3, KEY, None)
    assert isinstance(choice, StepChoice)
    assert choice.number == 1
    decision = decide(situation(choice, admission(choice)))
    assert decision == Act(choice, dry_run=False)


def test_a_step_that_did_not_verify_climbs_to_the_next_with_on_failure_next() -> None:
    engine = Engine()
    engine.failing(outcome="failed")
    assert engine.ladder == ladder(next_step=1, attempts=1, last_verified=False, at=T0)
    decision = engine.failing(T0 + HOUR, outcome="failed")
    assert isinstance(decision, Act)
    assert decision.choice.number == 2
    assert "did not verify; trying step 2" in decision.choice.reason


def test_a_step_that_verified_but_did_not_hold_climbs_too() -> None:
    engine = Engine()
    engine.failing(outcome="ok")
    assert engine.ladder is not None
    assert engine.ladder.last_verified is True
    decision = engine.failing(T0 + HOUR)
    assert isinstance(decision, Act)
    assert decision.choice.number == 2
    assert "verified but did not hold" in decision.choice.reason


def test_a_step_that_did_not_verify_escalates_with_on_failure_escalate() -> None:
    engine = Engine(book({"on_failure": "escalate"}, {"action": "start"}))
    engine.failing(outcome="failed")
    decision = engine.failing(T0 + HOUR)
    assert isinstance(decision, Escalation)
    assert "its on_failure is escalate" in decision.reason
    assert decision.ladder.position.exhausted
    assert engine.journal == ["step 1 failed"]  # step 2 was never taken


def test_an_exhausted_ladder_escalates_exactly_once() -> None:
    engine = Engine()
    for hour in range(3):
        assert isinstance(engine.failing(T0 + hour * HOUR), Act)
    assert engine.journal == ["step 1 failed", "step 2 failed", "step 3 failed"]
    for hour in range(3, 8):
        engine.failing(T0 + hour * HOUR)
    assert len(engine.escalations) == 1
    assert "it is the last step of runbook service-down" in engine.escalations[0]
    assert engine.journal == ["step 1 failed", "step 2 failed", "step 3 failed"]  # no more steps either
    decision = engine.failing(T0 + 9 * HOUR)
    assert isinstance(decision, Nothing)
    assert decision.reason.startswith("already escalated")


def test_an_escalation_keeps_the_ladder_and_its_last_verification() -> None:
    before = ladder(next_step=3, attempts=3, last_verified=False, at=T0)
    escalation = escalate_once(KEY, "why", before)
    assert escalation == Escalation(KEY, "why", ladder(next_step=3, attempts=3, exhausted=True,
                                                        last_verified=False, at=T0))
    assert escalate_once(KEY, "again", escalation.ladder) is None
    assert escalate_once(KEY, "no ladder yet", None) == Escalation(KEY, "no ladder yet", ladder(exhausted=True))


def test_a_runbook_without_steps_escalates_once() -> None:
    empty = Runbook.model_validate({"name": "service-down", "match": {"checks": ["web"]}, "steps": []})
    choice = choose(empty, KEY, None)
    assert isinstance(choice, Escalate)
    first = decide(situation(choice))
    assert isinstance(first, Escalation)
    assert first.reason == "runbook service-down has no steps"
    assert isinstance(decide(situation(choice, ladder=first.ladder)), Nothing)


@pytest.mark.parametrize("outcome", ["refused", "nothing"])
def test_a_refused_plan_moves_the_ladder_on_instead_of_being_replanned(outcome: str) -> None:
    engine = Engine(book({"action": "restart"}, {"action": "start"}))
    decisions = [engine.failing(T0 + n, outcome=outcome) for n in range(4)]
    assert engine.journal == [f"step 1 {outcome}", f"step 2 {outcome}"]  # then escalated: nothing more
    assert [type(d) for d in decisions] == [Act, Act, Escalation, Nothing]
    assert engine.escalations == ["step 2 (start) did not verify and it is the last step of runbook service-down"]


def test_a_refused_plan_with_on_failure_escalate_escalates() -> None:
    engine = Engine(book({"on_failure": "escalate"}, {"action": "start"}))
    engine.failing(outcome="refused")
    assert isinstance(engine.failing(T0 + 1), Escalation)
    assert engine.journal == ["step 1 refused"]


@pytest.mark.parametrize(("outcome", "verified"), [("ok", True), ("failed", False), ("refused", False),
                                                    ("nothing", False), ("dry-run", None)])
def test_the_ladder_moves_after_every_carried_out_step(outcome: str, verified: bool | None) -> None:
    assert outcome in MOVES_LADDER
    moved = after_step(KEY, None, step(0), outcome, T0)
    assert moved == ladder(next_step=1, attempts=1, last_verified=verified, at=T0)
    again = after_step(KEY, moved, step(1), outcome, T0 + 5)
    assert again == ladder(next_step=2, attempts=2, last_verified=verified, at=T0 + 5)


@pytest.mark.parametrize("outcome", ["interrupted", "blocked", "pending-approval", "error"])
def test_other_outcomes_leave_the_ladder_where_it_is(outcome: str) -> None:
    assert after_step(KEY, ladder(next_step=1, attempts=1), step(1), outcome, T0) is None


def test_after_a_dry_run_the_next_rung_is_offered_without_judging_a_verification() -> None:
    engine = Engine()
    engine.failing(outcome="dry-run")
    decision = engine.failing(T0 + HOUR, outcome="dry-run")
    assert isinstance(decision, Act)
    assert decision.choice.number == 2
    assert decision.choice.reason == "step 2 (restart) is next on runbook service-down"


# --------------------------------------------------------------------------- dry-run


def test_a_dry_run_process_or_runbook_acts_in_dry_run() -> None:
    choice = step(0)
    assert decide(situation(choice, admission(choice), dry_run=True)) == Act(choice, dry_run=True)
    judged = admission(choice, runbook_dry_run=True)
    assert decide(situation(choice, judged)) == Act(choice, dry_run=True)
    judged = admission(choice, config=settings(dry_run=True))
    assert decide(situation(choice, judged)) == Act(choice, dry_run=True)


def test_a_dry_run_block_is_journaled_as_dry_run() -> None:
    choice = step(0)
    decision = decide(situation(choice, admission(choice, paused=True), dry_run=True))
    assert isinstance(decision, Block)
    assert decision.dry_run


# --------------------------------------------------------------------------- blocks and their de-duplication


def test_a_block_is_new_the_first_time_and_carries_its_policies() -> None:
    choice = step(0)
    decision = decide(situation(choice, admission(choice, paused=True, pause_reason="db migration")))
    assert decision == Block(choice, "pause", new=True, dry_run=False)
    assert last_block(decision, None) == "pause"


def test_the_same_block_is_not_journaled_twice_even_as_its_sentence_changes() -> None:
    engine = Engine()
    first = engine.failing(T0, history=restarted(45))
    second = engine.failing(T0 + 30, history=restarted(75, T0 + 30))
    assert isinstance(first, Block)
    assert isinstance(second, Block)
    assert first.new
    assert not second.new
    assert engine.journal == ["blocked cooldown"]
    assert engine.ladder is None  # a block moves no ladder


def test_a_change_of_blocking_policies_is_journaled() -> None:
    engine = Engine()
    engine.failing(paused=True)
    engine.failing(paused=True)
    engine.failing(paused=True, history=restarted(45))
    engine.failing(history=restarted(45))
    engine.failing(history=restarted(45))
    assert engine.journal == ["blocked pause", "blocked pause; cooldown", "blocked cooldown"]


def test_a_step_carried_out_forgets_the_last_block() -> None:
    engine = Engine()
    engine.failing(paused=True)
    engine.failing(T0 + 1, outcome="failed")
    assert engine.block is None
    engine.failing(T0 + 2, paused=True)
    assert engine.journal == ["blocked pause", "step 1 failed", "blocked pause"]


def test_what_is_remembered_after_each_kind_of_decision() -> None:
    choice = step(0)
    assert last_block(Act(choice, False), "pause") is None
    assert last_block(Block(choice, "cooldown", True, False), "pause") == "cooldown"
    assert last_block(Block(choice, "pause", False, False), "pause") == "pause"
    assert last_block(AskApproval(choice, False), "pause") == "pause"
    assert last_block(escalate_once(KEY, "why", None) or Nothing(""), "pause") == "pause"
    assert last_block(Nothing("already escalated"), None) is None


def test_a_block_is_recognised_by_its_policies_not_its_sentences() -> None:
    choice = step(0)
    judged = admission(choice, paused=True, history=restarted(45))
    assert block_key(judged) == "pause; cooldown"
    assert block_key(admission(choice)) == ""


def test_a_block_that_needs_a_person_escalates_once_when_new() -> None:
    engine = Engine(config=settings(allowed_actions=["start"]))
    first = engine.failing()
    assert isinstance(first, Block)
    assert first.escalation is not None
    assert "a person must act" in first.escalation.reason
    assert first.escalation.ladder.position.exhausted
    engine.failing(T0 + 1)
    engine.failing(T0 + 2)
    assert engine.journal == ["blocked allowed_actions"]
    assert len(engine.escalations) == 1


def test_a_new_block_needing_a_person_on_an_escalated_ladder_is_journaled_but_not_escalated_again() -> None:
    choice = step(0)
    judged = admission(choice, config=settings(allowed_actions=["start"]))
    decision = decide(situation(choice, judged, ladder=ladder(exhausted=True), last_block="pause"))
    assert decision == Block(choice, "allowed_actions", new=True, dry_run=False, escalation=None)


def test_a_given_up_target_escalates_once() -> None:
    spent = tuple(guardrails.PastAction(T0 - 600 + i, WEB, "restart", "failed") for i in range(3))
    choice = step(0)
    judged = admission(choice, history=spent)
    assert judged.give_up
    decision = decide(situation(choice, judged))
    assert isinstance(decision, Block)
    assert decision.escalation is not None
    assert decision.escalation.reason.startswith("target_budget: given up")
    repeat = decide(situation(choice, judged, ladder=decision.escalation.ladder, last_block=decision.reasons))
    assert repeat == Block(choice, decision.reasons, new=False, dry_run=False)


def test_a_block_that_lifts_by_itself_does_not_escalate() -> None:
    choice = step(0)
    decision = decide(situation(choice, admission(choice, history=restarted(45))))
    assert isinstance(decision, Block)
    assert decision.escalation is None


def test_an_unjudged_step_does_nothing() -> None:
    assert isinstance(decide(situation(step(0))), Nothing)


# --------------------------------------------------------------------------- approval


APPROVED = book({"approval": "required"})


def test_a_step_needing_approval_asks_once_then_waits() -> None:
    engine = Engine(APPROVED)
    first = engine.failing()
    assert isinstance(first, AskApproval)
    assert first.choice.number == 1
    # the request now stands in the store: the guardrails see it pending
    second = engine.failing(T0 + 10, approval="pending", approval_requested_at=T0)
    third = engine.failing(T0 + 20, approval="pending", approval_requested_at=T0)
    assert isinstance(second, Block)
    assert isinstance(third, Block)
    assert "waits for a person" in admission(step(0, APPROVED), T0 + 10, approval="pending",
                                             approval_requested_at=T0).reason
    assert engine.journal == ["pending-approval", "blocked approval"]
    assert engine.escalations == []


def test_an_approved_step_is_carried_out() -> None:
    engine = Engine(APPROVED)
    engine.failing()
    decision = engine.failing(T0 + 10, approval="approved", approval_requested_at=T0, approval_by="bob")
    assert isinstance(decision, Act)
    assert engine.journal == ["pending-approval", "step 1 failed"]


@pytest.mark.parametrize("guard", [
    {"approval": "rejected", "approval_requested_at": T0, "approval_by": "bob"},
    {"approval": "pending", "approval_requested_at": T0 - 2 * HOUR},  # past approval.expiry (1h)
])
def test_a_rejected_or_expired_request_escalates_once_and_is_not_asked_again(guard: dict[str, Any]) -> None:
    engine = Engine(APPROVED)
    first = engine.failing(T0, **guard)
    assert isinstance(first, Block)
    assert first.escalation is not None
    engine.failing(T0 + 10, **guard)
    assert engine.journal == ["blocked approval"]
    assert len(engine.escalations) == 1


def test_approval_is_asked_even_while_a_later_policy_blocks_but_not_when_an_earlier_one_does() -> None:
    choice = step(0, APPROVED)
    cooling = admission(choice, history=restarted(45))
    assert decide(situation(choice, cooling)) == AskApproval(choice, dry_run=False)
    paused = admission(choice, paused=True)
    decision = decide(situation(choice, paused))
    assert isinstance(decision, Block)
    assert decision.reasons == "pause; approval"


def test_an_approval_request_in_dry_run_is_a_dry_run_one() -> None:
    choice = step(0, APPROVED)
    assert decide(situation(choice, admission(choice), dry_run=True)) == AskApproval(choice, dry_run=True)


# --------------------------------------------------------------------------- recovery resets the ladder


def test_recovery_resets_the_ladder_to_step_1() -> None:
    engine = Engine()
    for hour in range(4):
        engine.failing(T0 + hour * HOUR)
    assert engine.escalations
    engine.recovered(T0 + 10 * HOUR)
    assert engine.ladder == ladder()
    decision = engine.failing(T0 + 11 * HOUR)
    assert isinstance(decision, Act)
    assert decision.choice.number == 1
    assert "first step" in decision.choice.reason


def test_no_reset_before_the_check_was_healthy_for_reset_after() -> None:
    ladders = {KEY: ladder(next_step=2, attempts=2, last_verified=False)}
    healthy_for = DEFAULT.per_target.reset_after
    assert resets("web", state(Health.OK, since=T0 - healthy_for + 1), T0, DEFAULT, [LADDER3], ladders) == ()
    assert resets("web", state(Health.RECOVERING, since=T0 - 2 * healthy_for), T0, DEFAULT, [LADDER3], ladders) == ()
    [reset] = resets("web", state(Health.OK, since=T0 - healthy_for), T0, DEFAULT, [LADDER3], ladders)
    assert reset == Reset(KEY, ladder())  # the last verification is forgotten too


def test_a_reset_touches_only_the_ladders_of_runbooks_naming_the_check() -> None:
    other: LadderKey = ("db-down", "container db")
    ladders = {KEY: ladder(next_step=1, attempts=1),
               other: Ladder(LadderPosition(other[0], other[1], 1, 1))}
    books = [LADDER3, book(name="db-down", checks=("db",))]
    found = resets("web", state(Health.OK, since=T0 - HOUR), T0, DEFAULT, books, ladders)
    assert [r.key for r in found] == [KEY]


def test_a_ladder_at_the_bottom_is_not_rewritten_and_the_reset_time_is_stamped_once() -> None:
    [reset] = resets("web", state(Health.OK, since=T0 - HOUR), T0, DEFAULT, [LADDER3], {KEY: ladder()})
    assert reset.ladder is None
    assert reset.stamps(stamped=False)  # the target's first healthy period: record it
    assert not reset.stamps(stamped=True)  # already recorded, and nothing moved
    moved = Reset(KEY, ladder())
    assert moved.stamps(stamped=True)  # a ladder that reset records the new time


# --------------------------------------------------------------------------- persisted ladders


def test_a_ladder_survives_a_restart_through_its_flag() -> None:
    before = ladder(next_step=2, attempts=2, exhausted=True, last_verified=False, at=T0)
    doc = before.as_doc()
    assert doc == {"runbook": KEY[0], "target": KEY[1], "next_step": 2, "attempts": 2, "last_step_at": T0,
                   "exhausted": True, "last_verified": False}
    restored = Ladder.from_doc(doc | {"written_by": "a newer agent"})  # unknown keys are ignored
    assert restored == before
    assert restored.key == KEY


@pytest.mark.parametrize("value", [None, "ladder", 3, [KEY[0], WEB], {"runbook": KEY[0]}, {"target": WEB}])
def test_a_flag_that_is_not_a_ladder_is_skipped(value: object) -> None:
    assert Ladder.from_doc(value) is None


def test_an_old_flag_without_a_verification_reads_as_unknown() -> None:
    assert Ladder.from_doc({"runbook": KEY[0], "target": WEB, "next_step": 1, "attempts": 1}) == ladder(1, 1)


def test_a_restarted_agent_neither_starts_at_step_1_again_nor_re_escalates() -> None:
    engine = Engine(book({"action": "restart"}, {"action": "start"}))
    for n in range(3):
        engine.failing(T0 + n, outcome="refused")
    assert len(engine.escalations) == 1
    restored = Ladder.from_doc(engine.ladder.as_doc() if engine.ladder else None)
    choice = choose(engine.book, KEY, restored)
    assert isinstance(choice, Escalate)
    assert isinstance(decide(situation(choice, ladder=restored)), Nothing)
