"""Notification texts, the ``notifications:`` config, and the pure parts of channels and outbox.

No servers here: the channels against real receivers are in
``tests/integration/test_notify_channels.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import Config, parse_config
from agent.kernel.errors import ConfigError
from agent.kernel.literals import NOTICE_KINDS, NoticeKind
from agent.notify import Notice
from agent.notify.channels import pagerduty_dedup_key, pagerduty_event, sign, slack_escape
from agent.notify.templates import (
    CONTEXT_KEYS,
    SEVERITY_MATRIX,
    TITLES,
    Renderer,
    context,
    render,
    render_subject,
    sample_notice,
    template_problem,
)
from agent.runtime.outbox import Outbox, RetryPolicy
from agent.store.sqlite import Store

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def notice(kind: NoticeKind = "initial", **changes: Any) -> Notice:
    base = Notice(
        kind=kind, incident_id=7, dedup_key="runbook:web-down/target:web", severity="SEV-2",
        service="Counterfactual Lab", issue="web-health is DOWN", impact="Checkout fails for everyone",
        status="Restarting", owner="alice", started_at=T0, updated_at=T0 + 120, resolved_at=None,
        update="Restarted container web", next_step="Roll back if the restart does not hold", eta="10 minutes",
        resolution="Rolled back to web:previous", root_cause="Bad deploy", follow_up="INC-7 post-mortem",
    )
    return dataclasses.replace(base, **changes)


def fields(text: str) -> list[tuple[str, str]]:
    """``Key: value`` lines of the seed's block (up to the first blank line after the fields)."""
    lines = text.splitlines()
    out = []
    for line in lines[2:]:
        if not line:
            break
        key, _, value = line.partition(": ")
        out.append((key, value))
    return out


def config(notifications: str, env: dict[str, str] | None = None) -> Config:
    text = "checks: []\nnotifications:\n" + textwrap.indent(textwrap.dedent(notifications), "  ")
    return parse_config(text, env=env or {})


