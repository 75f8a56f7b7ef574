"""Carry out one runbook step exactly once, and say why at every point.

The flow for a step (the guardrails decide between ``prepare`` and ``execute``)::

    prepare:  remediation.inspect(target)  ->  remediation.plan(target, snapshot)   (read only)
    execute:  journal intent  ->  apply(plan)  ->  verify (re-run the check)  ->  journal outcome

The intent is written *before* anything changes, the outcome after: an agent killed in
between leaves an intent without an outcome, and :meth:`Executor.reconcile` at the next
start looks at the target again (re-runs the check) and records what it found, rather
than repeating the action blindly or forgetting it. A dry run writes the intent (marked
dry-run) and an outcome ``dry-run`` with the plan; it never calls ``apply``.

Outcomes in the journal: ``ok`` (applied and verified), ``failed`` (apply failed, or the
check did not recover within ``verify_for``), ``dry-run``, ``blocked`` (a guardrail said
no; nothing was done), ``refused`` (the plan refused), ``nothing`` (no change needed),
``interrupted`` (found open at start and reconciled). Everything written passes the
config's redactor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from agent.config.model import Runbook, RunbookStep
from agent.core.targets import resolve_target
from agent.kernel.logs import LOGGER
from agent.kernel.redact import Redactor
from agent.kernel.results import Result
from agent.registry import action_class
from agent.store.sqlite import Store
from checks.base import CheckSpec
from remediations.base import (
    ActionContext,
    Outcome,
    Plan,
    Remediation,
    Target,
    TargetParams,
    Verification,
)

#: Outcomes that mean the stack was (or may have been) changed: guardrail budgets count these.
APPLIED_OUTCOMES = frozenset({"ok", "failed", "interrupted"})


@dataclass(frozen=True)
class Prepared:
    """A step with its target and plan, before any guardrail or change."""

    check: CheckSpec
    runbook: Runbook
    step_index: int
    target: Target
    plan: Plan
    remediation: Remediation[Any]

    @property
    def step(self) -> RunbookStep:
        """The runbook step this is."""
        return self.runbook.steps[self.step_index]


@dataclass(frozen=True)
class Execution:
    """What happened to one prepared step; ``outcome`` is the journal's word for it."""

    intent_id: int
    outcome: str
    plan: Plan
    result: Outcome | None = None
    verification: Verification | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for audit output and the API."""
        return {"intent_id": self.intent_id, "outcome": self.outcome, "plan": self.plan.as_dict(),
                "result": self.result.as_dict() if self.result else None,
                "verification": self.verification.as_dict() if self.verification else None}


class Executor:
    """Prepares and executes runbook steps against the store's journal."""

    def __init__(self, store: Store, context: ActionContext, redactor: Redactor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.context = context
        self.redactor = redactor or Redactor()
        self.clock = clock

    async def prepare(self, check: CheckSpec, runbook: Runbook, step_index: int) -> Prepared:
        """Resolve the target, inspect it (read only) and plan. Never raises for Docker trouble:
        a failed inspect becomes a refusing plan with the reason."""
        step = runbook.steps[step_index]
        remediation = action_class(step.action)(step.typed_params, self.context)
        target = resolve_target(step.typed_params, check)
        try:
            snapshot = await remediation.inspect(target)
            plan = remediation.plan(target, snapshot)
        except Exception as exc:
            plan = Plan.refuse(step.action, target, f"cannot inspect or plan: {type(exc).__name__}: {exc}")
        return Prepared(check, runbook, step_index, target, plan, remediation)

    async def warm(self, runbooks: Sequence[Runbook]) -> None:
        """Import every runbook action's module and open the Docker clients they will use, changing
        nothing: done once at agent start, so the first action of an incident does not pay for
        them (about 80 ms here, most of the time between DOWN and a restart). Never raises."""
        hosts: set[str | None] = set()
        for book in runbooks:
            for step in book.steps:
                try:
                    action_class(step.action)
                except Exception as exc:  # reported when the step runs; nothing to do here
                    LOGGER.debug("warm-up: action %s not loaded: %s", step.action, exc)
                    continue
                params = step.typed_params
                if isinstance(params, TargetParams):
                    hosts.add(params.docker_host)
        for host in hosts:
            try:
                from remediations.dockerapi import docker_client

                client = await asyncio.to_thread(docker_client, self.context.resources, host)
                await asyncio.to_thread(client.ping)
            except Exception as exc:  # Docker down now: the action will say so when it runs
                LOGGER.debug("warm-up: Docker at %s not reachable yet: %s", host or "the default socket", exc)

    def _intent(self, p: Prepared, dry_run: bool, decisions: Sequence[Mapping[str, Any]]) -> int:
        detail = {"plan": p.plan.as_dict(), "decisions": list(decisions), "summary": p.plan.summary}
        return self.store.journal_intent(
            check=p.check.name, target=p.target.key, runbook=p.runbook.name, step=p.step_index,
            action=p.step.action, dry_run=dry_run, detail=self.redactor.data(detail),
        )

    def _outcome(self, intent: int, outcome: str, detail: Mapping[str, Any]) -> None:
        self.store.journal_outcome(intent, outcome, self.redactor.data(dict(detail)))

    def record_blocked(self, p: Prepared, decisions: Sequence[Mapping[str, Any]], dry_run: bool) -> Execution:
        """A guardrail said no: journal the plan and every decision, change nothing."""
        intent = self._intent(p, dry_run, decisions)
        blockers = [d["reason"] for d in decisions if not d.get("allowed", True)]
        self._outcome(intent, "blocked", {"reasons": blockers})
        return Execution(intent, "blocked", p.plan)

    def request_approval(self, p: Prepared, decisions: Sequence[Mapping[str, Any]], dry_run: bool) -> int:
        """Journal a pending approval request for this step; its id is what `paramedic approve` takes."""
        intent = self._intent(p, dry_run, decisions)
        self._outcome(intent, "pending-approval", {"reason": f"{p.plan.summary}: needs approval"})
        return intent

    async def execute(
        self,
        p: Prepared,
        decisions: Sequence[Mapping[str, Any]],
        dry_run: bool,
        verify: Callable[[], Awaitable[Verification]] | None = None,
        while_applying: AbstractContextManager[object] | None = None,
    ) -> Execution:
        """Journal, apply (unless dry-run, refused or nothing to do), verify, journal the outcome.

        ``while_applying`` is entered around the apply alone, not the verification (the
        daemon holds the check's scheduled probes while Docker restarts its target).
        """
        intent = self._intent(p, dry_run, decisions)
        if p.plan.refused is not None or not p.plan.changes:
            word = "refused" if p.plan.refused is not None else "nothing"
            self._outcome(intent, word, {"reason": p.plan.refused or p.plan.summary})
            return Execution(intent, word, p.plan)
        if dry_run:
            self._outcome(intent, "dry-run", {"would": p.plan.summary})
            return Execution(intent, "dry-run", p.plan)
        LOGGER.warning("runbook %s step %d: %s", p.runbook.name, p.step_index + 1, p.plan.summary,
                       extra={"runbook": p.runbook.name, "step": p.step_index, "target": p.target.key})
        try:
            with while_applying if while_applying is not None else nullcontext():
                result = await p.remediation.apply(p.plan)
        except Exception as exc:  # a bug or a dying server mid-action: recorded, never a crash
            result = Outcome(False, f"{p.step.action} raised {type(exc).__name__}: {exc}")
        verification = await verify() if result.ok and verify is not None else None
        ok = result.ok and (verification is None or verification.ok)
        word = "ok" if ok else "failed"
        self._outcome(intent, word, {"result": result.as_dict(),
                                     "verification": verification.as_dict() if verification else None})
        return Execution(intent, word, p.plan, result, verification)

    async def reconcile(self, check_now: Callable[[str], Awaitable[Result | None]]) -> list[dict[str, Any]]:
        """Close every intent left open by a crash: re-run its check once and record what was found.

        The action is not repeated: the guardrails count it as applied (``interrupted``), so a
        further attempt waits for cooldown and budget like any other.
        """
        closed = []
        for intent in self.store.open_intents():
            try:
                result = await check_now(intent["check"]) if intent["check"] else None
            except KeyError:  # the check is no longer configured
                result = None
            found = {"check_status": result.status.name if result else None,
                     "check_message": result.message if result else "check no longer configured",
                     "note": "the agent stopped during this action; it was not repeated"}
            word = "dry-run" if intent["dry_run"] else "interrupted"
            self._outcome(intent["id"], word, found)
            LOGGER.warning("reconciled interrupted action #%d (%s on %s): check now %s", intent["id"],
                           intent["action"], intent["target"], found["check_status"])
            closed.append(intent | {"outcome": word, "outcome_detail": found})
        return closed
