"""Notification channels against real local receivers, through the real outbox and dispatcher.

* an HTTP server on 127.0.0.1 (threaded ``http.server``) that records webhook and Slack
  posts and can fail on purpose (scripted statuses, slow answers, TLS with a trustme CA);
* a stand-in for PagerDuty's ``/v2/enqueue`` that validates every Events API v2 document
  and answers 202 or 400 the way PagerDuty does;
* an SMTP server (aiosmtpd) that offers STARTTLS with a trustme certificate, requires
  it, and requires AUTH.

Nothing here is mocked: the outbox rows live in a SQLite file, time is the wall clock,
and backoffs are shortened through ``notifications.retry`` only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import hashlib
import hmac
import json
import logging
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from agent.config.model import Config, parse_config
from agent.kernel.literals import NoticeKind
from agent.notify import Notice
from agent.runtime.outbox import Notifier
from agent.store.sqlite import OutboxRow, Store
from tests.support.receivers import Answer, HttpReceiver, Received, serve
from tests.support.servers import free_port
from tests.support.tls import server_context

pytestmark = [pytest.mark.integration]

T0 = 1_780_000_000.0
PD_KEY = "R0UT1NGKEY0123456789abcdef012345"
PD_PATH = "/v2/enqueue"


def notice(kind: NoticeKind = "initial", **changes: Any) -> Notice:
    base = Notice(
        kind=kind, incident_id=11, dedup_key="runbook:web-down/target:web", severity="SEV-1",
        service="Counterfactual Lab", issue="web-health is DOWN", impact="Nobody can log in",
        status="Investigating", owner="paramedic", started_at=T0, updated_at=T0 + 60,
        resolved_at=T0 + 600 if kind == "resolution" else None, update="Restarted container web",
        next_step="Verify for 60s", eta="5 minutes", resolution="Restart held", runbook="web-down",
        check="web-health", target="web",
    )
    return dataclasses.replace(base, **changes)


def config(notifications: str, env: dict[str, str] | None = None) -> Config:
    text = "checks: []\nnotifications:\n" + textwrap.indent(textwrap.dedent(notifications), "  ")
    return parse_config(text, env=env or {})


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Records(logging.Handler):
    """Collects what the notification layer logs (its logger may not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def logs() -> Iterator[Records]:
    logger = logging.getLogger("paramedic.notify")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ---------------------------------------------------------------- HTTP receiver (+ PagerDuty stand-in)


@dataclass
class Receiver(HttpReceiver):
    """Webhook and Slack posts get 200 ``ok``; posts to ``PD_PATH`` are judged like PagerDuty's."""

    statuses: list[int] = field(default_factory=list)  # answered first, in order; then 200 (202 for PD)
    pd_key: str = PD_KEY

    def answered(self, status: int) -> list[Received]:
        return [r for r in self.requests if r.status == status]

    def answer(self, request: Received) -> Answer:
        scripted = self.statuses.pop(0) if self.statuses else None
        status, reply = self._judge(request, scripted)
        return status, [("Content-Type", "application/json")], reply

    def _judge(self, request: Received, scripted: int | None) -> tuple[int, bytes]:
        if scripted is not None:
            return scripted, b'{"error": "scripted failure"}'
        if request.path != PD_PATH:
            return 200, b"ok"
        try:
            doc = request.json()
        except ValueError:
            return 400, b'{"status": "invalid event", "message": "Event object is invalid"}'
        errors = pagerduty_problems(doc, self.pd_key)
        if errors:
            return 400, json.dumps({"status": "invalid event", "message": "Event object is invalid",
                                    "errors": errors}).encode()
        return 202, json.dumps({"status": "success", "message": "Event processed",
                                "dedup_key": doc.get("dedup_key")}).encode()


PD_ACTIONS = {"trigger", "acknowledge", "resolve"}
PD_SEVERITIES = {"critical", "error", "warning", "info"}
PD_EVENT_KEYS = {"routing_key", "event_action", "dedup_key", "payload", "client", "client_url", "links", "images"}
PD_PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


def pagerduty_problems(doc: Any, routing_key: str) -> list[str]:
    """What PagerDuty's Events API v2 would refuse in ``doc`` (its documented schema)."""
    if not isinstance(doc, dict):
        return ["event must be an object"]
    errors = [f"unknown field {k!r}" for k in set(doc) - PD_EVENT_KEYS]
    if doc.get("routing_key") != routing_key:
        errors.append("routing_key is missing or unknown")
    action = doc.get("event_action")
    if action not in PD_ACTIONS:
        errors.append(f"event_action must be one of {sorted(PD_ACTIONS)}")
    key = doc.get("dedup_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 255):
        errors.append("dedup_key must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not key:
        errors.append(f"dedup_key is required for {action}")
    if action == "trigger":
        payload = doc.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "payload is required for trigger"]
        errors += [f"unknown payload field {k!r}" for k in set(payload) - PD_PAYLOAD_KEYS]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
            errors.append("payload.summary is required (1-1024 characters)")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("payload.source is required")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append(f"payload.severity must be one of {sorted(PD_SEVERITIES)}")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(str(payload["timestamp"]))
            except ValueError:
                errors.append("payload.timestamp must be ISO 8601")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            errors.append("payload.custom_details must be an object")
    return errors


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[Receiver]:
    yield from serve(Receiver(), server_context(ca))


async def send_all(cfg: Config, store: Store, *notices: Notice, timeout: float = 15.0) -> Notifier:
    """Queue ``notices`` and drain the outbox (retries included); returns the stopped notifier."""
    notifier = Notifier(cfg.notifications, store, redactor=cfg.redactor)
    try:
        for each in notices:
            notifier.notify(each)
        assert await notifier.drain(timeout)
    finally:
        await notifier.stop()
    return notifier


def rows(store: Store) -> list[OutboxRow]:
    return store.outbox_rows()


# ---------------------------------------------------------------- webhook and Slack


def test_webhook_posts_the_notice_signed_with_hmac(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: ops-hook, type: webhook, url: "{receiver.url()}?token=tok-abc", secret: "${{HOOK_SECRET}}",
             headers: {{X-Team: sre}}}}
    """, env={"HOOK_SECRET": "hmac-s3cret"})
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(cfg, store, notice("initial")))

    [request] = receiver.requests
    assert request.path == "/hook?token=tok-abc"
    expected = "sha256=" + hmac.new(b"hmac-s3cret", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Paramedic-Signature"], expected)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "sre"
    doc = request.json()
    [row] = rows(store)
    assert doc["delivery_id"] == row.id
    assert request.headers["X-Paramedic-Delivery"] == str(row.id)
    assert doc["channel"] == "ops-hook"
    assert doc["kind"] == "initial"
    assert doc["text"].startswith("🚨 INCIDENT ALERT 🚨\n\nSeverity: SEV-1\nService: Counterfactual Lab\n")
    assert doc["notice"]["dedup_key"] == "runbook:web-down/target:web"
    assert doc["notice"]["started"] == "2026-05-28T20:26:40Z"
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)


def test_a_tampered_body_fails_the_signature(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}", secret: k3y}}
    """)
    asyncio.run(send_all(cfg, Store(tmp_path / "s.db"), notice("update")))
    [request] = receiver.requests
    tampered = request.body.replace(b"SEV-1", b"SEV-4")
    signature = request.headers["X-Paramedic-Signature"]
    assert signature != "sha256=" + hmac.new(b"k3y", tampered, hashlib.sha256).hexdigest()
    assert signature == "sha256=" + hmac.new(b"k3y", request.body, hashlib.sha256).hexdigest()


