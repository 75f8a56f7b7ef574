"""The runbook engine's driver: from a failing check to a runbook step that is allowed, done once, and verified.

For a check that is DOWN (its failures passed ``failure_threshold``), on each CRITICAL
result while no action runs on its target::

    runbooks.match()            which runbook handles this failure (none: nothing to do)
    remedy.choose()             which rung of its ladder is next (or escalate)
    executor.prepare()          inspect the target and plan (read only)
    guardrails.admit()          every policy's verdict, with reasons
    remedy.decide()             act, ask for approval, block (journal it or not), escalate (once)
    executor.execute()          journal intent -> apply (or record, if dry-run) -> verify -> journal outcome
    remedy.after_step()         where the ladder moves to

Every decision is a pure function of :mod:`agent.core.remedy` (the rules, with their unit
tests); this module gathers what they look at (store reads, the running actions), carries
their answer out (journal, executor, incident events, logs) and persists the ladder.

A blocked decision is journaled too (``paramedic history`` shows why nothing happened),
but only when its reasons change, so a check that stays DOWN behind a cooldown does not
fill the journal with one line per probe. ``plan_only`` is the audit: everything up to
and including the guardrails, nothing written, nothing changed.

Ladder positions are kept in the store (flags), so a restarted agent continues where it
was; the journal (also in the store) is what budgets, cooldowns and backoff count, and its
open intents are what other processes see as running, so ``paramedic run`` and
``paramedic check --remediate`` share all of it. A step whose plan refuses moves the ladder
on, like a failed verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.config.model import Config, Runbook
from agent.config.sections import GuardrailSettings
from agent.core import guardrails, runbooks, targets
from agent.core import remedy as core
from agent.core.state import CheckState, Health
from agent.core.windows import active_windows
from agent.kernel.logs import LOGGER
from agent.kernel.results import Result, Status
from agent.runtime.executor import APPLIED_OUTCOMES, Execution, Executor, Prepared
from agent.runtime.remedy_events import NO_EVENTS, RemedyEvents
from agent.store.sqlite import Store
from checks.base import CheckSpec
from remediations.base import Verification, verify

PAUSE_FLAG = "pause"
APPROVAL_FLAG = "approval:"
#: How long an action interrupted by a crash counts as still running (one per target).
INTERRUPTED_GRACE = 120.0
RESET_FLAG = "reset:"  # + target key: when the target's counters last reset (a healthy period)
LADDER_FLAG = "ladder:"  # + runbook \x1f target: where that pair stands on the runbook's ladder
CheckRunner = Callable[[str], Awaitable[Result]]


@dataclass(frozen=True)
class Proposal:
    """What the agent would do about one failing check, and whether it may (audit's row)."""

    check: str
    status: Status
    runbook: Runbook | None
    choice: runbooks.StepChoice | runbooks.Escalate | None
    prepared: Prepared | None
    admission: guardrails.Admission | None

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for ``paramedic audit --output json``."""
        choice: dict[str, Any] | None = None
        if isinstance(self.choice, runbooks.StepChoice):
            choice = {"step": self.choice.number, "action": self.choice.step.action, "reason": self.choice.reason}
        elif isinstance(self.choice, runbooks.Escalate):
            choice = {"escalate": self.choice.reason}
        return {
            "check": self.check, "status": self.status.name,
            "runbook": self.runbook.name if self.runbook else None,
            "severity": self.runbook.severity if self.runbook else None,
            "choice": choice,
            "target": self.prepared.target.key if self.prepared else None,
            "plan": self.prepared.plan.as_dict() if self.prepared else None,
            "admission": self.admission.as_dict() if self.admission else None,
        }


class Remedy:
    """Applies runbooks to DOWN checks inside the guardrails. One per agent process."""

    def __init__(self, config: Config, store: Store, executor: Executor, run_check: CheckRunner,
                 dry_run: bool = False, clock: Callable[[], float] = time.time,
                 events: RemedyEvents = NO_EVENTS) -> None:
        #: Told of each action, block, approval request and escalation: the incident layer
        #: (its one door in for the engine's decisions), or nobody.
        self.events = events
        self.config = config
        self.store = store
        self.executor = executor
        self.run_check = run_check
        self.dry_run = dry_run
        self.clock = clock
        self._ladders: dict[core.LadderKey, core.Ladder] = {}
        self._running: dict[str, guardrails.RunningAction] = {}
        self._last_blocked: dict[core.LadderKey, str] = {}  # the blocking policies last journaled
        self._tasks: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()  # targets with a decision or action in progress in this process
        self._held: dict[str, int] = {}  # check -> steps being applied to its target right now
        self._load_ladders()

    # ------------------------------------------------------------------ ladder positions (persisted)

    def _load_ladders(self) -> None:
        """Ladder positions survive restarts: a restarted agent does not go back to step 1, nor
        escalate a target it already gave up on again."""
        for value in self.store.flags(LADDER_FLAG).values():
            ladder = core.Ladder.from_doc(value)
            if ladder is not None:
                self._ladders[ladder.key] = ladder

    def _set_ladder(self, key: core.LadderKey, ladder: core.Ladder) -> None:
        self._ladders[key] = ladder
        self.store.set_flag(f"{LADDER_FLAG}{key[0]}\x1f{key[1]}", ladder.as_doc())

    # ------------------------------------------------------------------ config reloads

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: its runbooks, guardrails, maintenance windows and checks decide from
        the next decision on.

        What the engine keeps is in the store and stays: ladder positions (by runbook name and
        target: a runbook that keeps its name keeps its place, bounded by its new steps), the
        journal that budgets, cooldowns and backoff count, approvals, the pause switch. A
        decision already past its guardrails, and an action in flight, finish with the runbook
        step they started with (its verification re-runs the check as long as it exists).
        """
        self.config = config
        self.executor.redactor = config.redactor  # the journal is masked with the new secrets too

    # ------------------------------------------------------------------ the daemon's entry points

    def on_result(self, result: Result, state: CheckState | None) -> None:
        """Called for each stored result: start a remediation task when one is due."""
        due = core.trigger(result.status, state)
        if state is None or due is None:
            return
        if due == "reset":
            self._maybe_reset(result.name, state)
            return
        task = asyncio.create_task(self.handle(result, state), name=f"remedy:{result.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for remediations in flight (SIGTERM: let them finish, nothing half-done)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def holds(self, check: str) -> bool:
        """Whether a runbook step is being applied to ``check``'s target right now (hold its probes)."""
        return self._held.get(check, 0) > 0

    @contextlib.contextmanager
    def _holding(self, prepared: Prepared) -> Iterator[None]:
        """Hold the probes of every check of this step's target while the step is applied: the
        check that asked, its runbook's named checks, and container checks of the same target."""
        held = {prepared.check.name} | self._checks_of(prepared.runbook.name)
        held |= {name for name, key in self._target_keys().items() if key == prepared.target.key}
        for name in held:
            self._held[name] = self._held.get(name, 0) + 1
        try:
            yield
        finally:
            for name in held:
                self._held[name] -= 1
                if not self._held[name]:
                    del self._held[name]

    def _maybe_reset(self, check: str, state: CheckState) -> None:
        """A check healthy for ``reset_after``: its ladders restart and its targets' counters reset."""
        now = self.clock()
        for reset in core.resets(check, state, now, self.config.guardrails, self.config.runbooks, self._ladders):
            if reset.stamps(self.store.flag(RESET_FLAG + reset.key[1]) is not None):
                self.store.set_flag(RESET_FLAG + reset.key[1], now)
            if reset.ladder is not None:
                self._set_ladder(reset.key, reset.ladder)

    def _checks_of(self, runbook: str) -> set[str]:
        book = next((b for b in self.config.runbooks if b.name == runbook), None)
        return set(book.match.checks) if book else set()

    # ------------------------------------------------------------------ one decision

    async def propose(self, result: Result, state: CheckState | None) -> Proposal:
        """Everything up to the guardrails' verdict; reads only (this is the audit)."""
        spec = self.config.check(result.name)
        book = runbooks.match(self.config.runbooks, spec, result.status)
        if book is None:
            return Proposal(result.name, result.status, None, None, None, None)
        key_target = targets.target_key(book, spec)
        key = (book.name, key_target)
        choice = core.choose(book, key, self._ladders.get(key))
        if isinstance(choice, runbooks.Escalate):
            return Proposal(result.name, result.status, book, choice, None, None)
        prepared = await self.executor.prepare(spec, book, choice.index)
        situation = await asyncio.to_thread(self._situation, prepared, result, state)
        return Proposal(result.name, result.status, book, choice, prepared,
                        guardrails.admit(self._settings(), situation))

    async def handle(self, result: Result, state: CheckState) -> Execution | None:
        """Decide and, if allowed, act on one CRITICAL result of a DOWN check."""
        try:
            spec = self.config.check(result.name)
        except KeyError:
            return None  # a reload removed the check since this result
        book = runbooks.match(self.config.runbooks, spec, result.status)
        if book is None:
            return None
        key_target = targets.target_key(book, spec)
        if key_target in self._busy:
            return None  # one decision at a time per target; this result changes nothing
        self._busy.add(key_target)
        try:
            return await self._decide(book, key_target, result, state)
        finally:
            self._busy.discard(key_target)

    async def _decide(self, book: Runbook, key_target: str, result: Result, state: CheckState) -> Execution | None:
        proposal = await self.propose(result, state)
        key = (book.name, key_target)
        if proposal.choice is None:
            return None
        decision = core.decide(core.Situation(key, proposal.choice, proposal.admission, self._ladders.get(key),
                                              self._last_blocked.get(key), self.dry_run))
        remembered = core.last_block(decision, self._last_blocked.get(key))
        if remembered is None:
            self._last_blocked.pop(key, None)
        else:
            self._last_blocked[key] = remembered
        if isinstance(decision, core.Escalation):
            self._escalate(decision)
            return None
        prepared, admission = proposal.prepared, proposal.admission
        if prepared is None or admission is None:
            return None
        decisions = [d.as_dict() for d in admission.decisions]
        if isinstance(decision, core.AskApproval):
            request = self.executor.request_approval(prepared, decisions, decision.dry_run)
            LOGGER.error("APPROVAL NEEDED for runbook %s step %d on %s: %s — `paramedic approve %d` or "
                         "`paramedic reject %d`", book.name, prepared.step_index + 1, key_target,
                         prepared.plan.summary, request, request,
                         extra={"runbook": book.name, "target": key_target, "approval_id": request})
            self.events.approval_needed(prepared, request)
            return None
        if isinstance(decision, core.Block):
            self._record_block(decision, prepared, admission, decisions)
            return None
        if isinstance(decision, core.Act):
            return await self._act(key, prepared, decision, decisions)
        return None

    async def _act(self, key: core.LadderKey, prepared: Prepared, decision: core.Act,
                   decisions: list[dict[str, Any]]) -> Execution:
        step, check = prepared.step, prepared.check
        target = prepared.target.key
        self._running[target] = guardrails.RunningAction(target, step.action, self.clock())
        try:
            execution = await self.executor.execute(
                prepared, decisions, dry_run=decision.dry_run,
                verify=lambda: self._verify(check, check.success_threshold, step.verify_for),
                while_applying=self._holding(prepared),
            )
        finally:
            self._running.pop(target, None)
        choice = decision.choice
        moved = core.after_step(key, self._ladders.get(key), choice, execution.outcome, self.clock())
        if moved is not None:
            self._set_ladder(key, moved)
        detail = f": {prepared.plan.summary}" if execution.outcome in ("refused", "nothing") else ""
        LOGGER.warning("runbook %s step %d on %s: %s%s", prepared.runbook.name, choice.number, target,
                       execution.outcome, detail,
                       extra={"runbook": prepared.runbook.name, "target": target, "outcome": execution.outcome})
        self.events.action(prepared, execution)
        return execution

    async def _verify(self, check: CheckSpec, success_threshold: int, deadline: float) -> Verification:
        """Re-run ``check`` until it passes ``success_threshold`` times or ``deadline`` passes
        (paced by the spec the step was prepared with); a check a reload removed fails it."""
        try:
            return await verify(lambda: self.run_check(check.name), success_threshold, deadline,
                                interval_s=min(check.interval, 1.0))
        except KeyError:  # the daemon no longer runs it (removed by a reload)
            LOGGER.warning("check %s was removed from the config during its verification", check.name,
                           extra={"check": check.name})
            return Verification(False, 0, 0, 0.0, "UNKNOWN",
                                f"check {check.name} was removed from the config during the verification")

    def _record_block(self, block: core.Block, prepared: Prepared, admission: guardrails.Admission,
                      decisions: list[dict[str, Any]]) -> None:
        if not block.new:
            return  # same block as last time: already journaled
        self.executor.record_blocked(prepared, decisions, block.dry_run)
        LOGGER.warning("runbook %s on %s blocked: %s", prepared.runbook.name, prepared.target.key, admission.reason)
        self.events.blocked(prepared, admission)
        if block.escalation is not None:
            self._escalate(block.escalation)

    def _escalate(self, escalation: core.Escalation) -> None:
        runbook, target = escalation.key
        self._set_ladder(escalation.key, escalation.ladder)
        LOGGER.error("ESCALATE runbook %s on %s: %s", runbook, target, escalation.reason,
                     extra={"runbook": runbook, "target": target, "escalation": escalation.reason})
        self.events.escalated(runbook, target, escalation.reason)

    # ------------------------------------------------------------------ the situation

    def _situation(self, prepared: Prepared, result: Result, state: CheckState | None) -> guardrails.Situation:
        """Everything the policies look at, read from the store and config (runs in a thread)."""
        config = self.config  # one config throughout, even if a reload swaps it meanwhile
        now = self.clock()
        settings = self._settings(config)
        spec, target = prepared.check, prepared.target
        states = self.store.states()
        health = state.visible if state is not None else Health.OK
        reset_at = self.store.flag(RESET_FLAG + target.key)
        need = guardrails.history_need(settings, now, reset_at if isinstance(reset_at, float | int) else None)
        entries = {e["id"]: e for e in self.store.journal(limit=10_000, since=need.since_all)}
        entries.update((e["id"], e) for e in self.store.journal(limit=10_000, target=target.key,
                                                                 since=need.since_target))
        history = tuple(
            guardrails.PastAction(e["at"], e["target"], e["action"], e["outcome"] or "interrupted", e["dry_run"])
            for e in sorted(entries.values(), key=lambda e: (e["at"], e["id"]))
            if (e["outcome"] or "interrupted") in APPLIED_OUTCOMES | {"dry-run"}
        )
        running = dict(self._running)
        for intent in self.store.open_intents():  # another process (cron --remediate, a second agent)
            if now - intent["at"] < 3600 and intent["target"] not in running:
                running[intent["target"]] = guardrails.RunningAction(intent["target"], intent["action"], intent["at"])
        for entry in entries.values():
            # an action interrupted by a crash may still be under way in Docker (a restart's stop
            # timeout): treat it as running for a while, or a restarted agent would act again at once
            if entry["outcome"] == "interrupted" and now - entry["at"] < INTERRUPTED_GRACE:
                running.setdefault(entry["target"], guardrails.RunningAction(entry["target"], entry["action"],
                                                                             entry["at"]))
        approval = self._approval(prepared)
        pause = self.store.flag(PAUSE_FLAG)
        deps = tuple(
            guardrails.Dependency(name, states[name].visible if name in states else Health.OK)
            for name in spec.depends_on
        )
        silences = tuple(guardrails.Silence(s["check"], s["until"], s["reason"], s["created_by"])
                         for s in self.store.silences(now))
        stops = self.store.operator_stops()
        stopped = bool(target.container and target.container in stops)
        return guardrails.Situation(
            now=now, check=spec.name, status=result.status, health=health, action=prepared.step.action,
            target=target.key, runbook=prepared.runbook.name, runbook_dry_run=prepared.runbook.dry_run,
            step=prepared.step_index, needs_approval=prepared.step.needs_approval, check_tags=spec.tags,
            groups=targets.blast_groups(spec, target), history=history,
            running=tuple(running.values()),
            members=guardrails.members_of(config.checks, states, self._target_keys(config)),
            operator_stopped=stopped, depends_on=deps, silences=silences,
            maintenance=active_windows(config.maintenance, now),
            paused=bool(pause), pause_reason=(pause or {}).get("reason", "") if isinstance(pause, dict) else "",
            approval=approval[0], approval_requested_at=approval[1], approval_by=approval[2],
        )

    def _settings(self, config: Config | None = None) -> GuardrailSettings:
        """The configured guardrails; with ``run --dry-run`` every decision is a dry-run one."""
        settings = (config or self.config).guardrails
        return settings.model_copy(update={"dry_run": True}) if self.dry_run else settings

    def _target_keys(self, config: Config | None = None) -> dict[str, str]:
        """Each Docker-selecting check's target key, so several checks of one container count once."""
        return targets.target_keys((config or self.config).checks)

    def _approval(self, prepared: Prepared) -> tuple[guardrails.ApprovalStatus, float | None, str]:
        """The live approval request for this step (newer than its last execution), if any."""
        if not prepared.step.needs_approval:
            return "none", None, ""
        for entry in self.store.journal(limit=200, target=prepared.target.key):
            if entry["runbook"] != prepared.runbook.name or entry["step"] != prepared.step_index:
                continue
            if entry["outcome"] == "blocked":
                continue  # a decision while waiting: the request still stands
            if entry["outcome"] != "pending-approval":
                return "none", None, ""  # executed (or blocked) since the last request: ask again
            decision = self.store.flag(f"{APPROVAL_FLAG}{entry['id']}")
            if isinstance(decision, dict) and decision.get("status") in ("approved", "rejected"):
                return decision["status"], entry["at"], str(decision.get("by", ""))
            return "pending", entry["at"], ""
        return "none", None, ""
