"""Runbooks end to end: the real daemon (``paramedic run``) heals, gives up, holds back and recovers
its journal against real busybox containers.

Every test starts ``paramedic run -c CFG --log-format json`` as a subprocess with its store in
``tmp_path`` and its API on a free port, probes a container's HTTP server through the port Docker
publishes on 127.0.0.1 (interval 1 s, timeout 1 s, failure_threshold 2, success_threshold 1), and
reads what happened from three places that do not trust each other: the journal (``paramedic
history -o json`` or the store), the JSON log lines, and Docker itself (``State.StartedAt``,
``RestartCount`` and the container's event stream).

The containers: PID 1 is ``sh`` looping forever with ``httpd`` in the background, so the web
server can be hung (``killall -STOP httpd``: the published port still accepts, nothing answers)
without the container exiting. ``sh`` as PID 1 ignores SIGTERM unless it traps it: the fast
containers trap it (``docker restart`` takes a fraction of a second), the slow one does not (a
graceful restart waits the whole ``stop_timeout``).

Waits are bounded polls (``poll``), never long fixed sleeps; the few short sleeps give the
daemon a couple of probe intervals to do something it must *not* do.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from docker.models.containers import Container

from agent.store.sqlite import Store
from tests.support.docker import ContainerFactory, published_port, wait_for_http
from tests.support.installed import PARAMEDIC
from tests.support.processes import stop_process
from tests.support.servers import free_port
from tests.support.waiting import HttpReply, http_get, poll

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(90)]


_SERVE = "mkdir -p /www && echo ok > /www/index.html && httpd -f -p 80 -h /www & "
#: httpd in the background, PID 1 loops; SIGTERM ends it within 0.2 s (a quick graceful restart).
HANGABLE = "trap 'exit 0' TERM; " + _SERVE + "while true; do sleep 0.2; done"
#: The same, but PID 1 ignores SIGTERM: ``docker restart -t N`` waits the whole N seconds.
STUBBORN = _SERVE + "while true; do sleep 0.2; done"
#: Never serves anything: the published port refuses or drops every request, restart or not.
BROKEN = "trap 'exit 0' TERM; while true; do sleep 0.2; done"
#: Runs until /shared/die exists (a host directory all replicas mount), then exits 3 on its
#: own: a crash, not an operator's stop, of every replica within one 50 ms tick.
DIE_TOGETHER = "trap 'exit 0' TERM; while [ ! -f /shared/die ]; do sleep 0.05; done; exit 3"


def unique(prefix: str) -> str:
    return f"paramedic-test-{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- the agent


class Agent:
    """One config file, store and log directory; ``start()`` runs ``paramedic run`` on it (again)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "config.yaml"
        self.db = root / "paramedic.db"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "agent-0.log"
        self.logs: list[Path] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PARAMEDIC_")}

    def write_config(self, checks: list[dict[str, Any]], runbooks: list[dict[str, Any]],
                     guardrails: dict[str, Any]) -> None:
        doc = {
            "store": {"path": str(self.db)},
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "scheduler": {"jitter": 0, "flush_interval": 0.05},
            "guardrails": guardrails,
            "checks": checks,
            "runbooks": runbooks,
        }
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    # process

    def start(self, *extra: str) -> Agent:
        self.log = self.root / f"agent-{len(self.logs)}.log"
        self.logs.append(self.log)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(PARAMEDIC), "run", "-c", str(self.config_path), "--log-format", "json", *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=self.root, env=self.env,
            )
        poll(lambda: self.get("/healthz").status == 200, 20, "GET /healthz 200", self)
        return self

    def stop(self) -> int:
        """SIGTERM and wait (an action in flight finishes first); the exit code."""
        assert self.proc is not None
        if not stop_process(self.proc, timeout=30):
            pytest.fail(f"paramedic did not exit within 30 s of SIGTERM:\n{self.log_tail()}")
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or journaled."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PARAMEDIC), *args, "-c", str(self.config_path)], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.root, env=self.env)

    # observation

    def get(self, path: str) -> HttpReply:
        return http_get(f"http://127.0.0.1:{self.port}{path}", timeout=2.0)

    def check(self, name: str) -> dict[str, Any]:
        [item] = [c for c in json.loads(self.get("/api/v1/checks").body)["checks"] if c["name"] == name]
        return dict(item)

    def health(self, name: str) -> str:
        return str(self.check(name)["health"])

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def lines(self) -> list[dict[str, Any]]:
        """Every complete JSON log line of every run so far."""
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now
        return out

    def messages(self, fragment: str) -> list[str]:
        return [str(d.get("msg", "")) for d in self.lines() if fragment in str(d.get("msg", ""))]

    def journal(self) -> list[dict[str, Any]]:
        """Every journal entry (intent with its outcome), oldest first."""
        store = Store(self.db)
        try:
            return list(reversed(store.journal(limit=10_000)))
        finally:
            store.close()

    def history(self) -> list[dict[str, Any]]:
        """``paramedic history -o json``, oldest first."""
        done = self.cli("history", "--limit", "1000", "-o", "json")
        assert done.returncode == 0, done.stderr
        return list(reversed(json.loads(done.stdout)["actions"]))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """An :class:`Agent` rooted in ``tmp_path``; killed at teardown if a test left it running."""
    made = Agent(tmp_path)
    try:
        yield made
    finally:
        made.kill()