def test_slack_gets_escaped_text_and_optional_blocks(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: chat, type: slack, url: "{receiver.url('/services/T000/B000/slacktokenslacktoken')}"}}
          - {{name: chat-blocks, type: slack, url: "{receiver.url('/services/T000/B001/slacktoken2')}", blocks: true}}
    """)
    asyncio.run(send_all(cfg, Store(tmp_path / "s.db"), notice("escalation", evidence="<!channel> log & more")))
    plain, rich = sorted(receiver.requests, key=lambda r: r.path)
    assert set(plain.json()) == {"text"}
    text = plain.json()["text"]
    assert text.startswith("🆘 INCIDENT ESCALATED 🆘\n")
    assert "&lt;!channel&gt; log &amp; more" in text
    assert "<!channel>" not in text
    assert rich.json()["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


def test_https_receiver_is_verified_against_the_ca(tls_receiver: Receiver, ca_file: str, tmp_path: Path,
                                                   logs: Records) -> None:
    cfg = config(f"""
        retry: {{attempts: 2, initial: 50ms, jitter: 10ms}}
        channels:
          - {{name: trusted, type: webhook, url: "{tls_receiver.url()}", ca_file: "{ca_file}"}}
          - {{name: untrusted, type: webhook, url: "{tls_receiver.url('/other')}"}}
    """)
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(cfg, store, notice()))
    by_channel = {r.channel: r for r in rows(store)}
    assert by_channel["trusted"].status == "sent"
    assert [r.path for r in tls_receiver.requests] == ["/hook"]  # the untrusted one never got through
    failed = by_channel["untrusted"]
    assert failed.status == "failed"
    assert failed.attempts == 2
    assert failed.last_error is not None
    assert "TLS failed" in failed.last_error
    assert f"https://127.0.0.1:{tls_receiver.port}" in failed.last_error
    assert "/other" not in failed.last_error


def test_log_channel_writes_the_message_to_the_paramedic_logger(tmp_path: Path, logs: Records) -> None:
    cfg = config("""
        channels:
          - {name: ops-log, type: log, level: error}
    """)
    asyncio.run(send_all(cfg, Store(tmp_path / "s.db"), notice("resolution")))
    [record] = [r for r in logs.records if r.getMessage().startswith("✅ INCIDENT RESOLVED ✅")]
    assert record.name == "paramedic.notify"
    assert record.levelno == logging.ERROR
    assert "Duration: 10m" in record.getMessage()
    assert (record.channel, record.incident, record.kind) == ("ops-log", 11, "resolution")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- PagerDuty


def test_pagerduty_trigger_ack_resolve_share_one_dedup_key(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: pager, type: pagerduty, routing_key: "${{PD_KEY}}", url: "{receiver.url(PD_PATH)}"}}
    """, env={"PD_KEY": PD_KEY})
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(cfg, store, notice("initial"), notice("update"), notice("ack"), notice("resolution")))

    assert [r.status for r in receiver.requests] == [202, 202, 202, 202], [r.body for r in receiver.requests]
    events = [r.json() for r in receiver.requests]
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {"paramedic:runbook:web-down/target:web"}
    trigger = events[0]["payload"]
    assert trigger["severity"] == "critical"
    assert trigger["source"] == "web"
    assert trigger["summary"] == "[SEV-1] web-health is DOWN (Counterfactual Lab)"
    assert trigger["custom_details"]["text"].startswith("🚨 INCIDENT ALERT 🚨")
    assert all(r.status == "sent" for r in rows(store))


