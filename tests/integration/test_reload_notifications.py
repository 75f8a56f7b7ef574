"""SIGHUP and the layers after the checks: notification channels, incident settings, runbooks.

The real daemon (``paramedic run``, a subprocess) watches an HTTP check served by this
module (a switch: 200 or 500 on demand); its runbook's one step is the ``webhook`` action,
POSTing to a "fixer" here that turns the switch back to 200, so an incident opens, is
remediated and resolves without Docker. Notification channels are webhooks to local
receivers. The tests rewrite the config, send SIGHUP, and look at what each receiver got,
the daemon's JSON log and the store's outbox.

A few tests drive :class:`~agent.runtime.outbox.Notifier` and
:class:`~agent.runtime.remedy.Remedy` in-process, where the timing of "pending" and "in flight"
must be exact.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.model import Config, load_config
from agent.core.state import CheckState, Health
from agent.kernel.results import Result, Status
from agent.notify.templates import Notice
from agent.runtime.executor import Executor
from agent.runtime.outbox import Notifier, removed_error
from agent.runtime.remedy import LADDER_FLAG, Remedy
from agent.store.sqlite import OutboxRow, Store
from remediations.base import ActionContext
from tests.support.servers import free_port
from tests.support.waiting import http_get, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PARAMEDIC = Path(sys.executable).with_name("paramedic")
#: In every receiver URL (path and query): must never reach a log line.
TOKEN = "T0k" + uuid.uuid4().hex


# --------------------------------------------------------------------------- local servers


class Http:
    """A local HTTP server: answers every request with ``status`` and records it.

    ``on_post`` runs for each POST before the answer (the fixer turns the switch back on);
    ``delay`` holds each answer back (an action in flight).
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.delay = 0.0
        self.posts: list[dict[str, Any]] = []
        self.gets = 0
        self.on_post: Callable[[], None] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.gets += 1
                self._answer()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.posts.append(json.loads(body) if body else {})
                time.sleep(server.delay)
                if server.on_post is not None:
                    server.on_post()
                self._answer()

            def _answer(self) -> None:
                body = b"ok\n" if server.status < 400 else b"broken\n"
                self.send_response(server.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hook(self) -> str:
        """A webhook URL with a token in its path and its query, as chat webhooks have."""
        return self.url(f"/hooks/{TOKEN}?token={TOKEN}")

    def kinds(self) -> list[str]:
        return [p.get("kind", "") for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def servers() -> Iterator[Callable[..., Http]]:
    made: list[Http] = []

    def make(status: int = 200) -> Http:
        made.append(Http(status))
        return made[-1]

    try:
        yield make
    finally:
        for server in made:
            server.close()


# --------------------------------------------------------------------------- the daemon


class Agent:
    """One ``paramedic run`` with its config file, JSON log and store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "paramedic.yaml"
        self.db = root / "paramedic.db"
        self.port = free_port()
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self, doc: dict[str, Any]) -> None:
        doc = {"store": {"path": str(self.db)}, "server": {"listen": f"127.0.0.1:{self.port}"},
               "scheduler": {"jitter": 0, "flush_interval": 0.05}, **doc}
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, self.config_path)  # a SIGHUP never reads half a file

    def start(self) -> Agent:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARAMEDIC_")}
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(PARAMEDIC), "run", "-c", str(self.config_path), "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=self.root, env=env,
            )
        self.wait(lambda: http_get(f"http://127.0.0.1:{self.port}/healthz").status == 200 or None,
                  20, "GET /healthz 200")
        return self

    def wait(self, attempt: Callable[[], Any], timeout: float, what: str) -> Any:
        def alive() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.text()[-4000:]}")
            return attempt()

        try:
            return wait_until(alive, timeout=timeout, what=what)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{self.text()[-4000:]}")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        text = self.text()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    def reload(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Write ``doc``, SIGHUP, and return the log line that answers it (reloaded or rejected)."""
        seen = len(self.answers())
        self.write(doc)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        answers: list[dict[str, Any]] = self.wait(lambda: self.answers()[seen:] or None, 20, "the reload's log line")
        return answers[0]

    def answers(self) -> list[dict[str, Any]]:
        return [x for x in self.lines() if x["msg"].startswith(("config reloaded", "reload rejected", "reload failed"))]

    def health(self) -> str:
        reply = http_get(f"http://127.0.0.1:{self.port}/api/v1/checks/web")
        return str(json.loads(reply.body)["state"]) if reply.status == 200 else ""

    def outbox(self) -> list[OutboxRow]:
        store = Store(self.db)
        try:
            return store.outbox_rows()
        finally:
            store.close()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit within 20s of SIGTERM:\n{self.text()[-4000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path)
    try:
        yield a
    finally:
        a.kill()


def hook(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, **kw}


def doc(switch: Http, fixer: Http | None, channels: list[dict[str, Any]] | None, *,
        retry: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A config: check ``web`` on ``switch``; with ``fixer``, runbook ``web-down`` POSTing to it."""
    out: dict[str, Any] = {
        "guardrails": {"per_target": {"cooldown": "0s", "backoff": {"base": "0s", "max": "0s"}}},
        "incidents": {"service": "shop", "evidence": {"enabled": False}},
        **top,
        "checks": [{"name": "web", "type": "http", "url": switch.url("/health"), "interval": "200ms",
                    "timeout": "1s", "failure_threshold": 2, "success_threshold": 1}],
    }
    if channels is not None:
        out["notifications"] = {"retry": retry or {"attempts": 5, "initial": "200ms", "max_delay": "1s",
                                                   "jitter": "0s"}, "channels": channels}
    if fixer is not None:
        out["runbooks"] = [{"name": "web-down", "severity": "SEV-2", "summary": "shop down",
                            "match": {"checks": ["web"]},
                            "steps": [{"action": "webhook", "params": {"url": fixer.url("/fix")},
                                       "verify_for": "5s"}]}]
    return out


def fixer_for(servers: Callable[..., Http], switch: Http) -> Http:
    fixer = servers()
    fixer.on_post = lambda: setattr(switch, "status", 200)
    return fixer


def assert_no_secret(agent: Agent) -> None:
    assert TOKEN not in agent.text()


# --------------------------------------------------------------------------- the daemon, SIGHUP


def test_sighup_moves_a_webhook_channel_from_receiver_a_to_receiver_b(
    agent: Agent, servers: Callable[..., Http]
) -> None:
    switch, a, b = servers(), servers(), servers()
    fixer = fixer_for(servers, switch)
    agent.write(doc(switch, fixer, [hook("hook", a.hook())]))
    agent.start()
    agent.wait(lambda: agent.health() == "OK" or None, 10, "web OK")

    # an incident, start to end, on A: the channel works before the reload
    switch.status = 500
    agent.wait(lambda: "resolution" in a.kinds() or None, 30, f"resolution at A (got {a.kinds()})")
    assert a.kinds()[0] == "initial"
    assert len(fixer.posts) == 1

    line = agent.reload(doc(switch, fixer, [hook("hook", b.hook())]))
    assert line["msg"] == "config reloaded: 1 checks; runbooks: web-down; notification channels: hook [changed]"
    assert line["reload"]["channels"]["changed"] == ["hook"]
    seen_by_a = len(a.posts)

    # the next incident: its notices go to B, none to A
    switch.status = 500
    agent.wait(lambda: "initial" in b.kinds() or None, 30, f"initial notice at B (got {b.kinds()})")
    time.sleep(1.0)  # whatever else is sent meanwhile (the engine escalates: the ladder is spent) goes to B too
    assert len(a.posts) == seen_by_a
    first, second = a.posts[0]["notice"], b.posts[0]["notice"]
    assert second["incident_id"] == first["incident_id"] + 1
    assert b.posts[0]["channel"] == "hook"
    assert all(row.status in ("sent", "pending") for row in agent.outbox())
    assert agent.stop() == 0
    assert_no_secret(agent)


def test_pending_notices_of_a_changed_channel_go_to_its_new_definition(
    agent: Agent, servers: Callable[..., Http]
) -> None:
    switch, a, b = servers(), servers(503), servers()
    fixer = fixer_for(servers, switch)
    agent.write(doc(switch, fixer, [hook("hook", a.hook())],
                    retry={"attempts": 10, "initial": "60s", "max_delay": "60s", "jitter": "0s"}))
    agent.start()
    agent.wait(lambda: agent.health() == "OK" or None, 10, "web OK")
    switch.status = 500
    # A answers 503: the alert waits a minute for its next attempt, the other notices queued behind it
    agent.wait(lambda: [r for r in agent.outbox() if r.kind == "initial" and r.last_error] or None, 30,
               "the alert's failed first attempt recorded")
    agent.wait(lambda: agent.health() == "OK" or None, 30, "web fixed")
    assert [p["kind"] for p in a.posts] == ["initial"]
    delivery = a.posts[0]["delivery_id"]

    t0 = time.monotonic()
    agent.reload(doc(switch, fixer, [hook("hook", b.hook())],
                     retry={"attempts": 10, "initial": "200ms", "max_delay": "1s", "jitter": "0s"}))
    agent.wait(lambda: "resolution" in b.kinds() or None, 20, f"the queued notices at B (got {b.kinds()})")
    assert time.monotonic() - t0 < 30  # due at once, not after the old definition's 60 s backoff
    assert b.posts[0]["delivery_id"] == delivery  # the very row A refused
    assert b.kinds()[0] == "initial"
    assert b.kinds().index("update") < b.kinds().index("resolution")
    assert len(a.posts) == 1
    def all_sent() -> list[OutboxRow] | None:
        rows = agent.outbox()
        return rows if {r.status for r in rows} == {"sent"} else None

    rows = agent.wait(all_sent, 10, "every row recorded as sent")
    assert next(r for r in rows if r.id == delivery).attempts == 2  # one at A, one at B
    assert agent.stop() == 0
    assert_no_secret(agent)


def test_sighup_with_an_invalid_channel_keeps_the_old_channels(
    agent: Agent, servers: Callable[..., Http], tmp_path: Path
) -> None:
    switch, a, b = servers(), servers(), servers()
    fixer = fixer_for(servers, switch)
    agent.write(doc(switch, fixer, [hook("hook", a.hook())]))
    agent.start()
    agent.wait(lambda: agent.health() == "OK" or None, 10, "web OK")

    bad_url = doc(switch, fixer, [hook("hook", b.hook()), hook("ops", "ftp://example.com/x")])
    bad_url["checks"].append({"name": "extra", "type": "http", "url": switch.url(), "interval": "1s"})
    line = agent.reload(bad_url)
    assert line["msg"].startswith("reload rejected")
    assert line["problems"] == ["notifications.channels[1].url: must be an http:// or https:// URL with a host"]

    missing = tmp_path / "no-such-ca.pem"
    bad_ca = doc(switch, fixer, [hook("hook", b.hook(), ca_file=str(missing))])
    bad_ca["checks"].append({"name": "extra", "type": "http", "url": switch.url(), "interval": "1s"})
    line = agent.reload(bad_ca)
    assert line["msg"].startswith("reload rejected")
    assert line["problems"] == [f"notifications.channels[0].ca_file: cannot load {missing}: No such file or directory"]

    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    line = agent.reload(doc(switch, fixer, [hook("hook", b.hook(), ca_file=str(not_pem))]))
    assert line["msg"].startswith("reload rejected")
    assert line["problems"][0].startswith(f"notifications.channels[0].ca_file: cannot load {not_pem}: ")

    # nothing of the rejected configs applies: not the check, not B
    assert "extra" not in json.loads(http_get(f"http://127.0.0.1:{agent.port}/api/v1/checks").body)["checks"]
    switch.status = 500
    agent.wait(lambda: "resolution" in a.kinds() or None, 30, f"the incident's notices at A (got {a.kinds()})")
    assert b.posts == []
    assert agent.stop() == 0
    assert_no_secret(agent)


def test_pending_notices_of_a_removed_channel_are_marked_failed_and_logged(
    agent: Agent, servers: Callable[..., Http]
) -> None:
    switch, good, down = servers(), servers(), servers(503)
    fixer = fixer_for(servers, switch)
    slow = {"attempts": 10, "initial": "60s", "max_delay": "60s", "jitter": "0s"}
    agent.write(doc(switch, fixer, [hook("good", good.hook()), hook("gone", down.hook())], retry=slow))
    agent.start()
    agent.wait(lambda: agent.health() == "OK" or None, 10, "web OK")
    switch.status = 500
    agent.wait(lambda: "resolution" in good.kinds() or None, 30, f"the incident at good (got {good.kinds()})")
    agent.wait(lambda: [r for r in agent.outbox() if r.channel == "gone" and r.last_error] or None, 10,
               "gone's failed first attempt recorded")
    stuck = [r for r in agent.outbox() if r.channel == "gone"]
    assert {r.status for r in stuck} == {"pending"}
    assert [r.kind for r in stuck] == ["initial", "update", "resolution"]

    line = agent.reload(doc(switch, fixer, [hook("good", good.hook())], retry=slow))
    assert "notification channels: gone [removed, 3 pending marked failed], good;" in line["msg"] + ";"
    assert line["reload"]["abandoned"] == {"gone": 3}
    [said] = [x for x in agent.lines() if x["msg"].startswith("notification channel gone was removed")]
    assert said["level"] == "error"
    ids = [r.id for r in stuck]
    assert said["msg"] == ("notification channel gone was removed by a config reload: 3 pending notification(s) "
                           f"marked failed, not sent (outbox ids {', '.join(map(str, ids))})")
    rows = {r.id: r for r in agent.outbox()}
    for row_id in ids:
        assert rows[row_id].status == "failed"
        assert rows[row_id].last_error == removed_error("gone")
    assert len(down.posts) == 1  # its one attempt before the reload; nothing after

    # the remaining channel goes on (a second incident: the ladder is spent, so it escalates)
    switch.status = 500
    agent.wait(lambda: good.kinds().count("initial") == 2 or None, 30, f"a second alert at good ({good.kinds()})")
    assert len(down.posts) == 1
    assert agent.stop() == 0
    assert_no_secret(agent)


def test_runbooks_and_channels_added_then_removed_by_reload(agent: Agent, servers: Callable[..., Http]) -> None:
    switch, receiver = servers(), servers()
    fixer = fixer_for(servers, switch)
    agent.write(doc(switch, None, None))  # no runbooks, no notifications
    agent.start()
    agent.wait(lambda: agent.health() == "OK" or None, 10, "web OK")

    line = agent.reload(doc(switch, fixer, [hook("hook", receiver.hook())]))
    assert line["msg"] == ("config reloaded: 1 checks; runbooks: web-down [added]; "
                           "notification channels: hook [added]; notification retry/retention changed")
    assert any(x["msg"].startswith("the config has runbooks now") for x in agent.lines())
    switch.status = 500
    agent.wait(lambda: "resolution" in receiver.kinds() or None, 30, f"the incident (got {receiver.kinds()})")
    assert receiver.kinds()[0] == "initial"
    assert len(fixer.posts) == 1

    # and both away again: the engine stays, idle; nothing is sent, nothing breaks
    line = agent.reload(doc(switch, None, None))
    assert line["msg"] == ("config reloaded: 1 checks; runbooks: web-down [removed]; "
                           "notification channels: hook [removed]; notification retry/retention changed")
    sent = len(receiver.posts)
    switch.status = 500
    agent.wait(lambda: agent.health() == "DOWN" or None, 10, "web DOWN")
    time.sleep(1.0)
    assert len(fixer.posts) == 1
    assert len(receiver.posts) == sent
    assert agent.health() == "DOWN"
    assert agent.stop() == 0
    assert [x for x in agent.lines() if x["level"] in ("error", "critical")] == []
    assert_no_secret(agent)


def test_a_guardrail_change_applies_at_the_next_decision(agent: Agent, servers: Callable[..., Http]) -> None:
    switch, receiver = servers(), servers()
    fixer = fixer_for(servers, switch)
    held = doc(switch, fixer, [hook("hook", receiver.hook())],
               maintenance=[{"cron": "* * * * *", "duration": "1h", "reason": "upgrade"}])
    agent.write(held)
    agent.start()
    agent.wait(lambda: agent.health() == "OK" or None, 10, "web OK")
    switch.status = 500
    agent.wait(lambda: "update" in receiver.kinds() or None, 30, f"the blocked update ({receiver.kinds()})")
    assert "maintenance" in receiver.posts[receiver.kinds().index("update")]["notice"]["update"]
    assert fixer.posts == []

    line = agent.reload(doc(switch, fixer, [hook("hook", receiver.hook())]))
    assert "; guardrails changed;" in line["msg"]
    # the next CRITICAL result of the DOWN check is decided under the new guardrails: it acts
    agent.wait(lambda: "resolution" in receiver.kinds() or None, 30, f"resolution ({receiver.kinds()})")
    assert len(fixer.posts) == 1
    assert agent.stop() == 0


# --------------------------------------------------------------------------- in-process: the outbox


def _notice(kind: str = "initial", incident: int = 1) -> Notice:
    return Notice(kind, incident, f"runbook:r/target:t{incident}", "SEV-2", service="shop",  # type: ignore[arg-type]
                  issue="web is DOWN", started_at=1000.0)


def _config(tmp_path: Path, channels: list[dict[str, Any]], retry: dict[str, Any] | None = None) -> Config:
    path = tmp_path / f"c-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({
        "checks": [{"name": "web", "type": "tcp", "host": "127.0.0.1", "port": 1}],
        "notifications": {"retry": retry or {"attempts": 5, "initial": "60s", "max_delay": "60s", "jitter": "0s"},
                          "channels": channels},
    }))
    return load_config(path)


def test_notifier_apply_routes_new_notices_and_keeps_in_flight_sends(
    servers: Callable[..., Http], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, slow = servers(503), servers(), servers()
    slow.delay = 1.0
    store = Store(tmp_path / "s.db")
    first = _config(tmp_path, [hook("hook", a.hook()), hook("slow", slow.hook()), hook("gone", a.url("/gone"))])

    async def scenario() -> None:
        notifier = Notifier(first.notifications, store, redactor=first.redactor, poll_interval=0.1)
        await notifier.start()
        try:
            notifier.notify(_notice())
            def attempted() -> bool | None:
                failed = {r.channel for r in store.outbox_rows() if r.last_error}
                return (failed == {"hook", "gone"} and bool(slow.posts)) or None

            await asyncio.to_thread(wait_until, attempted, timeout=10, what="first attempts recorded")
            # now: hook and gone pending (A said 503, next try in 60 s), slow in flight for a second
            second = _config(tmp_path, [hook("hook", b.hook()), hook("slow", b.url("/slow-moved")),
                                        hook("added", b.url("/added"), kinds=["resolution"])])
            abandoned = await notifier.apply(notifier.prepare(second.notifications, second.redactor))
            gone = [r.id for r in store.outbox_rows() if r.channel == "gone"]
            assert abandoned == {"gone": tuple(gone)}
            notifier.notify(_notice("resolution"))
            assert await notifier.drain(10)
        finally:
            await notifier.stop(2)

    asyncio.run(scenario())
    rows = {(r.channel, r.kind): r for r in store.outbox_rows()}
    assert rows[("hook", "initial")].status == "sent"  # pending at A, sent to B
    assert rows[("slow", "initial")].status == "sent"
    assert len(slow.posts) == 1  # the send in flight finished where it started
    assert rows[("gone", "initial")].status == "failed"
    assert rows[("gone", "initial")].last_error == removed_error("gone")
    assert ("gone", "resolution") not in rows  # routed by the new channels
    assert rows[("added", "resolution")].status == "sent"
    assert ("added", "initial") not in rows
    assert sorted(p["kind"] for p in b.posts) == ["initial", "resolution", "resolution", "resolution"]
    assert any("notification channel gone was removed by a config reload" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text
    store.close()


def test_notifier_prepare_rejects_an_unbuildable_channel_and_changes_nothing(
    servers: Callable[..., Http], tmp_path: Path
) -> None:
    from agent.kernel.errors import ConfigError

    a = servers()
    store = Store(tmp_path / "s.db")
    first = _config(tmp_path, [hook("hook", a.hook())])
    broken = _config(tmp_path, [hook("hook", a.url("/other"), ca_file=str(tmp_path / "missing.pem"))])

    async def scenario() -> None:
        notifier = Notifier(first.notifications, store, redactor=first.redactor)
        with pytest.raises(ConfigError) as caught:
            notifier.prepare(broken.notifications, broken.redactor)
        assert caught.value.problems == [
            f"notifications.channels[0].ca_file: cannot load {tmp_path / 'missing.pem'}: No such file or directory"]
        notifier.notify(_notice())
        assert await notifier.drain(5)
        await notifier.stop(1)

    asyncio.run(scenario())
    assert [p["channel"] for p in a.posts] == ["hook"]
    store.close()


# --------------------------------------------------------------------------- in-process: the engine


def _engine_config(tmp_path: Path, fixer: Http, *, with_check: bool = True, step_url: str | None = None) -> Config:
    path = tmp_path / f"e-{uuid.uuid4().hex[:6]}.yaml"
    checks = [{"name": "web", "type": "tcp", "host": "127.0.0.1", "port": 1}] if with_check else []
    checks.append({"name": "other", "type": "tcp", "host": "127.0.0.1", "port": 2})
    path.write_text(yaml.safe_dump({
        "checks": checks,
        "guardrails": {"per_target": {"cooldown": "0s", "backoff": {"base": "0s", "max": "0s"}}},
        "runbooks": [{"name": "web-down", "match": {"checks": ["web"]},
                      "steps": [{"action": "webhook", "params": {"url": step_url or fixer.url("/fix")},
                                 "verify_for": "2s"}]}] if with_check else [],
    }))
    return load_config(path)


def test_a_reload_during_an_action_leaves_it_to_finish_and_journal(servers: Callable[..., Http],
                                                                   tmp_path: Path) -> None:
    fixer = servers()
    fixer.delay = 1.0  # the action is in flight for a second
    first = _engine_config(tmp_path, fixer)
    second = _engine_config(tmp_path, fixer, with_check=False)  # the check and its runbook are gone
    store = Store(tmp_path / "s.db")
    engine: dict[str, Remedy] = {}

    async def run_check(name: str) -> Result:
        engine["remedy"].config.check(name)  # what the daemon's check_now does: KeyError if not configured
        return Result(name, "tcp", Status.OK, "ok", 1.0, started_at=time.time())

    remedy = Remedy(first, store, Executor(store, ActionContext(), first.redactor), run_check)
    engine["remedy"] = remedy
    down = CheckState("web", Health.DOWN, failures=3, since=1.0, last_status=Status.CRITICAL)
    failing = Result("web", "tcp", Status.CRITICAL, "refused", 1.0, started_at=time.time())

    async def scenario() -> Any:
        task = asyncio.create_task(remedy.handle(failing, down))
        await asyncio.to_thread(wait_until, lambda: fixer.posts or None, timeout=10, what="the action started")
        remedy.reconfigure(second)
        assert remedy.executor.redactor is second.redactor
        return await task

    execution = asyncio.run(scenario())
    assert execution is not None
    assert execution.outcome == "failed"  # applied; its check is no longer there to verify it
    assert "removed from the config" in execution.verification.last_message
    [entry] = store.journal()
    assert entry["outcome"] == "failed"  # journaled: no intent left open
    assert store.open_intents() == []
    assert store.flags(LADDER_FLAG)  # the ladder moved and is kept
    # the next decision is the new config's: no check, no runbook, nothing done
    assert asyncio.run(remedy.handle(failing, down)) is None
    assert len(fixer.posts) == 1
    store.close()
