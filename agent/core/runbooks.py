"""Which runbook handles a failure, and which rung of its ladder comes next. Pure.

Matching: the *first* runbook in config order whose ``match`` fields all match wins, so a
narrow runbook is listed before a broad one. Within ``match`` an empty field means
"any": ``checks`` (the check's name is listed), ``tags`` (the check has at least one of
them), ``types`` (its probe type is listed), ``statuses`` (the result's status is listed;
the default is ``[CRITICAL]``) and ``alert_labels`` (each key/value is among the alert's
labels; a result that carries no alert labels never matches a runbook that asks for
some). An OK result matches nothing: there is nothing to fix. An UNKNOWN result can only
match a runbook with ``statuses: []``, and the guardrails then refuse to act on it (so
``paramedic audit`` can say why).

The ladder: a runbook's ``steps`` are rungs (graceful restart, force restart, rollback).
:class:`LadderPosition` is where one (runbook, target) pair stands; the executor stores
it. :func:`next_step` says what to do given the outcome of the last step's verification:

* no step taken yet -> step 1;
* the last step did not verify, or verified but the check failed again before the
  ladder reset (a fix that did not hold) -> that step's ``on_failure``: ``next`` climbs
  to the following step, ``escalate`` escalates; no following step -> escalate;
* no outcome known (``None``: verification still running, a dry-run, or an action being
  reconciled after a crash) -> the step the position points at, unchanged.

:func:`took_step` and :func:`escalated` move the position; :func:`after_health` resets
it once the check has been healthy for a whole period (``guardrails.per_target.
reset_after``), so the next outage starts again at step 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from agent.config.model import Runbook, RunbookMatch, RunbookStep
from agent.core.state import CheckState, Health
from agent.kernel.results import Status
from checks.base import CheckSpec


def matches(rule: RunbookMatch, spec: CheckSpec, status: Status, alert_labels: Mapping[str, str] | None = None) -> bool:
    """Whether every non-empty field of ``rule`` matches this check and result."""
    if status is Status.OK:
        return False
    if rule.checks and spec.name not in rule.checks:
        return False
    if rule.tags and set(rule.tags).isdisjoint(spec.tags):
        return False
    if rule.types and spec.type not in rule.types:
        return False
    if rule.statuses and status.name not in rule.statuses:
        return False
    if rule.alert_labels:
        labels = alert_labels or {}
        return all(labels.get(key) == value for key, value in rule.alert_labels.items())
    return True


def match(
    runbooks: Sequence[Runbook],
    spec: CheckSpec,
    result_status: Status,
    alert_labels: Mapping[str, str] | None = None,
) -> Runbook | None:
    """The first runbook whose ``match`` matches the check and its result's status, or None."""
    for book in runbooks:
        if matches(book.match, spec, result_status, alert_labels):
            return book
    return None


@dataclass(frozen=True)
class LadderPosition:
    """Where one (runbook, target) pair stands on the runbook's ladder.

    ``next_step`` is the index of the step to take next; ``attempts`` counts steps taken
    since the last reset; ``exhausted`` means the ladder escalated and takes no more
    steps until it is reset.
    """

    runbook: str
    target: str
    next_step: int = 0
    attempts: int = 0
    last_step_at: float | None = None
    exhausted: bool = False


@dataclass(frozen=True)
class StepChoice:
    """Take ``step`` (``book.steps[index]``); ``reason`` says why this one."""

    index: int
    step: RunbookStep
    reason: str

    @property
    def number(self) -> int:
        """1-based, as people count steps."""
        return self.index + 1


@dataclass(frozen=True)
class Escalate:
    """Take no step: hand the failure to a person, for ``reason``."""

    reason: str


def start(book: Runbook, target: str) -> LadderPosition:
    """A fresh position at the bottom of ``book``'s ladder for ``target``."""
    return LadderPosition(book.name, target)


def _describe(book: Runbook, index: int) -> str:
    return f"step {index + 1} ({book.steps[index].action})"


def next_step(book: Runbook, position: LadderPosition, last_verification_ok: bool | None) -> StepChoice | Escalate:
    """What to do now on ``book``'s ladder, given the last step's verification (see module doc).

    A position for another runbook (the config changed) counts as a fresh one.
    """
    if position.runbook != book.name:
        position = start(book, position.target)
    if not book.steps:
        return Escalate(f"runbook {book.name} has no steps")
    if position.exhausted:
        return Escalate(f"runbook {book.name} already escalated for {position.target}; waiting for it to recover")
    if position.attempts == 0:
        return StepChoice(0, book.steps[0], f"{_describe(book, 0)} is the first step of runbook {book.name}")
    if last_verification_ok is None:
        index = position.next_step
        if index >= len(book.steps):
            return Escalate(f"runbook {book.name} has no step after step {index}")
        return StepChoice(index, book.steps[index], f"{_describe(book, index)} is next on runbook {book.name}")
    last = min(position.next_step, len(book.steps)) - 1
    what = "verified but did not hold" if last_verification_ok else "did not verify"
    if book.steps[last].on_failure == "escalate":
        return Escalate(f"{_describe(book, last)} {what}; its on_failure is escalate")
    if last + 1 >= len(book.steps):
        return Escalate(f"{_describe(book, last)} {what} and it is the last step of runbook {book.name}")
    reason = f"{_describe(book, last)} {what}; trying {_describe(book, last + 1)}"
    return StepChoice(last + 1, book.steps[last + 1], reason)


def took_step(position: LadderPosition, choice: StepChoice, now: float) -> LadderPosition:
    """The position after ``choice`` was carried out at ``now``."""
    return replace(position, next_step=choice.index + 1, attempts=position.attempts + 1, last_step_at=now)


def escalated(position: LadderPosition) -> LadderPosition:
    """The position after the ladder escalated: no more steps until it is reset."""
    return replace(position, exhausted=True)


def recovered(state: CheckState, now: float, healthy_for: float) -> bool:
    """Whether the check has been visibly OK for at least ``healthy_for`` seconds at ``now``."""
    return state.visible is Health.OK and now - state.since >= healthy_for


def after_health(position: LadderPosition, state: CheckState, now: float, healthy_for: float) -> LadderPosition:
    """``position``, reset to the bottom of the ladder if the check has recovered for good."""
    if recovered(state, now, healthy_for) and position != LadderPosition(position.runbook, position.target):
        return LadderPosition(position.runbook, position.target)
    return position


__all__ = [
    "Escalate",
    "LadderPosition",
    "StepChoice",
    "after_health",
    "escalated",
    "match",
    "matches",
    "next_step",
    "recovered",
    "start",
    "took_step",
]