def test_pagerduty_stand_in_refuses_a_bad_event(receiver: Receiver, tmp_path: Path, logs: Records) -> None:
    receiver.pd_key = "another-key-entirely-000000000000"  # PagerDuty answers 400 for an unknown key
    cfg = config(f"""
        channels:
          - {{name: pager, type: pagerduty, routing_key: {PD_KEY}, url: "{receiver.url(PD_PATH)}"}}
    """)
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(cfg, store, notice()))
    [row] = rows(store)
    assert (row.status, row.attempts) == ("failed", 1)  # a 400 is not retried
    assert row.last_error is not None
    assert "HTTP 400" in row.last_error
    assert "Event object is invalid" in row.last_error
    assert PD_KEY not in row.last_error
    assert "rejected" in logs.text()


def test_routing_by_severity_and_kind(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: pager, type: pagerduty, routing_key: {PD_KEY}, url: "{receiver.url(PD_PATH)}",
             severities: [SEV-1, SEV-2], kinds: [initial, resolution]}}
          - {{name: everything, type: webhook, url: "{receiver.url()}"}}
    """)
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(cfg, store, notice(severity="SEV-3", dedup_key="minor"), notice("reminder"),
                         notice("initial", severity="SEV-2", dedup_key="major")))
    assert [(r.channel, r.severity, r.kind) for r in rows(store)] == [
        ("everything", "SEV-3", "initial"), ("everything", "SEV-1", "reminder"),
        ("pager", "SEV-2", "initial"), ("everything", "SEV-2", "initial"),
    ]
    [page] = [r.json() for r in receiver.requests if r.path == PD_PATH]
    assert page["payload"]["severity"] == "error"
    assert page["dedup_key"] == "paramedic:major"


# ---------------------------------------------------------------- e-mail over SMTP


@dataclass
class MailBox:
    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        self.messages.append({
            "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
            "message": email.message_from_bytes(content, policy=email.policy.default),
            "tls": session.ssl is not None, "authenticated": session.authenticated,
        })
        return "250 Message accepted for delivery"


SMTP_USER, SMTP_PASSWORD = "paramedic", "smtp-pa55"


def smtp_server(ca: trustme.CA | None) -> Iterator[MailBox]:
    box = MailBox(free_port())

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode() \
            and auth_data.password == SMTP_PASSWORD.encode()
        box.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?",
                           session.ssl is not None))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": True}
    if ca is not None:
        kwargs |= {"tls_context": server_context(ca), "require_starttls": True}
    controller = Controller(box, hostname="127.0.0.1", port=box.port, ready_timeout=10, **kwargs)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox(ca: trustme.CA) -> Iterator[MailBox]:
    yield from smtp_server(ca)


def mail_config(box: MailBox, ca_file: str | None, password: str = SMTP_PASSWORD) -> Config:
    ca = f', ca_file: "{ca_file}"' if ca_file else ""
    return config(f"""
        retry: {{attempts: 3, initial: 50ms, jitter: 10ms}}
        channels:
          - {{name: oncall-mail, type: email, host: 127.0.0.1, port: {box.port}, username: paramedic,
             password: "${{SMTP_PASSWORD}}", from: "Paramedic <paramedic@example.com>",
             to: [oncall@example.com, sre@example.com]{ca}}}
    """, env={"SMTP_PASSWORD": password})


def test_email_over_starttls_with_auth(mailbox: MailBox, ca_file: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(mail_config(mailbox, ca_file), store, notice("initial"), notice("resolution")))

    assert mailbox.logins == [("paramedic", True), ("paramedic", True)]  # AUTH happened inside TLS
    alert, resolved = mailbox.messages
    assert alert["tls"]
    assert alert["authenticated"]
    assert alert["mail_from"] == "paramedic@example.com"
    assert alert["rcpt_tos"] == ["oncall@example.com", "sre@example.com"]
    message: EmailMessage = alert["message"]
    assert message["Subject"] == "[SEV-1] INCIDENT ALERT: web-health is DOWN (Counterfactual Lab)"
    assert message["To"] == "oncall@example.com, sre@example.com"
    assert message["X-Paramedic-Severity"] == "SEV-1"
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("🚨 INCIDENT ALERT 🚨\n\nSeverity: SEV-1\n")
    assert "Started: 2026-05-28T20:26:40Z" in body
    follow_up: EmailMessage = resolved["message"]
    assert follow_up["In-Reply-To"] == message["Message-ID"]  # one thread per incident
    assert "Duration: 10m" in follow_up.get_content()
    assert all(r.status == "sent" for r in rows(store))


def test_email_wrong_password_is_rejected_without_echoing_it(mailbox: MailBox, ca_file: str, tmp_path: Path,
                                                            logs: Records) -> None:
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(mail_config(mailbox, ca_file, password="wrong-pa55word"), store, notice()))
    [row] = rows(store)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error is not None
    assert "login refused (535)" in row.last_error
    assert mailbox.messages == []
    assert "wrong-pa55word" not in row.last_error + logs.text()


def test_email_refuses_a_server_without_starttls(tmp_path: Path, ca_file: str) -> None:
    for box in smtp_server(None):  # offers no STARTTLS: the password must never go out in clear text
        store = Store(tmp_path / "s.db")
        asyncio.run(send_all(mail_config(box, ca_file), store, notice()))
        [row] = rows(store)
        assert row.status == "failed"
        assert row.last_error is not None
        assert "STARTTLS" in row.last_error
        assert box.logins == []
        assert box.messages == []


def test_email_with_an_untrusted_certificate_is_not_sent(mailbox: MailBox, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(mail_config(mailbox, None), store, notice()))
    [row] = rows(store)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error is not None
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in row.last_error
    assert mailbox.logins == []


# ---------------------------------------------------------------- reliability


def test_failing_receiver_is_retried_with_backoff_until_delivered(receiver: Receiver, tmp_path: Path,
                                                                  logs: Records) -> None:
    receiver.statuses = [500, 500]
    cfg = config(f"""
        retry: {{attempts: 5, initial: 300ms, max_delay: 5s, jitter: 50ms}}
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}"}}
    """)
    store = Store(tmp_path / "s.db")

    async def scenario() -> None:
        notifier = Notifier(cfg.notifications, store, redactor=cfg.redactor, poll_interval=0.5)
        await notifier.start()
        try:
            notifier.notify(notice())
            await until(lambda: rows(store)[0].status == "sent")
        finally:
            await notifier.stop()

    asyncio.run(scenario())
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    first, second, third = (r.at for r in receiver.requests)
    assert second - first >= 0.3
    assert third - second >= 0.6
    [row] = rows(store)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "attempt 1 of 5 failed" in warnings[0]
    assert "HTTP 500" in warnings[0]


def test_receiver_down_until_restart_nothing_is_lost(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    cfg = config(f"""
        retry: {{attempts: 10, initial: 100ms, jitter: 10ms}}
        channels:
          - {{name: hook, type: webhook, url: "http://127.0.0.1:{port}/hook"}}
    """)
    path = tmp_path / "paramedic.db"

    async def before_restart() -> None:
        store = Store(path)
        notifier = Notifier(cfg.notifications, store, redactor=cfg.redactor)
        await notifier.start()
        notifier.notify(notice("initial"))
        notifier.notify(notice("resolution"))
        await until(lambda: store.outbox_rows()[0].attempts >= 2)
        await notifier.stop()  # the agent goes away with both notifications pending
        store.close()

    asyncio.run(before_restart())
    store = Store(path)
    pending = store.outbox_rows()
    assert [(r.kind, r.status) for r in pending] == [("initial", "pending"), ("resolution", "pending")]
    assert pending[0].last_error is not None
    assert "cannot connect" in pending[0].last_error
    assert pending[1].attempts == 0  # it waits behind its alert
    store.close()

    for receiver in serve(Receiver(port)):  # the receiver comes back, then the agent restarts

        async def after_restart() -> None:
            again = Store(path)
            notifier = Notifier(cfg.notifications, again, redactor=cfg.redactor)
            await notifier.start()
            try:
                await until(lambda: [r.status for r in again.outbox_rows()] == ["sent", "sent"])
            finally:
                await notifier.stop()
                again.close()

        asyncio.run(after_restart())
        assert [r.json()["kind"] for r in receiver.requests] == ["initial", "resolution"]


def test_a_claim_left_by_a_dead_process_is_sent_after_its_lease(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}"}}
    """)
    store = Store(tmp_path / "s.db")
    notifier = Notifier(cfg.notifications, store, lease=0.5)
    notifier.notify(notice())
    now = time.time()
    assert len(store.outbox_claim("crashed-agent", now, now + 0.5, 10)) == 1  # claimed, never finished

    async def scenario() -> None:
        try:
            assert await notifier.drain(5)
        finally:
            await notifier.stop()

    asyncio.run(scenario())
    [row] = rows(store)
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(receiver.requests) == 1


