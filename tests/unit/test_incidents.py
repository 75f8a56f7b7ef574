"""The incident layer's pure parts and its driver over an in-memory store, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.cli.report import ReportData, gather, render
from agent.config.model import Config, parse_config
from agent.core.state import Health, Transition
from agent.kernel.results import Result, Status
from agent.notify.templates import Notice
from agent.runtime.incidents import Incidents, dedup_key, due, next_business_day, response_deadline
from agent.store.sqlite import Store

SECRET = "s3cr3t-bearer-value"
HOUR = 3600.0


def _config(severity: str = "SEV-1", extra: str = "") -> Config:
    return parse_config(f"""
checks:
  - name: web
    type: http
    url: http://127.0.0.1:9/
    headers: {{Authorization: "Bearer {SECRET}"}}
runbooks:
  - name: web-down
    severity: {severity}
    summary: Users cannot reach the shop
    match: {{checks: [web]}}
    steps:
      - action: restart
        params: {{container: web-1}}
{extra}
""")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Outbox:
    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def notify(self, notice: Notice) -> list[int]:
        self.notices.append(notice)
        return [len(self.notices)]

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]


def _layer(config: Config | None = None) -> tuple[Incidents, Store, Outbox, Clock]:
    clock = Clock()
    store = Store(":memory:", clock=clock)
    outbox = Outbox()
    return Incidents(config or _config(), store, outbox, clock=clock), store, outbox, clock


def _down(incidents: Incidents, at: float, message: str = "connection refused") -> None:
    result = Result("web", "http", Status.CRITICAL, message, 1.0, started_at=at)
    incidents.on_transition(Transition("web", Health.FAILING, Health.DOWN, at, Status.CRITICAL), result)


def _ok(incidents: Incidents, at: float) -> None:
    incidents.on_transition(Transition("web", Health.RECOVERING, Health.OK, at, Status.OK), None)


def test_down_opens_one_incident_per_runbook_and_target() -> None:
    incidents, store, outbox, clock = _layer()
    _down(incidents, clock.now)
    _down(incidents, clock.now + 5)  # DOWN again (e.g. after RECOVERING): the same incident
    [incident] = store.incidents()
    assert incident["dedup_key"] == dedup_key("web-down", "container web-1")
    assert incident["severity"] == "SEV-1"
    assert outbox.kinds() == ["initial"]
    notice = outbox.notices[0]
    assert (notice.severity, notice.impact, notice.status) == ("SEV-1", "Users cannot reach the shop", "Investigating")
    assert notice.issue == "web is DOWN: connection refused"


def test_recovery_resolves_and_a_new_failure_opens_a_new_incident() -> None:
    incidents, store, outbox, clock = _layer()
    _down(incidents, clock.now)
    clock.now += 90
    _ok(incidents, clock.now)
    [resolved] = store.incidents(include_resolved=True)
    assert resolved["status"] == "resolved"
    assert outbox.kinds() == ["initial", "resolution"]
    assert outbox.notices[-1].elapsed() == 90
    _down(incidents, clock.now + 10)
    assert len(store.incidents(include_resolved=True)) == 2
    assert [e["kind"] for e in store.incident_events(resolved["id"])] == ["opened", "state", "state", "resolved"]


def test_response_time_escalation_with_a_fake_clock() -> None:
    incidents, store, outbox, clock = _layer(_config("SEV-1"))
    _down(incidents, clock.now)
    opened = clock.now
    assert incidents.tick(opened + 299) == 0
    assert incidents.tick(opened + 300) == 1
    assert outbox.kinds() == ["initial", "escalation"]
    assert "SEV-1 response time (5m)" in outbox.notices[-1].update
    assert incidents.tick(opened + 301) == 0  # once
    assert store.incidents()[0]["escalated_at"] == opened + 300


def test_response_times_are_configurable() -> None:
    config = _config("SEV-2", "incidents: {response_times: {SEV-2: 1m}}")
    assert response_deadline(0.0, "SEV-2", config.incidents) == 60
    assert response_deadline(0.0, "SEV-3", config.incidents) == HOUR  # the seed's default stays


def test_sev4_waits_until_the_next_business_day() -> None:
    friday_evening = datetime(2026, 5, 29, 17, 0, tzinfo=UTC).timestamp()
    assert next_business_day(friday_evening) == datetime(2026, 6, 1, 9, 0, tzinfo=UTC).timestamp()
    tuesday_night = datetime(2026, 5, 26, 3, 0, tzinfo=UTC).timestamp()
    assert next_business_day(tuesday_night, "08:30") == datetime(2026, 5, 27, 8, 30, tzinfo=UTC).timestamp()
    config = _config("SEV-4")
    assert response_deadline(friday_evening, "SEV-4", config.incidents) == next_business_day(friday_evening)


def test_reminders_are_spaced_by_the_interval_and_ack_stops_them() -> None:
    incidents, _store, outbox, clock = _layer(_config("SEV-3", "incidents: {reminder_interval: 4h}"))
    _down(incidents, clock.now)
    opened = clock.now
    outbox.notices.clear()
    incidents.tick(opened + 30 * 60)
    assert outbox.kinds() == []
    incidents.tick(opened + HOUR)  # SEV-3: 1 h response time
    assert outbox.kinds() == ["escalation"]
    incidents.tick(opened + 4 * HOUR - 1)
    incidents.tick(opened + 4 * HOUR)
    incidents.tick(opened + 4 * HOUR + 600)
    assert outbox.kinds() == ["escalation", "reminder"]
    incidents.tick(opened + 8 * HOUR)
    assert outbox.kinds() == ["escalation", "reminder", "reminder"]
    clock.now = opened + 9 * HOUR
    assert incidents.ack(1, "alice") == "acked"
    assert incidents.ack(1, "bob") == "already"
    assert outbox.notices[-1].kind == "ack"
    assert outbox.notices[-1].owner == "alice"
    incidents.tick(opened + 30 * HOUR)
    assert outbox.kinds() == ["escalation", "reminder", "reminder", "ack"]


def test_ack_before_the_response_time_prevents_that_escalation() -> None:
    incidents, _store, outbox, clock = _layer()
    _down(incidents, clock.now)
    assert incidents.ack(1, "alice") == "acked"
    incidents.tick(clock.now + 10 * HOUR)
    assert outbox.kinds() == ["initial", "ack"]
    assert incidents.ack(99, "x") == "missing"


def test_due_is_pure() -> None:
    config = _config()
    row: dict[str, Any] = {"status": "open", "acked_at": None, "opened_at": 0.0, "severity": "SEV-2",
                           "reminded_at": None, "data": {"escalations": []}}
    assert due(row, 899, config.incidents) == []
    assert due(row, 900, config.incidents) == ["escalate"]
    assert due(row | {"data": {"escalations": ["response-time"]}}, 4 * HOUR, config.incidents) == ["remind"]
    assert due(row | {"acked_at": 5.0}, 10 * HOUR, config.incidents) == []
    assert due(row | {"status": "resolved"}, 10 * HOUR, config.incidents) == []


def test_secrets_never_reach_events_or_notices() -> None:
    incidents, store, outbox, clock = _layer()
    _down(incidents, clock.now, message=f"401 with Bearer {SECRET}")
    [incident] = store.incidents()
    blob = repr(store.incident_events(incident["id"])) + repr(incident) + repr(outbox.notices)
    assert SECRET not in blob
    assert "***" in outbox.notices[0].issue


def test_report_renders_recorded_data_in_time_order(tmp_path: Path) -> None:
    incident = {
        "id": 7, "dedup_key": "runbook:web-down/target:container web-1", "runbook": "web-down",
        "target": "container web-1", "check": "web", "severity": "SEV-2", "status": "resolved",
        "opened_at": 100.0, "updated_at": 200.0, "acked_at": 150.0, "acked_by": "alice", "resolved_at": 190.0,
        "escalated_at": None, "reminded_at": None,
        "data": {"issue": "web is DOWN: 503", "impact": "checkout broken", "last_fix": "restart ok",
                 "evidence": [{"name": "container logs", "ok": True, "output": "boom"}]},
    }
    results = [
        {"started_at": 80.0, "status": "OK", "message": "fine"},
        {"started_at": 90.0, "status": "CRITICAL", "message": "503"},
        {"started_at": 100.0, "status": "CRITICAL", "message": "503"},
        {"started_at": 170.0, "status": "OK", "message": "fine"},
    ]
    journal = [{
        "id": 12, "at": 110.0, "check": "web", "target": "container web-1", "runbook": "web-down", "step": 0,
        "action": "restart", "dry_run": False, "outcome": "ok", "outcome_at": 160.0,
        "detail": {"summary": "restart web-1", "decisions": [
            {"policy": "cooldown", "allowed": True, "reason": "no earlier action"}]},
        "outcome_detail": {"result": {"ok": True, "message": "restarted web-1"},
                           "verification": {"ok": True, "runs": 2, "passes": 2, "last_status": "OK",
                                            "last_message": "fine"}},
    }]
    events = [{"id": 1, "at": 100.0, "kind": "opened", "summary": "web is DOWN", "data": {}},
              {"id": 2, "at": 150.0, "kind": "ack", "summary": "acknowledged by alice", "data": {}},
              {"id": 3, "at": 190.0, "kind": "resolved", "summary": "resolved after 1m30s", "data": {}}]
    text = render(ReportData(incident, events, results, journal, now=300.0))
    assert text.startswith("# Incident #7: web is DOWN: 503")
    assert "| Severity | SEV-2 (High; respond within 15 minutes" in text
    assert "| Duration | 1m30s |" in text
    assert "| Acknowledged | 1970-01-01T00:02:30Z by alice |" in text
    order = ["**first failure**: web CRITICAL: 503", "**opened**", "**action #12**", "guardrail cooldown: allowed",
             "verification: passed after 2 run(s)", "**ack**", "**probe**: web CRITICAL → OK", "**resolved**"]
    positions = [text.index(fragment) for fragment in order]
    assert positions == sorted(positions)
    assert "**probe**: web OK → CRITICAL" in text
    for heading in ("## Evidence", "### container logs", "## Root Cause", "## Follow-ups"):
        assert heading in text


def test_report_from_the_store_masks_secrets() -> None:
    config = _config()
    incidents, store, _outbox, clock = _layer(config)
    store.apply_results([Result("web", "http", Status.CRITICAL, f"token {SECRET} refused", 1.0,
                                started_at=clock.now - 5)], config.thresholds())
    _down(incidents, clock.now)
    data = gather(store, 1, clock.now + 10, config.redactor)
    assert data is not None
    text = render(data)
    assert SECRET not in text
    assert "**first failure**" in text


@pytest.mark.parametrize("bad", ["{response_times: {SEV-9: 1m}}", "{reminder_interval: 0s}", "{timezone: Mars/Base}"])
def test_bad_incident_settings_are_config_errors(bad: str) -> None:
    from agent.kernel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"incidents\."):
        _config(extra=f"incidents: {bad}")
