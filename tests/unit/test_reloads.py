"""The pure parts of a SIGHUP reload: what changed (the log line), which channel cannot be
built (the problem path), and what the outbox does with the rows of a changed or removed
channel (store queries on a throwaway SQLite file)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.model import Config, parse_config
from agent.core.reloads import Named, named, summary
from agent.kernel.errors import ConfigError
from agent.notify.channels import HttpPoster, build_channels
from agent.runtime.outbox import Dispatcher, default_lease, removed_error
from agent.store.sqlite import Store

SECRET = "S3cr3tT0ken0123456789"


def cfg(channels: str = "", runbooks: bool = True, extra: str = "", checks: str = "") -> Config:
    text = f"""
checks:
  - {{name: web, type: tcp, host: 127.0.0.1, port: 1}}
{checks}
{extra}
"""
    if runbooks:
        text += """
runbooks:
  - name: web-down
    match: {checks: [web]}
    steps: [{action: webhook, params: {url: "http://127.0.0.1:1/fix"}}]
"""
    if channels:
        text += "notifications:\n  channels:\n" + channels
    return parse_config(text, env={})


HOOK = f'    - {{name: hook, type: webhook, url: "https://hooks.example.com/{SECRET}"}}\n'
HOOK_MOVED = f'    - {{name: hook, type: webhook, url: "https://other.example.com/{SECRET}x"}}\n'
OPS = '    - {name: ops, type: log}\n'
OLD = '    - {name: old, type: log, level: error}\n'


# --------------------------------------------------------------------------- what changed


def test_named_matches_by_name_and_compares_definitions() -> None:
    changes = named([("a", 1), ("b", 2), ("c", 3)], [("d", 4), ("b", 20), ("a", 1)])
    assert changes == Named(added=("d",), changed=("b",), removed=("c",), unchanged=("a",))
    assert changes.differs
    assert not named([("a", 1)], [("a", 1)]).differs
    assert named([], []) == Named()


def test_a_channel_whose_only_change_is_its_secret_url_counts_as_changed() -> None:
    old, new = cfg(HOOK + OPS), cfg(HOOK_MOVED + OPS)
    text, record = summary(old, new, notifications_active=True)
    assert text == "1 checks; runbooks: web-down; notification channels: hook [changed], ops"
    assert record["channels"] == {"added": [], "changed": ["hook"], "removed": [], "unchanged": ["ops"]}
    for blob in (text, json.dumps(record)):
        assert SECRET not in blob
        assert "example.com" not in blob


def test_summary_lists_changes_first_and_notes_abandoned_rows() -> None:
    old = cfg(HOOK + OLD + OPS, checks="  - {name: db, type: tcp, host: 127.0.0.1, port: 2}")
    new = cfg(HOOK_MOVED + OPS + '    - {name: pager, type: log}\n',
              checks="  - {name: cache, type: tcp, host: 127.0.0.1, port: 3}",
              extra="incidents: {reminder_interval: 1h}\nguardrails: {dry_run: true}")
    text, record = summary(old, new, notifications_active=True, abandoned={"old": (4, 5)})
    assert text == ("2 checks (1 added, 1 removed); runbooks: web-down; guardrails changed; "
                    "notification channels: hook [changed], pager [added], old [removed, 2 pending marked failed], "
                    "ops; incident settings changed")
    assert record["abandoned"] == {"old": 2}
    assert record["checks"] == {"added": 1, "changed": 0, "removed": 1, "unchanged": 1}
    assert record["guardrails_changed"] is True
    assert record["incident_settings_changed"] is True


def test_summary_of_runbooks_added_and_removed() -> None:
    bare, full = cfg(runbooks=False), cfg(HOOK)
    text, _ = summary(bare, full, notifications_active=True)
    assert text == "1 checks; runbooks: web-down [added]; notification channels: hook [added]"
    text, record = summary(full, bare, notifications_active=True)
    assert text == "1 checks; runbooks: web-down [removed]; notification channels: hook [removed]"
    assert record["runbooks"]["removed"] == ["web-down"]


def test_summary_without_an_incident_layer_says_notifications_are_not_in_use() -> None:
    text, record = summary(cfg(runbooks=False), cfg(HOOK, runbooks=False), notifications_active=False)
    assert text == "1 checks; runbooks: none; notifications and incidents not in use (no runbooks)"
    assert record["notifications_active"] is False
    text, _ = summary(cfg(runbooks=False), cfg(runbooks=False), notifications_active=False)
    assert text == "1 checks; runbooks: none"
    retried = cfg(extra="notifications:\n  retry: {attempts: 2}\n  channels:\n" + HOOK)
    text, record = summary(cfg(HOOK), retried, notifications_active=True)
    assert text == "1 checks; runbooks: web-down; notification channels: hook; notification retry/retention changed"
    assert record["notification_delivery_changed"] is True


def test_a_changed_runbook_and_check_are_counted() -> None:
    new = parse_config("""
checks:
  - {name: web, type: tcp, host: 127.0.0.1, port: 1, interval: 5s}
