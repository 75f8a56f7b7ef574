"""Incidents: what the agent tells people, and remembers, about a failure a runbook handles.

Lifecycle (docs/incidents.md)::

    check goes DOWN, a runbook matches  ->  open (one per runbook + target: the dedup key)
        evidence collected (read only)  ->  initial alert (the seed's "Initial Response")
    each action, guardrail block        ->  update
    ladder exhausted, guardrail gives
    up, approval needed, or open past
    the severity's response time        ->  escalation (once per reason)
    open and not acknowledged           ->  reminder, at most every ``reminder_interval``
    `paramedic incidents ack ID`        ->  acknowledgement (stops reminders and the
                                            response-time escalation; PagerDuty acknowledge)
    the check is OK again               ->  resolution

Every step is an event on the incident's timeline (``incident_events``), which
``paramedic incidents report`` turns into the post-incident report with the journal and
the stored results. Notices go to the :class:`~agent.runtime.outbox.Notifier`, whose
outbox makes sending asynchronous: nothing here waits on a receiver.

The decisions (is a reminder due, is the response time past, when is the next business
day) are pure functions of an incident row, the settings and a time; :class:`Incidents`
is the thin driver that reads the store, applies them and writes back. It runs on the
daemon's event loop (hooks from the transition announcer and the runbook engine) and
never raises into its callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from agent.config.model import Config, Runbook
from agent.config.sections import NEXT_BUSINESS_DAY, IncidentSettings
from agent.core import runbooks
from agent.core.state import Health, Transition
from agent.core.targets import dedup_key, runbook_target, target_key
from agent.kernel.durations import format_duration
from agent.kernel.literals import NoticeKind, SevLevel
from agent.kernel.logs import LOGGER
from agent.kernel.results import Result
from agent.kernel.targets import Target
from agent.notify.templates import Notice
from agent.runtime.remedy_events import RemedyEvents
from agent.store.sqlite import Store
from checks.base import CheckSpec

if TYPE_CHECKING:
    from agent.core import guardrails
    from agent.runtime.evidence import EvidenceCollector
    from agent.runtime.executor import Execution, Prepared

Due = Literal["escalate", "remind"]
RESPONSE_TIME = "response-time"


class Notify(Protocol):
    """What the incident layer needs of a notifier (``agent.runtime.outbox.Notifier``)."""

    def notify(self, notice: Notice) -> list[int]:
        """Queue ``notice``; returns the outbox row ids."""
        ...


# --------------------------------------------------------------------------- pure decisions


def next_business_day(at: float, start: str = "09:00", timezone: str = "UTC") -> float:
    """``start`` o'clock on the first Monday-to-Friday day after the day of ``at``, in ``timezone``."""
    zone = ZoneInfo(timezone)
    day = datetime.fromtimestamp(at, zone).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    hour, minute = (int(x) for x in start.split(":"))
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()


def response_deadline(opened_at: float, severity: str, settings: IncidentSettings) -> float:
    """When an un-acknowledged incident of ``severity`` opened at ``opened_at`` escalates."""
    limit = settings.response_time(severity)
    if limit == NEXT_BUSINESS_DAY:
        return next_business_day(opened_at, settings.business_day_start, settings.timezone)
    assert isinstance(limit, float)
    return opened_at + limit


def human_duration(seconds: float) -> str:
    """``1.8s`` / ``2m5s``: :func:`format_duration` of a measured time, without its noise digits."""
    return format_duration(round(seconds, 1) if seconds < 10 else float(round(seconds)))


def response_label(severity: str, settings: IncidentSettings) -> str:
    """``5m`` / ``next business day``: the configured response time, for messages."""
    limit = settings.response_time(severity)
    return "next business day" if limit == NEXT_BUSINESS_DAY else format_duration(float(limit))


def due(incident: Mapping[str, Any], now: float, settings: IncidentSettings) -> list[Due]:
    """What an incident needs at ``now``: an escalation for its response time, a reminder, both, or nothing.

    Only open, un-acknowledged incidents need anything. The response-time escalation
    happens once; a reminder is due ``reminder_interval`` after the last one (or after
    opening), so reminders never come closer together than that.
    """
    if incident["status"] != "open" or incident.get("acked_at") is not None:
        return []
    out: list[Due] = []
    escalations = (incident.get("data") or {}).get("escalations") or []
    if RESPONSE_TIME not in escalations and now >= response_deadline(incident["opened_at"], incident["severity"],
                                                                       settings):
        out.append("escalate")
    last = incident.get("reminded_at") or incident["opened_at"]
    if now - last >= settings.reminder_interval:
        out.append("remind")
    return out