def test_gives_up_after_the_attempts_and_keeps_the_row(receiver: Receiver, tmp_path: Path, logs: Records) -> None:
    receiver.statuses = [503] * 10
    cfg = config(f"""
        retry: {{attempts: 3, initial: 50ms, jitter: 10ms}}
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}"}}
    """)
    store = Store(tmp_path / "s.db")
    asyncio.run(send_all(cfg, store, notice()))
    [row] = rows(store)
    assert (row.status, row.attempts) == ("failed", 3)
    assert len(receiver.requests) == 3
    assert row.last_error == f"POST http://127.0.0.1:{receiver.port}: HTTP 503: {{\"error\": \"scripted failure\"}}"
    [error] = [r.getMessage() for r in logs.records if r.levelno == logging.ERROR]
    assert "gave up after 3 attempt(s)" in error
    assert "via hook" in error


def test_a_resolution_never_overtakes_its_alert(receiver: Receiver, tmp_path: Path) -> None:
    receiver.statuses = [500]  # the alert fails once; the resolve must still come after it
    cfg = config(f"""
        retry: {{attempts: 5, initial: 100ms, jitter: 10ms}}
        channels:
          - {{name: pager, type: pagerduty, routing_key: {PD_KEY}, url: "{receiver.url(PD_PATH)}"}}
    """)
    asyncio.run(send_all(cfg, Store(tmp_path / "s.db"), notice("initial"), notice("resolution"),
                         notice("initial", dedup_key="other-incident")))
    accepted = [(r.json()["event_action"], r.json()["dedup_key"]) for r in receiver.answered(202)]
    mine = [action for action, key in accepted if key == "paramedic:runbook:web-down/target:web"]
    assert mine == ["trigger", "resolve"]
    assert ("trigger", "paramedic:other-incident") in accepted  # another incident was not held up


