"""``Notifier.deliver_due``: a cron run's one bounded delivery (``paramedic check --remediate``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.runtime.outbox import DeliveryReport, Notifier
from agent.store.sqlite import Store
from tests.integration.test_notify_channels import Receiver, config, notice
from tests.support.receivers import Answer, Received, serve

pytestmark = [pytest.mark.integration]


WEB_INCIDENT = "runbook:web-down/target:web"


@dataclass
class FailsWebAlertOnce(Receiver):
    """Answers 500 to the first initial notice of the web incident, whenever it arrives: the
    two incidents' rows go out side by side, so which request comes first is not fixed."""

    failed: bool = False

    def answer(self, request: Received) -> Answer:
        doc = request.json()
        if not self.failed and doc["kind"] == "initial" and doc["notice"]["dedup_key"] == WEB_INCIDENT:
            self.failed = True
            return 500, [("Content-Type", "application/json")], b'{"error": "scripted failure"}'
        return super().answer(request)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def flaky_receiver() -> Iterator[FailsWebAlertOnce]:
    yield from serve(FailsWebAlertOnce())


async def _deliver(notifier: Notifier, timeout: float) -> DeliveryReport:
    try:
        return await notifier.deliver_due(timeout)
    finally:
        await notifier.stop(0.0)


def test_sends_what_is_due_in_order_and_leaves_a_failure_for_later(flaky_receiver: FailsWebAlertOnce,
                                                                    tmp_path: Path) -> None:
    receiver = flaky_receiver  # the web incident's alert fails once
    cfg = config(f"""
        retry: {{attempts: 5, initial: 10ms, max_delay: 10ms, jitter: 0s}}
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}"}}
    """)
    store = Store(tmp_path / "s.db")
    notifier = Notifier(cfg.notifications, store)
    notifier.notify(notice("initial"))
    notifier.notify(notice("resolution"))
    notifier.notify(notice("initial", dedup_key="other-incident"))
    report = asyncio.run(_deliver(notifier, 5.0))
    # one attempt for the failing alert (its retry waits for the next run), its resolution behind it
    assert report.sent == 1
    assert report.interrupted == 0
    [error] = report.errors
    assert "HTTP 500" in error
    assert report.pending == 2
    assert sorted(r.status for r in receiver.requests) == [200, 500]  # the two alerts, side by side
    rows = store.outbox_rows()
    assert [(r.kind, r.status, r.attempts) for r in rows] == [
        ("initial", "pending", 1), ("resolution", "pending", 0), ("initial", "sent", 1)]

    time.sleep(0.05)  # the next run: the alert is due again, then its resolution
    report = asyncio.run(_deliver(Notifier(cfg.notifications, store), 5.0))
    assert (report.sent, report.errors, report.pending) == (2, [], 0)
    kinds = [(r.json()["kind"], r.json()["notice"]["dedup_key"]) for r in receiver.requests if r.status == 200]
    assert kinds == [("initial", "other-incident"), ("initial", WEB_INCIDENT), ("resolution", WEB_INCIDENT)]


def test_a_slow_receiver_is_cut_off_at_the_time_limit(receiver: Receiver, tmp_path: Path) -> None:
    receiver.delay = 3.0
    cfg = config(f"""
        channels:
          - {{name: hook, type: webhook, url: "{receiver.url()}", timeout: 10s}}
    """)
    store = Store(tmp_path / "s.db")
    notifier = Notifier(cfg.notifications, store)
    notifier.notify(notice())
    started = time.monotonic()
    report = asyncio.run(_deliver(notifier, 0.5))
    assert time.monotonic() - started < 2.0
    assert (report.sent, report.interrupted, report.pending) == (0, 1, 1)
    [row] = store.outbox_rows()
    assert (row.status, row.attempts, row.last_error) == ("pending", 0, None)  # handed back, attempt not counted
    assert row.next_attempt_at <= time.time()