def build_notice(kind: NoticeKind, incident: Mapping[str, Any], settings: IncidentSettings, now: float,
                 **fields: Any) -> Notice:
    """A notice about ``incident`` filled from its row and data (the seed's template fields)."""
    data = incident.get("data") or {}
    severity: SevLevel = incident["severity"]
    base: dict[str, Any] = {
        "service": settings.service or data.get("service") or incident.get("target") or incident.get("check") or "",
        "issue": data.get("issue", ""), "impact": data.get("impact", ""), "owner": incident.get("acked_by") or
        settings.owner, "started_at": incident["opened_at"], "updated_at": now,
        "resolved_at": incident.get("resolved_at"), "runbook": incident.get("runbook") or "",
        "check": incident.get("check") or "", "target": incident.get("target") or "",
    }
    base.update(fields)
    return Notice(kind, int(incident["id"]), str(incident["dedup_key"]), severity, **base)


def execution_text(prepared: Prepared, execution: Execution) -> str:
    """``step 1 restart container web: restart (graceful) ... -> ok, verified after 2 run(s)``."""
    text = f"step {prepared.step_index + 1} {prepared.step.action} on {prepared.target.key}: " \
           f"{execution.plan.summary} -> {execution.outcome}"
    if execution.result is not None and not execution.result.ok:
        text += f" ({execution.result.message})"
    verification = execution.verification
    if verification is not None:
        data = verification.as_dict()
        text += f", verification {'passed' if data.get('ok') else 'failed'} after {data.get('runs')} run(s)"
    return text


# --------------------------------------------------------------------------- the driver