def test_stop_hands_an_unfinished_send_back(receiver: Receiver, tmp_path: Path) -> None:
    receiver.delay = 3.0
    cfg = config(f"""
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}", timeout: 10s}}
    """)
    store = Store(tmp_path / "s.db")

    async def scenario() -> float:
        notifier = Notifier(cfg.notifications, store)
        await notifier.start()
        notifier.notify(notice())
        await until(lambda: len(receiver.requests) == 1)
        started = time.monotonic()
        await notifier.stop(grace=0.2)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0  # shutdown is not held up by a slow receiver
    [row] = rows(store)
    assert (row.status, row.attempts, row.last_error) == ("pending", 0, None)  # due again, attempt not counted
    assert row.next_attempt_at <= time.time()


def test_notify_never_waits_for_a_receiver(receiver: Receiver, tmp_path: Path) -> None:
    receiver.delay = 2.0
    cfg = config(f"""
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}"}}
    """)
    store = Store(tmp_path / "s.db")

    async def scenario() -> float:
        notifier = Notifier(cfg.notifications, store)
        await notifier.start()
        try:
            started = time.monotonic()
            for i in range(20):
                notifier.notify(notice(dedup_key=f"incident-{i}"))
            return time.monotonic() - started
        finally:
            await notifier.stop(grace=0.1)

    assert asyncio.run(scenario()) < 1.0
    assert len(rows(store)) == 20


