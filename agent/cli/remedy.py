"""``paramedic audit`` and ``paramedic check --remediate``: runbooks from the command line.

Both use the same engine as the daemon (:class:`agent.runtime.remedy.Remedy`), the same store and
therefore the same guardrail counters: a cron job and a daemon on one store never exceed
one budget between them. ``check --remediate`` also runs the incident layer for the run
(:func:`agent.app.incident_wiring.for_cron`): incidents open and resolve, notices are delivered
within a bounded time before it exits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from agent.config.model import Config
from agent.core.state import Health, Transition
from agent.kernel.models import Resources
from agent.kernel.results import Result, Status
from agent.runtime.executor import Execution, Executor
from agent.runtime.remedy import Proposal, Remedy
from agent.runtime.remedy_events import NO_EVENTS, RemedyEvents, SafeEvents
from agent.runtime.runner import run_once
from agent.store.sqlite import Store
from remediations.base import ActionContext

if TYPE_CHECKING:
    from agent.app.incident_wiring import IncidentLayer


TransitionHook = Callable[[Transition, Result | None], None]


def _engine(config: Config, store: Store, resources: Resources, record: bool,
            on_transition: TransitionHook | None = None, events: RemedyEvents = NO_EVENTS) -> Remedy:
    context = ActionContext(resources=resources, operator_stops=store.operator_stops,
                            image_history=store.image_history)
    executor = Executor(store, context, config.redactor)

    async def run_check(name: str) -> Result:
        [result] = await run_once([config.check(name)], config.redactor)
        if record:
            _, transitions = store.apply_results([result], config.thresholds())
            for t in transitions:  # a verification run that recovers the check resolves its incident
                if on_transition is not None:
                    on_transition(t, result)
        return result

    return Remedy(config, store, executor, run_check, events=events)


async def remediate(config: Config, results: Sequence[Result],
                    transitions: Sequence[Transition] = ()) -> list[Execution]:
    """Act on every result whose check is DOWN (state already advanced by this run).

    Incidents as in the daemon (docs/incidents.md, "Cron runs"): ``transitions`` (this run's,
    from ``store.apply_results``) open and resolve them, the engine's decisions update them,
    reminders and escalations that are due go out; then evidence gets a bounded wait and the
    outbox one bounded delivery. A notification problem is a warning on stderr, never an error.
    """
    from agent.app import incident_wiring

    store = Store(config.store_path())
    resources = Resources()
    layer: IncidentLayer | None = None
    try:
        try:
            layer, warnings = incident_wiring.for_cron(config, store, resources)
        except Exception as exc:
            warnings = [f"incidents not tracked this run: {config.redactor.text(f'{type(exc).__name__}: {exc}')}"]
        for line in warnings:
            click.echo(f"warning: {line}", err=True)
        hook = layer.incidents.on_transition if layer is not None else None
        events = SafeEvents(layer.incidents) if layer is not None else NO_EVENTS
        remedy = _engine(config, store, resources, record=True, on_transition=hook, events=events)
        if layer is not None:
            latest = {r.name: r for r in results}
            for t in transitions:
                layer.incidents.on_transition(t, latest.get(t.check))
        states = store.states([r.name for r in results])
        done = []
        for result in results:
            state = states.get(result.name)
            if state is None or state.health is not Health.DOWN or result.status is not Status.CRITICAL:
                continue
            execution = await remedy.handle(result, state)
            if execution is not None:
                done.append(execution)
        return done
    finally:
        if layer is not None:
            await _finish(layer, config)
        await resources.close()
        store.close()


async def _finish(layer: IncidentLayer, config: Config) -> None:
    """Evidence, then the bounded delivery; what went wrong is a warning on stderr."""
    from agent.app import incident_wiring

    try:
        report = await incident_wiring.finish_cron(layer, config)
    except Exception as exc:
        click.echo(f"warning: notifications not delivered: {config.redactor.text(f'{type(exc).__name__}: {exc}')}",
                   err=True)
        return
    if report is None:
        return
    for error in report.errors:
        click.echo(f"warning: notification not delivered: {error}", err=True)
    if report.interrupted:
        click.echo(f"warning: {report.interrupted} notification(s) cut short after "
                   f"{incident_wiring.CRON_DELIVERY_BUDGET:g}s", err=True)
    if report.pending > 0 and (report.errors or report.interrupted):
        click.echo(f"warning: {report.pending} notification(s) pending in the outbox; they are retried by the "
                   "next run or the daemon", err=True)


async def audit(config: Config, results: Sequence[Result]) -> list[Proposal]:
    """For each failing result: runbook, step, plan and every guardrail decision. Changes nothing."""
    store = Store(config.store_path())
    resources = Resources()
    try:
        remedy = _engine(config, store, resources, record=False)
        states = store.states([r.name for r in results])
        return [await remedy.propose(r, states.get(r.name)) for r in results if r.status is not Status.OK]
    finally:
        await resources.close()
        store.close()


def audit_text(proposals: Sequence[Proposal]) -> str:
    """The audit for people: one block per failing check."""
    if not proposals:
        return "every check passed: nothing to remediate"
    return "\n\n".join(_block(p) for p in proposals)


def _block(p: Proposal) -> str:
    lines = [f"{p.check}: {p.status.name}"]
    if p.runbook is None:
        lines.append("  no runbook matches: nothing would be done (a person must look)")
        return "\n".join(lines)
    lines.append(f"  runbook {p.runbook.name} ({p.runbook.severity}): {p.runbook.summary}")
    doc: dict[str, Any] = p.as_dict()
    choice = doc["choice"] or {}
    if "escalate" in choice:
        lines.append(f"  would escalate: {choice['escalate']}")
        return "\n".join(lines)
    lines.append(f"  step {choice['step']} ({choice['action']}): {choice['reason']}")
    if p.prepared is not None:
        plan = p.prepared.plan
        lines.append(f"  plan: {plan.summary}")
        lines.extend(f"    - {step}" for step in plan.steps)
    if p.admission is not None:
        verdict = "ALLOWED" if p.admission.allowed else "BLOCKED"
        if p.admission.dry_run and p.admission.allowed:
            verdict += " (dry-run)"
        lines.append(f"  guardrails: {verdict}")
        for d in p.admission.decisions:
            lines.append(f"    {d.policy:<16} {'allowed' if d.allowed else 'BLOCKED':<8} {d.reason}")
    return "\n".join(lines)


def execution_lines(executions: Sequence[Execution]) -> list[str]:
    """One line per remediation ``check --remediate`` carried out or recorded."""
    out = []
    for e in executions:
        verified = ""
        if e.verification is not None:
            verified = f", verification {'passed' if e.verification.ok else 'failed'}"
        out.append(f"remediation #{e.intent_id}: {e.plan.summary} -> {e.outcome}{verified}")
    return out


def echo_executions(executions: Sequence[Execution]) -> None:
    """Print :func:`execution_lines` to stderr (stdout stays the check's table or JSON)."""
    for line in execution_lines(executions):
        click.echo(line, err=True)
