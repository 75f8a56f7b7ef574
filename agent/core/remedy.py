"""The runbook engine's decisions, pure: which step, act or block or ask or escalate, how the ladder moves.

:class:`~agent.runtime.remedy.Remedy` is the driver: it reads the store, prepares the step
(inspect + plan), asks the guardrails, and carries out what these functions return. Every
rule of the engine that is not a guardrail policy (:mod:`agent.core.guardrails`) nor a rung
of the ladder (:mod:`agent.core.runbooks`) is here, over frozen data, with ``now`` passed in::

    trigger(status, state)         a stored result: remediate (DOWN and CRITICAL), reset (OK), or nothing
    choose(book, key, ladder)      which rung is next on the ladder as persisted (or escalate)
    decide(Situation)              act / ask for approval / block (new or a repeat) / escalate (once) / nothing
    after_step(...)                the ladder after a step was carried out (it moves on, even when refused)
    resets(...)                    the ladders that start afresh after a healthy period

Rules, each with a unit test (``tests/unit/test_core_remedy.py``):

* A blocked decision is journaled only when its blocking policies change (the reasons'
  texts may change, a cooldown's "next allowed in" does, without a new line); a step that
  is carried out forgets the last block, so the same block after it is journaled again.
* An escalation happens once per ladder: an exhausted ladder escalates no more until it
  is reset. A block that needs a person (given up, blast radius, rejected...) escalates
  the ladder too, once, and only when the block is new.
* Approval: the guardrails say when a request must be made (``request_approval``: none
  pending or decided); then the decision asks, and nothing else happens.
* A step whose plan refused, or found nothing to do, moves the ladder on like a failed
  verification (it cannot help now; re-planning it on every failing result would not).
  A dry-run moves it on with no verification outcome.
* Recovery: a check OK for ``reset_after`` resets the ladders of the runbooks that name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent.config.model import Runbook
from agent.config.sections import GuardrailSettings
from agent.core import guardrails, runbooks
from agent.core.state import CheckState, Health
from agent.kernel.results import Status

#: (runbook name, target key): one ladder.
LadderKey = tuple[str, str]
#: Outcomes of a carried-out step that move the ladder (verified or not, refused, nothing to do, dry-run).
MOVES_LADDER = frozenset({"ok", "failed", "dry-run", "refused", "nothing"})
Trigger = Literal["remediate", "reset"]


# --------------------------------------------------------------------------- the ladder as persisted


@dataclass(frozen=True)
class Ladder:
    """Where one (runbook, target) pair stands, and how its last step's verification ended.

    ``last_verified``: True verified, False did not, None unknown (no step yet, a dry-run,
    or a ladder just reset). Persisted as one flag, so a restarted agent neither goes back
    to step 1 nor escalates a target it already gave up on again.
    """

    position: runbooks.LadderPosition
    last_verified: bool | None = None

    @property
    def key(self) -> LadderKey:
        """The (runbook, target) pair this ladder is for."""
        return self.position.runbook, self.position.target

    def as_doc(self) -> dict[str, Any]:
        """The flag's JSON shape."""
        p = self.position
        return {"runbook": p.runbook, "target": p.target, "next_step": p.next_step, "attempts": p.attempts,
                "last_step_at": p.last_step_at, "exhausted": p.exhausted, "last_verified": self.last_verified}

    @classmethod
    def from_doc(cls, value: object) -> Ladder | None:
        """A ladder read back from its flag; None for a value that is not one (skipped)."""
        if not isinstance(value, dict):
            return None
        fields = {k: value[k] for k in ("runbook", "target", "next_step", "attempts", "last_step_at", "exhausted")
                  if k in value}
        try:
            position = runbooks.LadderPosition(**fields)
        except TypeError:
            return None
        return cls(position, value.get("last_verified"))


def fresh(key: LadderKey) -> runbooks.LadderPosition:
    """The bottom of the ladder for ``key`` (a pair with no persisted position)."""
    return runbooks.LadderPosition(key[0], key[1])


# --------------------------------------------------------------------------- which results matter


def trigger(status: Status, state: CheckState | None) -> Trigger | None:
    """What a stored result starts: a remediation (a DOWN check's CRITICAL result), a possible
    reset (a visibly OK check), or nothing (no state yet, failing but not DOWN, not CRITICAL)."""
    if state is None:
        return None
    if state.visible is Health.OK:
        return "reset"
    if state.health is not Health.DOWN or status is not Status.CRITICAL:
        return None
    return "remediate"


def choose(book: Runbook, key: LadderKey, ladder: Ladder | None) -> runbooks.StepChoice | runbooks.Escalate:
    """The next rung for ``key`` on ``book``'s ladder, from where it stands (step 1 if nowhere yet)."""
    if ladder is None:
        return runbooks.next_step(book, fresh(key), None)
    return runbooks.next_step(book, ladder.position, ladder.last_verified)


# --------------------------------------------------------------------------- one decision


@dataclass(frozen=True)
class Situation:
    """What one decision looks at, once the step is chosen and (if a step) judged.

    ``admission`` is the guardrails' verdict on the chosen step (None when ``choice``
    escalates: nothing is prepared nor judged then). ``last_block`` is the blocking
    policies last journaled for this ladder (:func:`block_key`), None if none since the
    last step. ``dry_run`` is the process's ``--dry-run``.
    """

    key: LadderKey
    choice: runbooks.StepChoice | runbooks.Escalate
    admission: guardrails.Admission | None = None
    ladder: Ladder | None = None
    last_block: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class Escalation:
    """Hand the failure to a person, for ``reason``; persist ``ladder`` (exhausted: no more steps)."""

    key: LadderKey
    reason: str
    ladder: Ladder