class Incidents(RemedyEvents):
    """Opens, updates, escalates, reminds and resolves incidents in the store; sends their notices.

    ``spawn`` starts the evidence collection in the background (default: a task on the
    running loop; without a loop the alert goes out without evidence).
    """

    def __init__(self, config: Config, store: Store, notifier: Notify | None = None, *,
                 collector: EvidenceCollector | None = None, clock: Callable[[], float] = time.time,
                 spawn: Callable[[Coroutine[Any, Any, None]], Any] | None = None) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier
        self.collector = collector
        self.clock = clock
        self._spawn = spawn
        self._tasks: set[asyncio.Task[None]] = set()
        self._initial_pending: set[int] = set()  # opened, alert held back until the evidence is in
        self._resolve_after_action: dict[int, float] = {}  # recovered while its action was still running

    @property
    def settings(self) -> IncidentSettings:
        """The ``incidents:`` section of the current config."""
        return self.config.incidents

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: new response times, reminders, evidence and message settings, runbooks.

        The notifier's channels are the notifier's business (``Notifier.apply``)."""
        self.config = config
        if self.collector is not None:
            self.collector.config = config

    # ------------------------------------------------------------------ transitions

    def on_transition(self, t: Transition, result: Result | None) -> None:
        """The daemon's transition hook: DOWN opens (if a runbook matches), OK resolves."""
        try:
            self._transition(t, result)
        except Exception:
            LOGGER.exception("incident layer failed on %s -> %s of %s", t.before.value, t.after.value, t.check)

    def _transition(self, t: Transition, result: Result | None) -> None:
        message = self.config.redactor.text(result.message) if result is not None else ""
        if t.after is Health.DOWN:
            try:
                spec = self.config.check(t.check)
            except KeyError:
                return
            book = runbooks.match(self.config.runbooks, spec, t.status)
            if book is not None:
                self.open(book, spec, message, t.at)
        for incident in self._open_for_check(t.check):
            self._event(incident, "state", f"{t.check}: {t.before.value} -> {t.after.value} ({t.status.name}"
                        f"{': ' + message if message else ''})", {"from": t.before.value, "to": t.after.value,
                                                                  "status": t.status.name}, at=t.at)
            if t.after is Health.OK:
                if self._action_running(incident):
                    # the check passed during the action's verification: the update about the
                    # action goes out first, then the resolution (action() resolves it)
                    self._resolve_after_action[incident["id"]] = t.at
                else:
                    self.resolve(incident, t.at)

    def _action_running(self, incident: Mapping[str, Any]) -> bool:
        now = self.clock()
        return any(i["target"] == incident["target"] and now - i["at"] < 3600 for i in self.store.open_intents())

    def _open_for_check(self, check: str) -> list[dict[str, Any]]:
        return [i for i in self.store.incidents() if i["check"] == check]

    def open(self, book: Runbook, spec: CheckSpec, message: str, at: float | None = None) -> dict[str, Any]:
        """The open incident of this runbook and check's target, opened now if there is none."""
        at = self.clock() if at is None else at
        target = runbook_target(book, spec)
        key = target_key(book, spec)
        issue = f"{spec.name} is DOWN" + (f": {message}" if message else "")
        data = {"issue": issue, "impact": book.summary or f"{spec.name} failing", "service": key,
                "escalation": book.escalation, "escalations": []}
        incident, created = self.store.incident_open(
            dedup_key=dedup_key(book.name, key), runbook=book.name, target=key, check=spec.name,
            severity=book.severity, at=at, data=self.config.redactor.data(data))
        if not created:
            return incident
        self._event(incident, "opened", f"{issue}; runbook {book.name} ({book.severity}, respond within "
                    f"{response_label(book.severity, self.settings)})", {"runbook": book.name}, at=at)
        LOGGER.warning("incident %d opened: %s (%s, runbook %s)", incident["id"], issue, book.severity, book.name,
                       extra={"incident": incident["id"], "severity": book.severity, "runbook": book.name})
        self._initial_pending.add(incident["id"])
        if self.collector is not None and self.settings.evidence.enabled and self._start(
                self._gather(incident["id"], book, spec, target)):
            return incident
        self._send_initial(incident["id"])
        return incident

    def _start(self, coro: Coroutine[Any, Any, None]) -> bool:
        if self._spawn is not None:
            self._spawn(coro)
            return True
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return False
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _gather(self, incident_id: int, book: Runbook, spec: CheckSpec, target: Target) -> None:
        assert self.collector is not None
        try:
            found = [e.as_dict() for e in await self.collector.collect(book, spec, target)]
            incident = self.store.incident(incident_id)
            if incident is not None and found:
                data = dict(incident["data"]) | {"evidence": found}
                self.store.incident_set(incident_id, self.clock(), only_open=False, data=data)
                ok = sum(1 for e in found if e["ok"])
                self._event(incident, "evidence", f"evidence collected: {ok} of {len(found)} collector(s) answered",
                            {"evidence": found})
        except Exception:
            LOGGER.exception("collecting evidence for incident %d failed", incident_id)
        finally:
            self._send_initial(incident_id)

    async def drain(self, timeout: float = 30.0, *, cancel_late: bool = False) -> None:
        """Wait for evidence collections in flight (shutdown), then send alerts still held back.

        ``cancel_late``: collections still running after ``timeout`` are cancelled (a cron run,
        which is about to end); their alerts go out without that evidence."""
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            if cancel_late and late:
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        for incident_id in list(self._initial_pending):
            self._send_initial(incident_id)

    def _send_initial(self, incident_id: int) -> None:
        if incident_id not in self._initial_pending:
            return
        self._initial_pending.discard(incident_id)
        incident = self.store.incident(incident_id)
        if incident is None:
            return
        from agent.runtime.evidence import summary

        evidence = summary(incident["data"].get("evidence") or [])
        self._notify(build_notice("initial", incident, self.settings, self.clock(), status="Investigating",
                                  evidence=evidence, next_step=self._first_step(incident)))

    def _first_step(self, incident: Mapping[str, Any]) -> str:
        book = self._book(incident.get("runbook"))
        if book is None or not book.steps:
            return ""
        return f"runbook {book.name} step 1: {book.steps[0].action}"

    def _book(self, name: str | None) -> Runbook | None:
        return next((b for b in self.config.runbooks if b.name == name), None)

    # ------------------------------------------------------------------ resolve, ack

    def resolve(self, incident: Mapping[str, Any], at: float | None = None) -> bool:
        """Close ``incident`` (its check recovered); False if it was not open any more."""
        at = self.clock() if at is None else at
        if not self.store.incident_set(incident["id"], at, status="resolved", resolved_at=at):
            return False
        self._send_initial(incident["id"])  # an alert still held back goes first
        fresh = self.store.incident(incident["id"]) or dict(incident)
        how = fresh["data"].get("last_fix") or f"{fresh.get('check')} passes its checks again"
        self._event(fresh, "resolved", f"resolved after {human_duration(at - fresh['opened_at'])}: {how}", at=at)
        LOGGER.warning("incident %d resolved: %s", fresh["id"], how, extra={"incident": fresh["id"]})
        self._notify(build_notice("resolution", fresh, self.settings, at, status="Resolved", resolution=how))
        return True

    def ack(self, incident_id: int, by: str) -> Literal["acked", "already", "resolved", "missing"]:
        """Acknowledge: reminders and the response-time escalation stop; PagerDuty is told."""
        now = self.clock()
        incident = self.store.incident(incident_id)
        if incident is None:
            return "missing"
        if incident["status"] != "open":
            return "resolved"
        if not self.store.incident_set(incident_id, now, only_null="acked_at", acked_at=now, acked_by=by):
            return "already"
        fresh = self.store.incident(incident_id) or incident
        self._event(fresh, "ack", f"acknowledged by {by}", {"by": by}, at=now)
        self._notify(build_notice("ack", fresh, self.settings, now, status="Acknowledged", owner=by,
                                  update=f"acknowledged by {by}; reminders stop"))
        return "acked"

    # ------------------------------------------------------------------ escalations and reminders

    def escalate(self, incident: Mapping[str, Any], key: str, reason: str, at: float | None = None) -> bool:
        """Escalate ``incident`` for ``reason`` unless it already was for ``key``; True if it was now."""
        at = self.clock() if at is None else at
        fresh = self.store.incident(incident["id"])
        if fresh is None or fresh["status"] != "open":
            return False
        data = dict(fresh["data"])
        if key in (data.get("escalations") or []):
            return False
        data["escalations"] = [*(data.get("escalations") or []), key]
        self.store.incident_set(fresh["id"], at, data=data)
        self.store.incident_set(fresh["id"], at, only_null="escalated_at", escalated_at=at)
        fresh = self.store.incident(fresh["id"]) or fresh
        reason = self.config.redactor.text(reason)
        self._event(fresh, "escalated", f"escalated: {reason}", {"reason": reason, "key": key}, at=at)
        LOGGER.error("incident %d escalated: %s", fresh["id"], reason, extra={"incident": fresh["id"]})
        path = fresh["data"].get("escalation") or ""
        self._notify(build_notice("escalation", fresh, self.settings, at, status="Escalated", update=reason,
                                  next_step=path or "a person must act"))
        return True

    def tick(self, now: float | None = None) -> int:
        """Escalate incidents past their response time, remind about open ones; returns notices sent."""
        now = self.clock() if now is None else now
        sent = 0
        for incident_id, at in list(self._resolve_after_action.items()):  # an action another process ran
            incident = self.store.incident(incident_id)
            if incident is None or not self._action_running(incident):
                self._resolve_after_action.pop(incident_id, None)
                if incident is not None and self._still_ok(incident):
                    sent += self.resolve(incident, at)
        for incident in self.store.incidents():
            for what in due(incident, now, self.settings):
                if what == "escalate":
                    limit = response_label(incident["severity"], self.settings)
                    sent += self.escalate(incident, RESPONSE_TIME, f"not acknowledged within the {incident['severity']}"
                                          f" response time ({limit})", at=now)
                else:
                    sent += self._remind(incident, now)
        return sent

    def _remind(self, incident: Mapping[str, Any], now: float) -> bool:
        if not self.store.incident_set(incident["id"], now, reminded_at=now):
            return False
        fresh = self.store.incident(incident["id"]) or dict(incident)
        open_for = human_duration(now - fresh["opened_at"])
        self._event(fresh, "reminder", f"reminder: open for {open_for}, not acknowledged", at=now)
        status = "Open, escalated" if fresh.get("escalated_at") else "Open"
        self._notify(build_notice("reminder", fresh, self.settings, now, status=status,
                                  next_step=f"acknowledge with `paramedic incidents ack {fresh['id']}`"))
        return True

    async def run_forever(self, interval: float = 15.0) -> None:
        """Call :meth:`tick` every ``interval`` seconds until cancelled; never dies of an error."""
        while True:
            try:
                self.tick()
            except Exception:
                LOGGER.exception("incident reminders/escalations failed; will retry")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ the runbook engine's events

    def _for(self, prepared: Prepared) -> dict[str, Any]:
        key = dedup_key(prepared.runbook.name, prepared.target.key)
        incident = self.store.open_incident(key)
        if incident is None:  # DOWN before this process started: the engine acts, so there is an incident
            incident = self.open(prepared.runbook, prepared.check, "", None)
        return incident

    def action(self, prepared: Prepared, execution: Execution) -> None:
        incident = self._for(prepared)
        self._send_initial(incident["id"])
        text = self.config.redactor.text(execution_text(prepared, execution))
        detail = self.config.redactor.data({
            "intent_id": execution.intent_id, "action": prepared.step.action, "step": prepared.step_index,
            "target": prepared.target.key, "outcome": execution.outcome, "plan": execution.plan.as_dict(),
            "result": execution.result.as_dict() if execution.result else None,
            "verification": execution.verification.as_dict() if execution.verification else None,
        })
        self._event(incident, "action", f"#{execution.intent_id} {text}", detail)
        if execution.outcome == "ok":
            data = dict((self.store.incident(incident["id"]) or incident)["data"]) | {"last_fix": text}
            self.store.incident_set(incident["id"], self.clock(), data=data)
            next_step = "Monitoring until the check passes again"
        elif execution.outcome == "dry-run":
            next_step = "Dry run: nothing was changed; a person must act"
        else:
            next_step = "The runbook's next step, or escalation"
        self._notify(build_notice("update", incident, self.settings, self.clock(), status="Remediating",
                                  update=text, next_step=next_step))
        recovered_at = self._resolve_after_action.pop(incident["id"], None)
        if recovered_at is not None and self._still_ok(incident):
            self.resolve(self.store.incident(incident["id"]) or incident, recovered_at)

    def _still_ok(self, incident: Mapping[str, Any]) -> bool:
        check = incident.get("check")
        state = self.store.states([check]).get(check) if check else None
        return state is not None and state.visible is Health.OK

    def blocked(self, prepared: Prepared, admission: guardrails.Admission) -> None:
        incident = self._for(prepared)
        self._send_initial(incident["id"])
        reasons = [self.config.redactor.text(d.reason) for d in admission.blocked]
        text = (f"step {prepared.step_index + 1} {prepared.step.action} on {prepared.target.key} blocked by "
                f"guardrails: {'; '.join(reasons)}")
        self._event(incident, "blocked", text, {"reasons": reasons, "policies": [d.policy for d in admission.blocked],
                                                "decisions": self.config.redactor.data(
                                                    [d.as_dict() for d in admission.decisions])})
        self._notify(build_notice("update", incident, self.settings, self.clock(), status="Blocked",
                                  update=text, next_step="Waiting for the guardrails, or a person"))

    def approval_needed(self, prepared: Prepared, request_id: int) -> None:
        incident = self._for(prepared)
        self._send_initial(incident["id"])
        reason = (f"step {prepared.step_index + 1} ({self.config.redactor.text(prepared.plan.summary)}) needs "
                  f"approval: `paramedic approve {request_id}` or `paramedic reject {request_id}`")
        self._event(incident, "approval", reason, {"request_id": request_id})
        self.escalate(incident, f"approval:{request_id}", reason)

    def escalated(self, runbook: str, target: str, reason: str) -> None:
        incident = self.store.open_incident(dedup_key(runbook, target))
        if incident is None:
            LOGGER.debug("escalation of %s on %s without an open incident", runbook, target)
            return
        self._send_initial(incident["id"])
        self.escalate(incident, f"engine:{reason}", reason)

    # ------------------------------------------------------------------ plumbing

    def _event(self, incident: Mapping[str, Any], kind: str, summary: str, data: Mapping[str, Any] | None = None,
               at: float | None = None) -> None:
        self.store.incident_event(incident["id"], self.clock() if at is None else at, kind,
                                  self.config.redactor.text(summary), self.config.redactor.data(dict(data or {})))

    def _notify(self, notice: Notice) -> None:
        if self.notifier is None:
            return
        try:
            self.notifier.notify(notice)
        except Exception:
            LOGGER.exception("queueing the %s notice of incident %d failed", notice.kind, notice.incident_id)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it (helper for the daemon wiring)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
