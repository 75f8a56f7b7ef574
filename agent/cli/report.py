"""The post-incident report (the seed's step 5: "Write incident report"), in Markdown.

:func:`gather` reads what the store recorded about one incident; :func:`render` is pure
(the same records always give the same text). The timeline merges three sources:

* the check's stored results: the first failure of the streak that opened the incident,
  then every result whose status differs from the one before (a state change);
* the action journal (what ``paramedic history`` shows): each action with its intent id,
  plan, every guardrail decision and the verification; blocked decisions and approval
  requests too;
* the incident's own events: opened, evidence, state transitions, escalations,
  reminders, acknowledgement, resolution.

Root cause and follow-ups are headings with placeholders for the people who write the
rest. Everything read passes the config's redactor before it is rendered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.kernel.redact import Redactor
from agent.notify.templates import SEVERITY_MATRIX, iso_time
from agent.runtime.incidents import human_duration
from agent.store.sqlite import Store

#: How far before the opening the report looks for the first failure of the streak.
LOOKBACK = 3600.0
#: Incident events that the journal already shows in more detail.
_JOURNALED = {"action", "blocked", "approval"}


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, as recorded (plain dicts from the store)."""

    incident: Mapping[str, Any]
    events: Sequence[Mapping[str, Any]] = ()
    results: Sequence[Mapping[str, Any]] = ()
    journal: Sequence[Mapping[str, Any]] = ()
    now: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


def gather(store: Store, incident_id: int, now: float, redactor: Redactor | None = None) -> ReportData | None:
    """Read incident ``incident_id``, its events, its check's results and its target's journal."""
    incident = store.incident(incident_id)
    if incident is None:
        return None
    opened, end = incident["opened_at"], incident["resolved_at"] or now
    results = store.results_between(incident["check"], opened - LOOKBACK, end + 1) if incident["check"] else []
    journal = []
    if incident["target"]:
        entries = store.journal(limit=10_000, since=opened - LOOKBACK, target=incident["target"])
        journal = [e for e in reversed(entries) if e["at"] <= end + 1 and e["at"] >= _streak_start(results, opened)
                   and (e["runbook"] in (None, incident["runbook"]))]
    data = ReportData(incident, store.incident_events(incident_id), results, journal, now)
    if redactor is None:
        return data
    return ReportData(redactor.data(dict(incident)), redactor.data(list(data.events)), redactor.data(list(results)),
                      redactor.data(journal), now)


def _streak_start(results: Sequence[Mapping[str, Any]], opened: float) -> float:
    """When the failure streak that led to the opening began (its first non-OK result)."""
    start = opened
    for r in reversed([r for r in results if r["started_at"] <= opened]):
        if r["status"] == "OK":
            break
        start = r["started_at"]
    return start


def _first_failure(results: Sequence[Mapping[str, Any]], opened: float) -> Mapping[str, Any] | None:
    start = _streak_start(results, opened)
    return next((r for r in results if r["started_at"] >= start and r["status"] != "OK"), None)


def _state_changes(results: Sequence[Mapping[str, Any]], since: float) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    previous = None
    for r in results:
        if previous is not None and r["status"] != previous and r["started_at"] >= since:
            out.append({**r, "previous": previous})
        previous = r["status"]
    return out


def _when(at: float | None) -> str:
    return iso_time(at) or "-"


def _action_lines(e: Mapping[str, Any]) -> list[str]:
    step = f"step {e['step'] + 1}" if e.get("step") is not None else "no step"
    mode = " (dry-run)" if e.get("dry_run") else ""
    outcome = e.get("outcome") or "interrupted (no outcome recorded)"
    detail, done = e.get("detail") or {}, e.get("outcome_detail") or {}
    lines = [f"- `{_when(e['at'])}` **action #{e['id']}**: {e['action']} on {e['target']}{mode} "
             f"(runbook {e.get('runbook')}, {step}, check {e.get('check')}) → **{outcome}**"]
    if detail.get("summary"):
        lines.append(f"  - plan: {detail['summary']}")
    for d in detail.get("decisions") or []:
        verdict = "allowed" if d.get("allowed", True) else "BLOCKED"
        lines.append(f"  - guardrail {d.get('policy')}: {verdict} — {d.get('reason')}")
    result = done.get("result") or {}
    if result.get("message"):
        lines.append(f"  - result: {result['message']}")
    for key in ("reasons", "reason", "would"):
        value = done.get(key)
        if value:
            lines.append(f"  - {key}: {value if isinstance(value, str) else '; '.join(map(str, value))}")
    verification = done.get("verification")
    if verification:
        verdict = "passed" if verification.get("ok") else "failed"
        lines.append(f"  - verification: {verdict} after {verification.get('runs')} run(s) "
                     f"({verification.get('passes')} passing, last {verification.get('last_status')}: "
                     f"{verification.get('last_message')})")
    if e.get("outcome_at"):
        lines.append(f"  - finished: `{_when(e['outcome_at'])}`")
    return lines