def problems(notifications: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(notifications)
    return info.value.problems


# ---------------------------------------------------------------- the seed's templates


def test_initial_alert_is_the_seed_template() -> None:
    text = render(notice("initial", resolved_at=None))
    assert text.splitlines()[:2] == ["🚨 INCIDENT ALERT 🚨", ""]
    assert fields(text) == [
        ("Severity", "SEV-2"), ("Service", "Counterfactual Lab"), ("Issue", "web-health is DOWN"),
        ("Impact", "Checkout fails for everyone"), ("Status", "Restarting"), ("Owner", "alice"),
        ("Started", "2026-05-28T20:26:40Z"),
    ]


def test_update_is_the_seed_template() -> None:
    text = render(notice("update"))
    assert text.splitlines()[0] == "📊 INCIDENT UPDATE 📊"
    assert fields(text) == [
        ("Severity", "SEV-2"), ("Issue", "web-health is DOWN"), ("Update", "Restarted container web"),
        ("Next Step", "Roll back if the restart does not hold"), ("ETA", "10 minutes"), ("Owner", "alice"),
    ]


def test_resolution_is_the_seed_template_with_the_duration_from_the_timestamps() -> None:
    text = render(notice("resolution", resolved_at=T0 + 930))
    assert text.splitlines()[0] == "✅ INCIDENT RESOLVED ✅"
    assert fields(text) == [
        ("Severity", "SEV-2"), ("Issue", "web-health is DOWN"), ("Resolution", "Rolled back to web:previous"),
        ("Duration", "15m30s"), ("Root Cause", "Bad deploy"), ("Follow-up", "INC-7 post-mortem"),
    ]


def test_reminder_says_how_long_it_has_been_open() -> None:
    text = render(notice("reminder", updated_at=T0 + 4 * 3600))
    assert text.splitlines()[0] == "⏰ INCIDENT REMINDER ⏰"
    assert dict(fields(text)) == {
        "Severity": "SEV-2", "Service": "Counterfactual Lab", "Issue": "web-health is DOWN", "Status": "Restarting",
        "Owner": "alice", "Started": "2026-05-28T20:26:40Z", "Open For": "4h",
        "Next Step": "Roll back if the restart does not hold",
    }


@pytest.mark.parametrize("severity", ["SEV-1", "SEV-2", "SEV-3", "SEV-4"])
def test_escalation_carries_the_seed_matrix_for_its_severity(severity: str) -> None:
    text = render(notice("escalation", severity=severity, update="Runbook ladder exhausted"))
    _label, response, path = SEVERITY_MATRIX[severity]  # type: ignore[index]
    got = dict(fields(text))
    assert text.splitlines()[0] == "🆘 INCIDENT ESCALATED 🆘"
    assert got["Severity"] == severity
    assert got["Reason"] == "Runbook ladder exhausted"
    assert got["Response Time"] == response
    assert got["Escalation Path"] == path
    assert {"Service", "Issue", "Impact", "Status", "Owner", "Started"} <= set(got)


def test_ack_names_who_took_it() -> None:
    text = render(notice("ack", owner="bob", status="Acknowledged", update=""))
    assert text.splitlines()[0] == "👀 INCIDENT ACKNOWLEDGED 👀"
    assert dict(fields(text)) == {"Severity": "SEV-2", "Issue": "web-health is DOWN", "Status": "Acknowledged",
                                  "Owner": "bob"}


def test_seed_matrix_matches_the_runbook() -> None:
    assert SEVERITY_MATRIX["SEV-1"] == ("Critical", "5 minutes", "Primary → Secondary → Manager")
    assert SEVERITY_MATRIX["SEV-4"][1] == "Next business day"


def test_empty_fields_read_like_the_seed_placeholders() -> None:
    bare = Notice("initial", 1, "k", "SEV-3", "svc", "broken")
    assert dict(fields(render(bare))) == {"Severity": "SEV-3", "Service": "svc", "Issue": "broken",
                                          "Impact": "Unknown", "Status": "Investigating", "Owner": "paramedic",
                                          "Started": "Unknown"}
    resolved = dict(fields(render(dataclasses.replace(bare, kind="resolution"))))
    assert resolved["Duration"] == "Unknown"
    assert resolved["Root Cause"].startswith("Unknown")
    assert dict(fields(render(dataclasses.replace(bare, kind="update"))))["ETA"] == "Unknown"


def test_runbook_target_and_evidence_follow_only_when_known() -> None:
    plain = render(notice("initial"))
    assert "Runbook:" not in plain
    assert "Evidence" not in plain
    rich = render(notice("initial", runbook="web-down", target="web", check="web-health",
                         evidence="last log line: OOM"))
    assert "\n\nRunbook: web-down\nTarget: web (check web-health)\n\nEvidence:\nlast log line: OOM" in rich
    assert fields(rich) == fields(plain)  # the seed block itself is unchanged


def test_every_kind_has_a_title_and_renders() -> None:
    for kind in NOTICE_KINDS:
        text = render(sample_notice(kind))
        assert text.startswith(TITLES[kind] + "\n\nSeverity: SEV-1\n")


def test_rendering_is_pure() -> None:
    assert render(notice("update")) == render(notice("update"))
    assert render_subject(notice("initial")) == "[SEV-2] INCIDENT ALERT: web-health is DOWN (Counterfactual Lab)"


def test_explicit_duration_wins_and_times_are_utc_iso() -> None:
    n = notice("resolution", resolved_at=T0 + 60, duration=3600.0)
    assert n.elapsed() == 3600.0
    ctx = context(n)
    assert ctx["duration"] == "1h"
    assert ctx["resolved"] == "2026-05-28T20:27:40Z"
    assert all(isinstance(v, str) for v in ctx.values())
    assert set(ctx) == set(CONTEXT_KEYS)


def test_huge_text_is_truncated() -> None:
    text = render(notice("initial", evidence="x" * 50_000))
    assert len(text) <= 16_000
    assert text.endswith("(truncated)")


# ---------------------------------------------------------------- Notice


def test_notice_rejects_unknown_kind_severity_and_missing_key() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        notice(kind="page")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown severity"):
        notice(severity="P1")
    with pytest.raises(ValueError, match="dedup_key"):
        notice(dedup_key="")


def test_notice_round_trips_through_its_record() -> None:
    n = notice("resolution", resolved_at=T0 + 90, evidence="ünïcode ✅")
    record = json.loads(json.dumps(n.to_record()))
    assert Notice.from_record(record) == n
    assert Notice.from_record(record | {"from_a_newer_paramedic": 1}) == n


def test_payload_has_iso_times_and_duration() -> None:
    doc = notice("resolution", resolved_at=T0 + 90).payload()
    assert doc["started"] == "2026-05-28T20:26:40Z"
    assert doc["resolved"] == "2026-05-28T20:28:10Z"
    assert doc["duration"] == 90.0
    assert doc["duration_text"] == "1m30s"
    assert doc["severity"] == "SEV-2"
    assert doc["kind"] == "resolution"


# ---------------------------------------------------------------- custom templates in config


def test_custom_template_per_channel_and_kind() -> None:
    cfg = config("""
        channels:
          - name: chat
            type: log
            templates:
              initial: "{{ severity }} {{ service }}: {{ issue | upper }} since {{ started }}"
    """)
    spec = cfg.notifications.channel("chat")
    renderer = Renderer(spec.templates)
    assert renderer.text(notice("initial")) == "SEV-2 Counterfactual Lab: WEB-HEALTH IS DOWN since 2026-05-28T20:26:40Z"
    assert renderer.text(notice("update")).startswith("📊 INCIDENT UPDATE 📊")  # not customised: the default


def test_sandbox_escape_is_refused_at_config_load() -> None:
    got = problems("""
        channels:
          - {name: chat, type: log, templates: {initial: "{{ ''.__class__.__mro__ }}"}}
    """)
    assert len(got) == 1
    assert got[0].startswith("notifications.channels[0].templates.initial: unsafe template refused by the sandbox")
    assert "__class__" in got[0]


@pytest.mark.parametrize("source", [
    "{% if severity == 'SEV-9' %}{{ ''.__class__.__mro__ }}{% endif %}",  # never taken by the sample
    "{{ issue['__class__'] }}",
    "{{ issue|attr('__class__') }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ issue.__len__() }}",
])
def test_every_private_attribute_route_is_refused(source: str) -> None:
    problem = template_problem(source, "initial")
    assert problem is not None
    assert problem.startswith("unsafe template refused by the sandbox"), problem


def test_sandbox_still_refuses_at_render_time() -> None:
    from jinja2.exceptions import SecurityError

    from agent.notify.templates import environment

    with pytest.raises(SecurityError):  # the parse-time check is a second fence, not the only one
        environment().from_string("{{ x.__class__ }}").render(x="a")
    with pytest.raises(SecurityError):
        environment().from_string("{{ x.append(1) }}").render(x=[])  # immutable sandbox


def test_bad_templates_are_config_errors_with_their_path() -> None:
    got = problems("""
        channels:
          - name: chat
            type: log
            templates:
              update: "{{ nope }}"
              resolution: "{% if %}"
          - {name: mail, type: email, host: 127.0.0.1, from: p@example.com, to: [o@example.com],
             subject: "{{ severity | nosuchfilter }}"}
    """)
    assert got == [
        "notifications.channels[0].templates.update: template error: 'nope' is undefined",
        "notifications.channels[0].templates.resolution: template syntax error on line 1: "
        "Expected an expression, got 'end of statement block'",
        "notifications.channels[1].subject: template syntax error on line 1: No filter named 'nosuchfilter'.",
    ]


def test_a_template_that_fails_later_falls_back_to_the_default() -> None:
    source = "{% if severity == 'SEV-4' %}{{ range(10**6) | list }}{% endif %}{{ issue }}"
    assert template_problem(source, "initial") is None  # the SEV-1 sample passes
    renderer = Renderer({"initial": source})
    text = renderer.text(notice("initial", severity="SEV-4"))
    assert text.startswith("🚨 INCIDENT ALERT 🚨")
    assert renderer.last_error is not None
    assert "OverflowError" in renderer.last_error


def test_custom_subject() -> None:
    cfg = config("""
        channels:
          - {name: mail, type: email, host: 127.0.0.1, from: p@example.com, to: [o@example.com],
             subject: "{{ severity }}\\n{{ headline }} #{{ incident_id }}"}
    """)
    spec = cfg.notifications.channel("mail")
    assert Renderer(subject=spec.subject).subject(notice("update")) == "SEV-2 INCIDENT UPDATE #7"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- notifications config


def test_channel_defaults_and_routes() -> None:
    cfg = config("""
        retry: {attempts: 4, initial: 1s, max_delay: 1m, jitter: 500ms}
        channels:
          - {name: all, type: log}
          - {name: pager, type: pagerduty, routing_key: "${PD_KEY}", severities: [SEV-1, SEV-2],
             kinds: [initial, ack, resolution]}
    """, env={"PD_KEY": "a" * 32})
    every, pager = cfg.notifications.channels
    assert every.accepts("SEV-4", "reminder")
    assert pager.accepts("SEV-2", "initial")
    assert not pager.accepts("SEV-3", "initial")
    assert not pager.accepts("SEV-1", "update")
    assert pager.url == "https://events.pagerduty.com/v2/enqueue"  # type: ignore[union-attr]
    assert cfg.notifications.retry.attempts == 4
    assert cfg.notifications.retry.jitter == 0.5


def test_channel_errors_read_without_the_type_tag() -> None:
    got = problems("""
        channels:
          - {name: hook, type: webhook, url: "ftp://example.com/x"}
          - {name: chat, type: slack}
          - {name: mail, type: email, host: h, from: a@b.example, to: [c@d.example], username: u, password: p,
             tls: none}
          - {name: sms, type: sms}
          - {name: pd, type: pagerduty, routing_key: k, severities: [critical]}
    """)
    assert got[0] == "notifications.channels[0].url: must be an http:// or https:// URL with a host"
    assert got[1] == "notifications.channels[1].url: field required"
    assert got[2].startswith("notifications.channels[2]: username/password are only sent over TLS")
    assert got[3].startswith("notifications.channels[3]: input tag 'sms' found using 'type' does not match")
    assert got[4].startswith("notifications.channels[4].severities[0]: input should be 'SEV-1'")


def test_duplicate_channel_names() -> None:
    got = problems("""
        channels:
          - {name: ops, type: log}
          - {name: ops, type: log}
    """)
    assert got == ["notifications.channels[1].name: duplicate channel name 'ops' (also notifications.channels[0])"]


def test_a_bad_url_is_not_echoed() -> None:
    got = problems("""
        channels:
          - {name: chat, type: slack, url: "hooks.example.com/services/T0/B0/canary-token-123"}
    """)
    assert got == ["notifications.channels[0].url: must be an http:// or https:// URL with a host"]


def test_channel_secrets_are_masked_everywhere() -> None:
    cfg = config("""
        channels:
          - {name: hook, type: webhook, url: "https://hooks.example.com/h/tok-in-path-0123456789?token=qtok-42",
             secret: hmac-secret-1, headers: {Authorization: "Bearer bearer-tok-9"}}
          - {name: chat, type: slack, url: "https://hooks.slack.example/services/T00/B00/slackslackslack"}
          - {name: mail, type: email, host: smtp.example.com, from: p@example.com, to: [o@example.com],
             username: paramedic, password: smtp-pass-7}
          - {name: pd, type: pagerduty, routing_key: routingkey0123456789abcdef012345}
    """)
    for secret in ("qtok-42", "hmac-secret-1", "bearer-tok-9", "https://hooks.slack.example/services/T00/B00/slackslackslack",
                   "smtp-pass-7", "routingkey0123456789abcdef012345"):
        assert cfg.redactor.text(f"x {secret} y") == "x *** y", secret


def test_config_without_templates_does_not_import_jinja2(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        from agent.config.model import parse_config
        parse_config("checks: []\\nnotifications:\\n  channels:\\n    - {name: ops, type: log}\\n")
        print(sorted(m for m in ("jinja2", "aiohttp", "tenacity") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- pure channel helpers


def test_pagerduty_event_for_each_kind() -> None:
    key = "r" * 32
    trigger = pagerduty_event(notice("initial", severity="SEV-1", check="web-health", runbook="web-down",
                                     target="web"), key, "TEXT")
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == key
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["summary"] == "[SEV-1] web-health is DOWN (Counterfactual Lab)"
    assert payload["source"] == "web"
    assert payload["component"] == "web-health"
    assert payload["class"] == "web-down"
    assert payload["timestamp"] == "2026-05-28T20:28:40Z"
    assert payload["custom_details"]["text"] == "TEXT"
    assert payload["custom_details"]["incident_id"] == 7
    assert pagerduty_event(notice("ack"), key, "")["event_action"] == "acknowledge"
    resolve = pagerduty_event(notice("resolution"), key, "")
    assert resolve["event_action"] == "resolve"
    assert "payload" not in resolve
    keys = {pagerduty_event(notice(k), key, "")["dedup_key"] for k in NOTICE_KINDS}
    assert keys == {"paramedic:runbook:web-down/target:web"}
    severities = [pagerduty_event(notice(severity=s), key, "")["payload"]["severity"]
                  for s in ("SEV-1", "SEV-2", "SEV-3", "SEV-4")]
    assert severities == ["critical", "error", "warning", "info"]


def test_pagerduty_dedup_key_is_stable_and_bounded() -> None:
    long = "x" * 400
    assert pagerduty_dedup_key(long) == pagerduty_dedup_key(long)
    assert len(pagerduty_dedup_key(long)) <= 255
    assert pagerduty_dedup_key(long) != pagerduty_dedup_key(long + "y")


def test_signature_and_slack_escaping() -> None:
    body = b'{"a":1}'
    assert sign("s3cret", body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert slack_escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


# ---------------------------------------------------------------- retry policy (tenacity's strategies)


def test_retry_policy_backs_off_exponentially_with_jitter_and_gives_up() -> None:
    policy = RetryPolicy(attempts=6, initial=1.0, max_delay=10.0, jitter=0.5)
    for attempts, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)):
        for _ in range(20):
            delay = policy.next_delay(attempts)
            assert delay is not None
            assert base <= delay <= base + 0.5
    assert policy.next_delay(5) == 10.0  # 16 + jitter, capped
    assert policy.next_delay(6) is None


def test_retry_policy_of_one_attempt_never_retries() -> None:
    assert RetryPolicy(attempts=1).next_delay(1) is None


# ---------------------------------------------------------------- outbox rows in the store


def outbox_config() -> Config:
    return config("""
        channels:
          - {name: ops, type: log}
          - {name: pager, type: pagerduty, routing_key: routingkey0123456789abcdef012345, severities: [SEV-1]}
    """)


def test_route_writes_one_row_per_channel_that_takes_the_notice() -> None:
    cfg = outbox_config()
    store = Store(":memory:", clock=lambda: T0)
    outbox = Outbox(store, cfg.notifications.channels, cfg.redactor)
    assert len(outbox.route(notice(severity="SEV-1"))) == 2
    assert len(outbox.route(notice(severity="SEV-3"))) == 1
    rows = store.outbox_rows()
    assert [(r.channel, r.severity, r.status, r.attempts) for r in rows] == [
        ("ops", "SEV-1", "pending", 0), ("pager", "SEV-1", "pending", 0), ("ops", "SEV-3", "pending", 0)]
    assert Notice.from_record(json.loads(rows[0].notice)) == notice(severity="SEV-1")
    with pytest.raises(KeyError):
        outbox.enqueue(notice(), "nope")


def test_enqueue_masks_config_secrets_in_the_notice() -> None:
    cfg = outbox_config()
    store = Store(":memory:")
    Outbox(store, cfg.notifications.channels, cfg.redactor).enqueue(
        notice(evidence="env: KEY=routingkey0123456789abcdef012345"), "ops")
    row = store.outbox_rows()[0]
    assert "routingkey0123456789abcdef012345" not in row.notice
    assert json.loads(row.notice)["evidence"] == "env: KEY=***"


def test_claim_is_compare_and_set_and_keeps_incident_order() -> None:
    now = [T0]
    store = Store(":memory:", clock=lambda: now[0])
    cfg = outbox_config()
    outbox = Outbox(store, cfg.notifications.channels)
    first = outbox.enqueue(notice("initial"), "ops")
    second = outbox.enqueue(notice("resolution"), "ops")
    other = outbox.enqueue(notice("initial", dedup_key="another"), "ops")
    claimed = store.outbox_claim("a", T0, T0 + 60, 10)
    assert [r.id for r in claimed] == [first, other]  # the resolution waits for its alert
    assert claimed[0].attempts == 1
    assert store.outbox_claim("b", T0, T0 + 60, 10) == []  # nobody else gets claimed rows
    assert not store.outbox_sent(first, "b", T0)  # a foreign token cannot finish it
    assert store.outbox_retry(first, "a", T0 + 5, "HTTP 500")
    assert store.outbox_claim("b", T0 + 1, T0 + 60, 10) == []  # still not due, and the resolution still waits
    assert [r.id for r in store.outbox_claim("b", T0 + 5, T0 + 60, 10)] == [first]
    assert store.outbox_failed(first, "b", T0 + 6, "gave up")
    assert [r.id for r in store.outbox_claim("c", T0 + 6, T0 + 60, 10)] == [second]  # a failed row unblocks
    assert store.outbox_release(second, "c", T0 + 7)
    released = store.outbox_rows()[1]
    assert (released.status, released.attempts, released.next_attempt_at) == ("pending", 0, T0 + 7)


def test_an_expired_lease_makes_the_row_due_again() -> None:
    store = Store(":memory:", clock=lambda: T0)
    row = Outbox(store, outbox_config().notifications.channels).enqueue(notice(), "ops")
    assert [r.id for r in store.outbox_claim("dead", T0, T0 + 30, 10)] == [row]
    assert store.outbox_next_due() == T0 + 30
    assert store.outbox_claim("alive", T0 + 29, T0 + 90, 10) == []
    again = store.outbox_claim("alive", T0 + 30, T0 + 90, 10)
    assert [(r.id, r.attempts) for r in again] == [(row, 2)]
    assert not store.outbox_sent(row, "dead", T0 + 31)  # the dead claimer's late answer is ignored
    assert store.outbox_sent(row, "alive", T0 + 31)
    assert store.outbox_next_due() is None


def test_prune_keeps_pending_rows() -> None:
    store = Store(":memory:", clock=lambda: T0)
    outbox = Outbox(store, outbox_config().notifications.channels)
    sent, pending = outbox.enqueue(notice(), "ops"), outbox.enqueue(notice(dedup_key="b"), "ops")
    store.outbox_claim("t", T0, T0 + 1, 1)
    store.outbox_sent(sent, "t", T0)
    assert store.outbox_prune(T0 + 1) == 1
    assert [r.id for r in store.outbox_rows()] == [pending]


def test_next_due_ignores_rows_waiting_behind_their_alert() -> None:
    store = Store(":memory:", clock=lambda: T0)
    outbox = Outbox(store, outbox_config().notifications.channels)
    alert = outbox.enqueue(notice("initial"), "ops")
    outbox.enqueue(notice("resolution"), "ops")  # due "now", but only after the alert
    store.outbox_claim("t", T0, T0 + 30, 10)
    store.outbox_retry(alert, "t", T0 + 600, "HTTP 503")  # the alert backs off for ten minutes
    assert store.outbox_next_due() == T0 + 600  # so the dispatcher sleeps instead of polling