def test_http_channels_share_one_session(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(f"""
        channels:
          - {{name: a, type: webhook, url: "{receiver.url('/a')}"}}
          - {{name: b, type: slack, url: "{receiver.url('/b')}"}}
          - {{name: c, type: pagerduty, routing_key: {PD_KEY}, url: "{receiver.url(PD_PATH)}"}}
    """)

    async def scenario() -> None:
        notifier = Notifier(cfg.notifications, Store(tmp_path / "s.db"))
        try:
            notifier.notify(notice())
            assert await notifier.drain(5)
            posters = {id(getattr(c, "http")) for c in notifier.channels.values()}  # noqa: B009
            assert posters == {id(notifier.http)}
            session = notifier.http.session
        finally:
            await notifier.stop()
        assert session.closed

    asyncio.run(scenario())
    assert sorted(r.status for r in receiver.requests) == [200, 200, 202]


# ---------------------------------------------------------------- secrets


CANARY = "CANARY-9f8e7d6c5b4a"


def test_secrets_never_reach_logs_rows_or_the_store_file(tmp_path: Path, logs: Records, ca_file: str) -> None:
    down = free_port()
    env = {"TOKEN": CANARY + "-t", "HMAC": CANARY + "-h", "PD": CANARY + "-pd", "SMTP": CANARY + "-smtp",
           "SLACK": CANARY + "-slack"}
    for box in smtp_server(None):  # no STARTTLS: refused before the password would be sent
        cfg = config(f"""
            retry: {{attempts: 2, initial: 50ms, jitter: 10ms}}
            channels:
              - {{name: hook, type: webhook, secret: "${{HMAC}}",
                 url: "http://user:${{TOKEN}}@127.0.0.1:{down}/h/${{TOKEN}}?token=${{TOKEN}}"}}
              - {{name: hook2, type: webhook, url: "http://127.0.0.1:{down}/h2",
                 headers: {{Authorization: "Bearer ${{TOKEN}}-bearer"}}}}
              - {{name: chat, type: slack, url: "http://127.0.0.1:{down}/services/T0/B0/${{SLACK}}"}}
              - {{name: pager, type: pagerduty, routing_key: "${{PD}}", url: "http://127.0.0.1:{down}/v2/enqueue"}}
              - {{name: mail, type: email, host: 127.0.0.1, port: {box.port}, username: u, password: "${{SMTP}}",
                 from: p@example.com, to: [o@example.com], ca_file: "{ca_file}"}}
              - {{name: ops, type: log}}
        """, env=env)
        path = tmp_path / "secrets.db"
        store = Store(path)
        leaky = notice(evidence=f"docker inspect: PD_ROUTING_KEY={CANARY}-pd SLACK={CANARY}-slack")
        asyncio.run(send_all(cfg, store, leaky))
        store.close()

    by_channel = {r.channel: r for r in Store(path).outbox_rows()}
    assert {c: r.status for c, r in by_channel.items()} == {
        "hook": "failed", "hook2": "failed", "chat": "failed", "pager": "failed", "mail": "failed", "ops": "sent"}
    for row in by_channel.values():
        assert CANARY not in (row.last_error or "") + row.notice, row
    assert "cannot connect" in (by_channel["hook"].last_error or "")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("secrets.db*"))
    assert CANARY.encode() not in raw
    assert logs.records
    assert CANARY not in logs.text()
    assert "***" in logs.text()  # the evidence line was masked, not dropped