# --------------------------------------------------------------------------- config pieces


def http_check(name: str, port: int, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": f"http://127.0.0.1:{port}/", "interval": 1, "timeout": 1,
            "failure_threshold": 2, "success_threshold": 1, **kw}


def restart_ladder(check: str, container: str, *, stop_timeout: float = 1, verify_for: float = 10,
                   extra_steps: int = 0) -> dict[str, Any]:
    """Graceful restart, then forced restart (then ``extra_steps`` more graceful ones)."""
    target = {"container": container}
    steps = [
        {"action": "restart", "params": {**target, "mode": "graceful", "stop_timeout": stop_timeout},
         "verify_for": verify_for},
        {"action": "restart", "params": {**target, "mode": "force"}, "verify_for": verify_for},
    ]
    steps += [dict(steps[0]) for _ in range(extra_steps)]
    return {"name": "web-down", "summary": "the web server does not answer", "severity": "SEV-2",
            "match": {"checks": [check]}, "steps": steps, "escalation": "page the web on-call"}


def guardrails(**per_target: Any) -> dict[str, Any]:
    limits = {"budget": 3, "window": "10m", "cooldown": "1s", "backoff": {"base": "0.2s", "max": "1s"},
              "reset_after": "10m", **per_target}
    return {"per_target": limits, "global": {"max_per_hour": 50, "max_concurrent": 2}}


# --------------------------------------------------------------------------- Docker's view


def web_container(containers: ContainerFactory, script: str, serving: bool = True) -> tuple[Container, int]:
    """A container running ``script`` under ``sh -c``, port 80 published on a fixed 127.0.0.1 port.

    Fixed, not Docker's pick: Docker picks a new random host port at every restart, and the
    check's URL must stay right across the restarts this module is about. Waits for a 200
    when the script serves.
    """
    port = free_port()
    container = containers.run(["sh", "-c", script], name=unique("web"), ports={"80/tcp": ("127.0.0.1", port)})
    assert published_port(container) == port
    if serving:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=10, status=200)
    return container, port


def hang(container: Container) -> None:
    """SIGSTOP the web server: the published port still accepts, nothing ever answers."""
    code, output = container.exec_run(["killall", "-STOP", "httpd"])
    assert code == 0, output


def docker_state(container: Container) -> tuple[str, int, str]:
    """(State.StartedAt, RestartCount, State.Status)."""
    container.reload()
    attrs = container.attrs
    return attrs["State"]["StartedAt"], int(attrs["RestartCount"]), attrs["State"]["Status"]


def docker_events(client: docker.DockerClient, container: Container, since: float) -> list[tuple[str, float]]:
    """``(action, epoch s)`` of what Docker reported for ``container`` from ``since`` until now."""
    until = time.time()
    events = client.events(since=int(since), until=int(until) + 1, decode=True,  # whole seconds
                           filters={"container": container.id, "type": "container"})
    try:
        found = [(str(e.get("Action") or e.get("status")), int(e["timeNano"]) / 1e9) for e in events]
    finally:
        events.close()
    return [(action, at) for action, at in found if since <= at]