runbooks:
  - name: web-down
    match: {checks: [web]}
    steps: [{action: webhook, params: {url: "http://127.0.0.1:1/other"}}]
""", env={})
    text, _ = summary(cfg(), new, notifications_active=True)
    assert text == "1 checks (1 changed); runbooks: web-down [changed]; notification channels: none"


# --------------------------------------------------------------------------- channels that cannot be built


def test_build_channels_names_the_ca_file_it_cannot_load(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    config = cfg(f"""\
    - {{name: fine, type: webhook, url: "https://hooks.example.com/{SECRET}"}}
    - {{name: gone, type: webhook, url: "https://hooks.example.com/{SECRET}", ca_file: "{missing}"}}
    - {{name: junk, type: slack, url: "https://hooks.slack.com/services/{SECRET}", ca_file: "{garbage}"}}
""")
    with pytest.raises(ConfigError) as caught:
        build_channels(config.notifications, HttpPoster())
    problems = caught.value.problems
    assert problems[0] == f"notifications.channels[1].ca_file: cannot load {missing}: No such file or directory"
    assert problems[1].startswith(f"notifications.channels[2].ca_file: cannot load {garbage}: ")
    assert len(problems) == 2
    assert SECRET not in str(caught.value)


def test_build_channels_builds_every_valid_channel() -> None:
    channels = build_channels(cfg(HOOK + OPS).notifications, HttpPoster())
    assert sorted(channels) == ["hook", "ops"]


def test_dispatcher_reconfigure_recomputes_the_default_lease_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    quick = build_channels(cfg(OPS).notifications, HttpPoster())
    slow = build_channels(cfg('    - {name: slow, type: log, timeout: 40s}\n').notifications, HttpPoster())
    dispatcher = Dispatcher(store, quick)
    assert dispatcher.lease == default_lease(quick) == 2 * 10.0 + 30.0
    dispatcher.reconfigure(slow, dispatcher.policy, dispatcher.redactor)
    assert dispatcher.lease == 2 * 40.0 + 30.0
    assert set(dispatcher.channels) == {"slow"}
    fixed = Dispatcher(store, quick, lease=5.0)
    fixed.reconfigure(slow, fixed.policy, fixed.redactor)
    assert fixed.lease == 5.0
    store.close()


# --------------------------------------------------------------------------- the outbox rows


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "s.db", clock=lambda: 1000.0)
    try:
        yield s
    finally:
        s.close()


def add(store: Store, channel: str, key: str = "k1") -> int:
    return store.outbox_add(channel, "initial", 1, key, "SEV-2", "{}")


def test_abandon_fails_the_pending_rows_nobody_is_sending(store: Store) -> None:
    in_flight = add(store, "gone", "k3")
    assert [r.id for r in store.outbox_claim("me", 1000.0, 1300.0, 1)] == [in_flight]  # being sent at 1200
    backing_off = add(store, "gone", "k1")
    queued = add(store, "gone", "k2")
    expired = add(store, "gone", "k4")
    other = add(store, "kept", "k1")
    done = add(store, "gone", "k5")
    claimed = {r.id for r in store.outbox_claim("dead", 1000.0, 1100.0, 10)}
    assert claimed == {backing_off, queued, expired, other, done}
    assert store.outbox_retry(backing_off, "dead", 1500.0, "HTTP 503")
    assert store.outbox_release(queued, "dead", 1000.0)
    assert store.outbox_sent(done, "dead", 1001.0)
    assert store.outbox_release(other, "dead", 1000.0)
    # expired: its claimer died, its lease (1100) is over at 1200

    ids = store.outbox_abandon("gone", 1200.0, removed_error("gone"))
    rows = {r.id: r for r in store.outbox_rows()}
    assert ids == [backing_off, queued, expired]
    for row_id in ids:
        assert rows[row_id].status == "failed"
        assert rows[row_id].finished_at == 1200.0
        assert rows[row_id].last_error == "channel 'gone' was removed from the config by a reload; not sent"
    assert rows[in_flight].status == "pending"  # its sender records the outcome
    assert rows[other].status == "pending"
    assert rows[done].status == "sent"
    assert store.outbox_abandon("gone", 1200.0, "again") == []


def test_due_now_cancels_the_backoff_of_unclaimed_rows(store: Store) -> None:
    waiting = add(store, "hook", "k1")
    in_flight = add(store, "hook", "k2")
    other = add(store, "ops", "k1")
    store.outbox_claim("me", 1000.0, 1100.0, 10)
    assert store.outbox_retry(waiting, "me", 1600.0, "HTTP 503")
    assert store.outbox_retry(other, "me", 1600.0, "HTTP 503")

    assert store.outbox_due_now("hook", 1010.0) == 1
    rows = {r.id: r for r in store.outbox_rows()}
    assert rows[waiting].next_attempt_at == 1010.0
    assert rows[waiting].attempts == 1  # the record stays
    assert rows[in_flight].next_attempt_at == 1100.0  # still its sender's
    assert rows[other].next_attempt_at == 1600.0
    assert store.outbox_due_now("hook", 1010.0) == 0
