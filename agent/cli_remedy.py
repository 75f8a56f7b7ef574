"""``paramedic audit`` and ``paramedic check --remediate``: runbooks from the command line.

Both use the same engine as the daemon (:class:`agent.remedy.Remedy`), the same store and
therefore the same guardrail counters: a cron job and a daemon on one store never exceed
one budget between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from agent.config import Config
from agent.executor import Execution, Executor
from agent.remedy import Proposal, Remedy
from agent.results import Result, Status
from agent.runner import run_once
from agent.state import Health
from agent.store import Store
from checks.base import Resources
from remediations.base import ActionContext


def _engine(config: Config, store: Store, resources: Resources, record: bool) -> Remedy:
    context = ActionContext(resources=resources, operator_stops=store.operator_stops,
                            image_history=store.image_history)
    executor = Executor(store, context, config.redactor)

    async def run_check(name: str) -> Result:
        [result] = await run_once([config.check(name)], config.redactor)
        if record:
            store.apply_results([result], config.thresholds())
        return result

    return Remedy(config, store, executor, run_check)


async def remediate(config: Config, results: Sequence[Result]) -> list[Execution]:
    """Act on every result whose check is DOWN (state already advanced by this run)."""
    store = Store(config.store_path())
    resources = Resources()
    try:
        remedy = _engine(config, store, resources, record=True)
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
        await resources.close()
        store.close()


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