def actions(events: list[tuple[str, float]]) -> list[str]:
    return [action for action, _ in events]


def applied(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Journal entries for actions that were (or may have been) carried out."""
    return [e for e in entries if not e["dry_run"] and e["outcome"] in ("ok", "failed", "interrupted", None)]


def decision(entry: dict[str, Any], policy: str) -> dict[str, Any]:
    [found] = [d for d in entry["detail"]["decisions"] if d["policy"] == policy]
    return dict(found)


# --------------------------------------------------------------------------- tests


def test_a_hung_web_server_is_healed_by_the_first_step_of_the_ladder(
    agent: Agent, containers: ContainerFactory
) -> None:
    container, port = web_container(containers, HANGABLE)
    agent.write_config([http_check("web", port)], [restart_ladder("web", container.name)], guardrails())
    agent.start()
    poll(lambda: agent.health("web") == "OK", 10, "web OK before the fault", agent)
    started_before, _, _ = docker_state(container)

    hang(container)
    poll(lambda: applied(agent.journal()), 15, "a restart in the journal", agent)
    [done] = poll(lambda: [e for e in agent.journal() if e["outcome"]], 20, "the restart's outcome", agent)
    assert done["outcome"] == "ok", done
    poll(lambda: agent.health("web") == "OK", 10, "web OK again", agent)
    assert http_get(f"http://127.0.0.1:{port}/", timeout=2).status == 200

    [action] = applied(agent.history())
    assert (action["runbook"], action["step"], action["action"]) == ("web-down", 0, "restart")
    assert action["target"] == f"container {container.name}"
    assert action["outcome"] == "ok"
    verification = action["outcome_detail"]["verification"]
    assert verification["ok"] is True
    assert verification["last_status"] == "OK"
    assert action["outcome_detail"]["result"]["ok"] is True
    assert all(d["allowed"] for d in action["detail"]["decisions"])
    started_after, _, status = docker_state(container)
    assert status == "running"
    assert started_after != started_before
    assert agent.stop() == 0


def test_a_container_that_stays_broken_spends_its_budget_and_is_escalated_once(
    agent: Agent, containers: ContainerFactory
) -> None:
    container, port = web_container(containers, BROKEN, serving=False)
    # three rungs, so that the budget (2) and not the end of the ladder is what stops it
    book = restart_ladder("web", container.name, verify_for=2, extra_steps=1)
    agent.write_config([http_check("web", port)], [book], guardrails(budget=2, cooldown="0s"))
    agent.start()

    poll(lambda: agent.messages("ESCALATE"), 40, "an ESCALATE log line", agent)
    time.sleep(3)  # three more probes of a check that stays DOWN: nothing more may happen

    entries = agent.history()
    actions = applied(entries)
    assert len(actions) == 2, entries
    assert [a["outcome"] for a in actions] == ["failed", "failed"]
    assert [a["step"] for a in actions] == [0, 1]
    blocked = [e for e in entries if e["outcome"] == "blocked"]
    assert blocked, entries
    assert blocked[0]["id"] > actions[-1]["id"]
    for entry in blocked:
        budget = decision(entry, "target_budget")
        assert budget["allowed"] is False
        assert budget["reason"].startswith("given up"), budget
        assert budget["escalate"] is True
    assert len(agent.messages("ESCALATE")) == 1, agent.messages("ESCALATE")
    [line] = [d for d in agent.lines() if "ESCALATE" in str(d.get("msg"))]
    assert line["level"] == "error"
    assert line["runbook"] == "web-down"
    assert "given up" in line["escalation"]
    assert agent.health("web") == "DOWN"
    assert agent.stop() == 0


def test_half_of_a_service_down_stops_the_blast_radius(
    agent: Agent, containers: ContainerFactory, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    names = [unique("replica") for _ in range(2)]
    labels = {"com.docker.compose.project": unique("shop"), "com.docker.compose.service": "web"}
    replicas = [containers.run(["sh", "-c", DIE_TOGETHER], name=n, labels=labels,
                               volumes={str(shared): {"bind": "/shared", "mode": "ro"}}) for n in names]
    for r in replicas:
        poll(lambda r=r: docker_state(r)[2] == "running", 10, f"{r.name} running")
    # A death is seen at once (the Docker event, then the run it triggers: two failures within
    # ~50 ms), so with failure_threshold 2 a replica could be DOWN before the other's death is
    # known, and 1 of 2 (50%) is within the limit. Three failures leave a second for both to show.
    checks = [{"name": f"web-{i}", "type": "container", "container": n, "tags": ["web"], "interval": 1,
               "timeout": 1, "failure_threshold": 3, "success_threshold": 1} for i, n in enumerate(names)]
    book = {"name": "replica-down", "severity": "SEV-2", "match": {"tags": ["web"]},
            "steps": [{"action": "restart", "params": {"mode": "graceful", "stop_timeout": 1}, "verify_for": 5}]}
    agent.write_config(checks, [book], guardrails() | {"blast_radius": {"max_unhealthy": 0.5}})
    agent.start()
    poll(lambda: all(agent.health(c["name"]) == "OK" for c in checks), 10, "replicas OK", agent)

    (shared / "die").touch()  # both crash at once (on their own: not an operator's stop)
    poll(lambda: all(agent.health(c["name"]) == "DOWN" for c in checks), 15, "both replicas DOWN", agent)
    blocked = poll(lambda: len([e for e in agent.journal() if e["outcome"] == "blocked"]) == 2 and
                   [e for e in agent.journal() if e["outcome"] == "blocked"], 10, "two blocked decisions", agent)
    time.sleep(2)  # two more probes each: still nothing

    entries = agent.history()
    assert applied(entries) == [], entries
    assert {e["check"] for e in blocked} == {"web-0", "web-1"}
    for entry in blocked:
        radius = decision(entry, "blast_radius")
        assert radius["allowed"] is False
        assert radius["escalate"] is True
        assert "2 of 2 in tag:web unhealthy or being acted on (100% > 50%)" in radius["reason"], radius
        assert "acting on none of them" in radius["reason"]
        assert radius["reason"] in entry["outcome_detail"]["reasons"]
    assert len(agent.messages("ESCALATE")) == 2  # once per replica's ladder
    for r in replicas:
        assert docker_state(r)[2] == "exited"  # nobody started them
    assert agent.stop() == 0


def test_sigkill_during_a_restart_ends_with_exactly_one_restart(
    agent: Agent, containers: ContainerFactory, docker_client: docker.DockerClient
) -> None:
    container, port = web_container(containers, STUBBORN)  # ignores SIGTERM: the restart takes 5 s
    book = restart_ladder("web", container.name, stop_timeout=5)
    # A 1 s cooldown: what holds the new agent back is that the interrupted restart counts as
    # still running (Docker may be in its grace period), not a long cooldown.
    agent.write_config([http_check("web", port)], [book], guardrails(cooldown="1s"))
    agent.start()
    poll(lambda: agent.health("web") == "OK", 10, "web OK before the fault", agent)
    since = time.time()
    started_before, _, _ = docker_state(container)

    hang(container)
    store = Store(agent.db)
    try:
        [intent] = poll(store.open_intents, 15, "an open restart intent", agent)
    finally:
        store.close()
    time.sleep(0.5)  # the restart request is with Docker now (SIGTERM sent, 5 s grace running)
    agent.kill()
    killed_at = time.time()
    assert docker_state(container)[2] == "running"  # still in the grace period: mid-restart

    agent.start()  # reconciles the intent it finds open
    entry = poll(lambda: next((e for e in agent.journal() if e["id"] == intent["id"] and e["outcome"]), None),
                 15, "the intent reconciled", agent)
    assert entry["outcome"] == "interrupted"
    assert "not repeated" in entry["outcome_detail"]["note"]
    poll(lambda: agent.health("web") == "OK", 15, "web OK after Docker finished the restart", agent)
    time.sleep(2)  # a couple of probes more: no second attempt

    entries = agent.journal()
    [restart] = [e for e in applied(entries) if e["action"] == "restart" and e["step"] == 0]
    assert restart["id"] == intent["id"]
    assert applied(entries) == [restart], entries
    for later in entries[1:]:  # the new agent saw the check still DOWN: the interrupted restart held it back
        assert later["outcome"] == "blocked", later
        assert decision(later, "one_per_target")["allowed"] is False, later
    assert agent.messages("reconciled interrupted action")
    events = docker_events(docker_client, container, since)
    assert actions(events).count("restart") == 1, events
    assert actions(events).count("start") == 1, events
    first_kill = min(at for action, at in events if action == "kill")  # the restart's SIGTERM...
    [started] = [at for action, at in events if action == "start"]
    assert first_kill < killed_at < started, (events, killed_at)  # ...came before the agent died, the start after
    started_after, _, status = docker_state(container)
    assert status == "running"
    assert started_after != started_before
    assert agent.stop() == 0


def test_audit_and_dry_run_leave_every_container_untouched(
    agent: Agent, containers: ContainerFactory, docker_client: docker.DockerClient
) -> None:
    container, port = web_container(containers, BROKEN, serving=False)
    agent.write_config([http_check("web", port)], [restart_ladder("web", container.name)],
                       guardrails(cooldown="0s"))
    before = docker_state(container)
    since = time.time()

    audit = agent.cli("audit")
    assert audit.returncode == 2, audit.stdout + audit.stderr  # CRITICAL
    out = audit.stdout
    assert "web: CRITICAL" in out
    assert "runbook web-down (SEV-2)" in out
    assert "step 1 (restart)" in out
    assert f"plan: restart {container.name}" in out
    assert "guardrails: ALLOWED" in out
    for policy in ("pause", "dry_run", "blast_radius", "target_budget", "cooldown", "backoff"):
        assert f"    {policy} " in out, out
    as_json = json.loads(agent.cli("audit", "-o", "json").stdout)
    [proposal] = as_json["proposals"]
    assert proposal["plan"]["changes"] is True
    assert proposal["admission"]["allowed"] is True
    assert docker_state(container) == before

    agent.start("--dry-run")
    poll(lambda: len([e for e in agent.journal() if e["outcome"] == "dry-run"]) >= 2, 15,
         "dry-run entries in the journal", agent)
    time.sleep(1)
    assert agent.stop() == 0

    entries = agent.history()
    assert entries
    assert all(e["dry_run"] for e in entries), entries
    assert {e["outcome"] for e in entries} == {"dry-run"}
    assert entries[0]["outcome_detail"]["would"] == f"restart {container.name}"
    assert entries[0]["step"] == 0
    assert "dry-run" in decision(entries[0], "dry_run")["reason"]
    assert docker_state(container) == before
    assert docker_events(docker_client, container, since) == []  # no kill, stop, start or restart


def test_pause_blocks_until_resume(agent: Agent, containers: ContainerFactory) -> None:
    container, port = web_container(containers, HANGABLE)
    agent.write_config([http_check("web", port)], [restart_ladder("web", container.name)], guardrails())
    paused = agent.cli("pause", "--reason", "deploy freeze")
    assert paused.returncode == 0, paused.stderr
    agent.start()
    poll(lambda: agent.health("web") == "OK", 10, "web OK before the fault", agent)
    started_before, _, _ = docker_state(container)

    hang(container)
    [entry] = poll(lambda: [e for e in agent.journal() if e["outcome"] == "blocked"], 15, "a blocked decision", agent)
    pause = decision(entry, "pause")
    assert pause["allowed"] is False
    assert "deploy freeze" in pause["reason"]
    assert any("paused: deploy freeze" in r for r in entry["outcome_detail"]["reasons"])
    time.sleep(2)  # still DOWN, still paused: nothing
    assert applied(agent.journal()) == []
    assert docker_state(container)[0] == started_before

    assert agent.cli("resume").stdout.strip() == "resumed"
    [action] = poll(lambda: applied(agent.journal()), 10, "a restart after resume", agent)
    poll(lambda: (next(e for e in agent.journal() if e["id"] == action["id"])["outcome"] == "ok") or None, 20,
         "the restart verified", agent)
    poll(lambda: agent.health("web") == "OK", 10, "web OK again", agent)
    assert docker_state(container)[0] != started_before
    assert agent.stop() == 0