@dataclass(frozen=True)
class Act:
    """Carry out ``choice`` (journal, apply or record, verify); ``dry_run``: record, do not apply."""

    choice: runbooks.StepChoice
    dry_run: bool


@dataclass(frozen=True)
class AskApproval:
    """Journal a pending approval request for the chosen step and tell a person."""

    choice: runbooks.StepChoice
    dry_run: bool


@dataclass(frozen=True)
class Block:
    """A guardrail said no. ``new``: its blocking policies changed since the last journaled
    block, so journal it, log it and tell the incident layer; a repeat does nothing.
    ``escalation``: the block needs a person and the ladder has not escalated yet."""

    choice: runbooks.StepChoice
    reasons: str
    new: bool
    dry_run: bool
    escalation: Escalation | None = None


@dataclass(frozen=True)
class Nothing:
    """Nothing to do, for ``reason`` (already escalated, not judged)."""

    reason: str


Decision = Act | AskApproval | Block | Escalation | Nothing


def block_key(admission: guardrails.Admission) -> str:
    """What a repeated block is recognised by: its blocking policies, not their sentences."""
    return "; ".join(d.policy for d in admission.blocked)


def escalate_once(key: LadderKey, reason: str, ladder: Ladder | None) -> Escalation | None:
    """Escalate ``key``'s ladder for ``reason``, unless it already did (exhausted): None then."""
    if ladder is not None and ladder.position.exhausted:
        return None
    base = ladder or Ladder(fresh(key))
    return Escalation(key, reason, Ladder(runbooks.escalated(base.position), base.last_verified))


def decide(s: Situation) -> Decision:
    """What to do about the chosen step, given the guardrails' verdict (see the module doc)."""
    if isinstance(s.choice, runbooks.Escalate):
        escalation = escalate_once(s.key, s.choice.reason, s.ladder)
        return escalation or Nothing(f"already escalated: {s.choice.reason}")
    admission = s.admission
    if admission is None:
        return Nothing("the step was not judged")
    dry_run = admission.dry_run or s.dry_run
    if admission.request_approval:
        return AskApproval(s.choice, dry_run)
    if not admission.allowed:
        reasons = block_key(admission)
        if s.last_block == reasons:
            return Block(s.choice, reasons, False, dry_run)
        escalation = escalate_once(s.key, admission.reason, s.ladder) if admission.escalate else None
        return Block(s.choice, reasons, True, dry_run, escalation)
    return Act(s.choice, dry_run)


def last_block(decision: Decision, previous: str | None) -> str | None:
    """The block to remember after ``decision``: a new block's reasons; none after a step; else unchanged."""
    if isinstance(decision, Act):
        return None
    if isinstance(decision, Block) and decision.new:
        return decision.reasons
    return previous


# --------------------------------------------------------------------------- after a step, after recovery


def after_step(key: LadderKey, ladder: Ladder | None, choice: runbooks.StepChoice, outcome: str,
               now: float) -> Ladder | None:
    """The ladder after ``choice`` was carried out at ``now`` with journal ``outcome``; None: it stays.

    A refused plan or one with nothing to do moves on like a failed verification (it
    cannot help now); a dry-run moves on with no verification outcome.
    """
    if outcome not in MOVES_LADDER:
        return None
    position = ladder.position if ladder is not None else fresh(key)
    verified = None if outcome == "dry-run" else outcome == "ok"
    return Ladder(runbooks.took_step(position, choice, now), verified)


@dataclass(frozen=True)
class Reset:
    """A ladder of a recovered check: ``ladder`` is its fresh position (None: it already was at the bottom)."""

    key: LadderKey
    ladder: Ladder | None

    def stamps(self, stamped: bool) -> bool:
        """Whether to record ``now`` as the target's reset time (``stamped``: it has one already)."""
        return not stamped or self.ladder is not None


def resets(check: str, state: CheckState, now: float, settings: GuardrailSettings, books: Iterable[Runbook],
           ladders: Mapping[LadderKey, Ladder]) -> tuple[Reset, ...]:
    """The ladders a check healthy for ``per_target.reset_after`` resets: those of the runbooks
    that name it in ``match.checks`` (none before the healthy period is over)."""
    if not guardrails.counters_reset(state, now, settings):
        return ()
    healthy_for = settings.per_target.reset_after
    named = {b.name for b in books if check in b.match.checks}
    out = []
    for key, ladder in ladders.items():
        if ladder.position.runbook not in named:
            continue
        position = runbooks.after_health(ladder.position, state, now, healthy_for)
        out.append(Reset(key, None if position == ladder.position else Ladder(position)))
    return tuple(out)


__all__ = [
    "MOVES_LADDER",
    "Act",
    "AskApproval",
    "Block",
    "Decision",
    "Escalation",
    "Ladder",
    "LadderKey",
    "Nothing",
    "Reset",
    "Situation",
    "Trigger",
    "after_step",
    "block_key",
    "choose",
    "decide",
    "escalate_once",
    "fresh",
    "last_block",
    "resets",
    "trigger",
]