def timeline(data: ReportData) -> list[tuple[float, int, list[str]]]:
    """``(time, order, markdown lines)`` for every entry, sorted."""
    incident = data.incident
    opened = incident["opened_at"]
    rows: list[tuple[float, int, list[str]]] = []
    first = _first_failure(data.results, opened)
    if first is not None:
        rows.append((first["started_at"], 0, [f"- `{_when(first['started_at'])}` **first failure**: "
                                              f"{incident.get('check')} {first['status']}: {first['message']}"]))
        since = first["started_at"]
    else:
        since = opened
    for r in _state_changes(data.results, since):
        rows.append((r["started_at"], 1, [f"- `{_when(r['started_at'])}` **probe**: {incident.get('check')} "
                                          f"{r['previous']} → {r['status']}: {r['message']}"]))
    for e in data.journal:
        rows.append((e["at"], 2, _action_lines(e)))
    for ev in data.events:
        if ev["kind"] in _JOURNALED:
            continue
        rows.append((ev["at"], 3, [f"- `{_when(ev['at'])}` **{ev['kind']}**: {ev['summary']}"]))
    return sorted(rows, key=lambda row: (row[0], row[1]))


def render(data: ReportData) -> str:
    """The report in Markdown."""
    i = data.incident
    d = i.get("data") or {}
    label, response, path = SEVERITY_MATRIX.get(i["severity"], ("?", "?", "?"))
    end = i.get("resolved_at")
    duration = human_duration((end or data.now) - i["opened_at"]) + ("" if end else " so far (still open)")
    acked = f"{_when(i.get('acked_at'))} by {i.get('acked_by')}" if i.get("acked_at") else "not acknowledged"
    escalations = [ev["summary"] for ev in data.events if ev["kind"] == "escalated"]
    out = [
        f"# Incident #{i['id']}: {d.get('issue', '')}",
        "",
        "## Summary",
        "",
        "| | |",
        "| --- | --- |",
        f"| Severity | {i['severity']} ({label}; respond within {response}; escalation {path}) |",
        f"| Status | {i['status']} |",
        f"| Service | {d.get('service') or i.get('target') or '-'} |",
        f"| Check | {i.get('check') or '-'} |",
        f"| Runbook | {i.get('runbook') or '-'} |",
        f"| Target | {i.get('target') or '-'} |",
        f"| Impact | {d.get('impact') or 'Unknown'} |",
        f"| Opened | {_when(i['opened_at'])} |",
        f"| Acknowledged | {acked} |",
        f"| Escalated | {_when(i.get('escalated_at')) if i.get('escalated_at') else 'no'} |",
        f"| Resolved | {_when(end) if end else 'open'} |",
        f"| Duration | {duration} |",
        f"| Resolution | {d.get('last_fix') or ('check passed again' if end else '-')} |",
        f"| Dedup key | `{i['dedup_key']}` |",
        "",
    ]
    if escalations:
        out += ["Escalations:", "", *(f"- {text}" for text in escalations), ""]
    out += ["## Timeline", "", "Times are UTC.", ""]
    for _at, _order, lines in timeline(data):
        out += lines
    out += ["", "## Evidence", ""]
    evidence = d.get("evidence") or []
    if not evidence:
        out.append("_No evidence was collected._")
    for item in evidence:
        status = "" if item.get("ok") else " (collection failed)"
        out += [f"### {item.get('name')}{status}", "", "```", str(item.get("output", "")).replace("```", "'''"),
                "```", ""]
    out += [
        "",
        "## Root Cause",
        "",
        "_To be written: what failed and why (the evidence and timeline above are the starting point)._",
        "",
        "## Follow-ups",
        "",
        "- [ ] _Prevent a recurrence: (tracking item)_",
        "- [ ] _Update runbook_ " + f"`{i.get('runbook') or '-'}` _if its steps or guardrails need to change_",
        "- [ ] _Monitoring/alerting changes: (tracking item)_",
        "",
    ]
    return "\n".join(out)


def as_json(data: ReportData) -> str:
    """The same records as JSON (``paramedic incidents show -o json``)."""
    return json.dumps({"incident": data.incident, "events": list(data.events)}, indent=2, default=str)
