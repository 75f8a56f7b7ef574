"""``restart`` and ``start``: bring a container's process back, without fighting Docker or people.

``restart`` is the seed runbook's "graceful restart" (``mode: graceful``: ``docker
restart`` semantics, SIGTERM then SIGKILL after ``stop_timeout``) and "forced restart"
(``mode: force``: SIGKILL, then start). ``start`` is for a container that exited on its
own and stays down.

Refusals (the plan says why; nothing is applied):

* no Docker target, or no container matched it (never "everything");
* a container an operator stopped on purpose (``context.operator_stops()``, recorded from
  Docker events by the daemon): a person's ``docker stop`` wins over a failing check;
* Docker's restart policy is already bringing it back (``State.Restarting``): acting now
  would race the policy's own start. Docker sets ``Restarting`` under the container lock
  in the same step that decides to restart (moby ``daemon/monitor.go``), so an *exited*
  container with a policy is one Docker decided not to restart (stopped by hand, or
  ``on-failure`` retries exhausted): acting on it races nothing;
* crash-looping: at least ``crash_loop_restarts`` restarts by Docker's policy since the
  last manual start (``RestartCount``; ``docker start`` resets it) and the last start within
  ``crash_loop_window`` (or restarting right now). Restarting a process that keeps
  crashing does not help; the runbook's next step (a rollback) is what helps, so the plan
  refuses and says so, even when Docker is mid-restart;
* paused (someone ran ``docker pause``), dead or being removed.

Groups (a compose service or a label selection, i.e. replicas): only the replicas that
are failing (not running, or health ``unhealthy``) are restarted; healthy ones are left
alone, and so are replicas a rule above protects (the plan lists them with the reason).
When no replica needs it, there is nothing to do. A single container (``container`` /
``id``) is restarted whatever its state says, because the triggering check (an HTTP
probe, say) knows better than ``State.Running`` that it is broken.

``apply`` acts on the ids the plan lists, one container at a time: it tells the event
listener first (``expect_events``, so the stop is not taken for an operator's), then
restarts, kills and starts, or starts, and waits (bounded by ``running_timeout``) until
Docker reports the container running; ``Outcome.data`` holds each one's new
``started_at`` and ``restart_count``.

Swarm services (``service: <name>`` in the step's params): ``restart`` is a rolling
restart by force-update (``docker service update --force``), planned and applied by
:mod:`remediations.swarm` (both modes do the same; the plan says so). ``start`` refuses:
Swarm keeps a service's tasks running itself, replacing any task that exits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from agent.kernel.durations import Duration, format_duration
from agent.kernel.errors import DependencyUnavailableError
from checks.container import parse_docker_time
from remediations import swarm
from remediations.base import ActionContext, Outcome, Plan, Remediation, Target, TargetParams
from remediations.dockerapi import DockerActionError, docker_client, find_containers

#: Seconds added to ``stop_timeout`` for ``expect_events``: the restart's stop/kill events
#: can reach the listener a little after Docker's grace period ends.
EVENT_MARGIN = 30.0
#: How often ``apply`` re-inspects a container while waiting for it to run.
POLL_INTERVAL = 0.1
_GONE = ("removing", "dead")


class _LoopParams(TargetParams):
    """Settings ``restart`` and ``start`` share: the crash-loop rule and the wait after acting."""

    crash_loop_restarts: int = Field(default=3, ge=1, description="Docker restarts that make a crash loop")
    crash_loop_window: Duration = Field(default=300.0, description="a crash loop's last start is this recent")
    running_timeout: Duration = Field(default=30.0, description="how long apply waits for State.Running")


class RestartParams(_LoopParams):
    """``mode: graceful`` (``docker restart``) or ``force`` (kill, then start)."""

    mode: Literal["graceful", "force"] = "graceful"
    stop_timeout: Duration = Field(default=10.0, description="graceful: SIGTERM grace before SIGKILL")


class StartParams(_LoopParams):
    """``start`` has only the shared settings."""


# --------------------------------------------------------------------------- snapshot (pure shaping)


def container_facts(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What the plans need from one container's inspect data, JSON-safe.

    ``started_s``/``finished_s`` are epoch seconds (None: never), so plans do arithmetic
    without parsing; ``restart_count`` is Docker's count of policy restarts since the last
    manual start.
    """
    state: Mapping[str, Any] = attrs.get("State") or {}
    policy: Mapping[str, Any] = (attrs.get("HostConfig") or {}).get("RestartPolicy") or {}
    status = str(state.get("Status") or "unknown")
    started = parse_docker_time(state.get("StartedAt"))
    finished = parse_docker_time(state.get("FinishedAt"))
    return {
        "id": str(attrs.get("Id") or ""),
        "name": str(attrs.get("Name") or "").lstrip("/"),
        "status": status,
        "running": status == "running",  # State.Running stays true while paused or restarting
        "restarting": bool(state.get("Restarting")),
        "health": str((state.get("Health") or {}).get("Status") or "none"),
        "exit_code": int(state.get("ExitCode") or 0),
        "oom_killed": bool(state.get("OOMKilled")),
        "started_s": started.timestamp() if started else None,
        "finished_s": finished.timestamp() if finished else None,
        "restart_count": int(attrs.get("RestartCount") or 0),
        "restart_policy": str(policy.get("Name") or "no") or "no",
        "max_retries": int(policy.get("MaximumRetryCount") or 0),
    }


def build_snapshot(
    inspected: Sequence[Mapping[str, Any]],
    now: float,
    operator_stops: Mapping[str, Mapping[str, Any]],
    docker_host: str | None,
) -> dict[str, Any]:
    """The snapshot ``inspect`` returns, from raw inspect data (tests feed recorded JSON)."""
    facts = [container_facts(a) for a in inspected]
    names = {f["name"] for f in facts}
    return {
        "now": now,
        "docker_host": docker_host,
        "containers": facts,
        "operator_stops": {k: dict(v) for k, v in operator_stops.items() if k in names},
    }


async def inspect_containers(context: ActionContext, target: Target) -> dict[str, Any]:
    """Read the selected containers (``all=True``); a Docker failure becomes ``{"error": ...}``.

    The error is kept in the snapshot rather than raised so the plan can refuse with it:
    audit mode then shows "cannot inspect: Docker at ... is unreachable" like any refusal.
    """
    if not target.is_docker or target.swarm_service:
        return {"now": context.clock(), "docker_host": target.docker_host, "containers": [], "operator_stops": {}}

    def read() -> list[dict[str, Any]]:
        client = docker_client(context.resources, target.docker_host)
        return [dict(c.attrs) for c in find_containers(client, target)]

    try:
        inspected = await asyncio.to_thread(read)
    except (DockerActionError, DependencyUnavailableError) as exc:
        return {"error": str(exc), "docker_host": target.docker_host}
    return build_snapshot(inspected, context.clock(), context.operator_stops(), target.docker_host)


# --------------------------------------------------------------------------- decisions (pure)


@dataclass(frozen=True)
class Decision:
    """One container's fate in a plan: ``act`` (with the step text), ``skip`` or ``block``."""

    kind: Literal["act", "skip", "block"]
    text: str


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def protected(c: Mapping[str, Any], snapshot: Mapping[str, Any], params: _LoopParams) -> str | None:
    """Why no action may touch this container, or None. Order matters: the first rule wins.

    Operator intent first (a person's decision beats everything), then states nobody should
    act on, then the crash loop (which explains a ``restarting`` state better than "Docker
    is on it": Docker will keep restarting it and it will keep crashing), then the race
    with Docker's own restart.
    """
    name = c["name"]
    stop = (snapshot.get("operator_stops") or {}).get(name)
    if stop is not None:
        how = f"docker {stop.get('event') or 'stop'}"
        return (f"{name} was stopped by an operator at {_when(stop.get('at'))} ({how}); paramedic leaves it "
                f"stopped. Start it by hand (docker start {name}) if it should run: that clears the record")
    if c["status"] == "paused":
        return f"{name} is paused (docker pause): someone froze it on purpose; unpause it by hand"
    if c["status"] in _GONE:
        return f"{name} is {c['status']}"
    loop = crash_loop(c, snapshot, params)
    if loop is not None:
        return loop
    if c["restarting"]:
        return (f"Docker's restart policy {policy_text(c)} is already restarting {name} "
                f"(restart {c['restart_count']}); leave it to Docker")
    return None


def crash_loop(c: Mapping[str, Any], snapshot: Mapping[str, Any], params: _LoopParams) -> str | None:
    """The refusal for a crash-looping container, or None.

    Crash-looping: ``restart_count >= crash_loop_restarts`` and either restarting now or
    last started within ``crash_loop_window`` of the snapshot's ``now``. A container that
    restarted often long ago and has been up since is not looping.
    """
    count = int(c["restart_count"])
    if count < params.crash_loop_restarts:
        return None
    started = c.get("started_s")
    now = float(snapshot.get("now") or 0.0)
    recent = started is not None and now - float(started) <= params.crash_loop_window
    if not (c["restarting"] or recent):
        return None
    since = f", last started {format_duration(max(now - float(started), 0.0))} ago" if started is not None else ""
    return (f"{c['name']} is crash-looping ({count} restarts by Docker's restart policy {policy_text(c)}{since}); "
            "restarting will not help: the runbook's next step (e.g. rollback) is what helps")


def policy_text(c: Mapping[str, Any]) -> str:
    """``always`` / ``on-failure:5`` / ``no``, as ``docker run --restart`` spells it."""
    policy = str(c.get("restart_policy") or "no")
    retries = int(c.get("max_retries") or 0)
    return f"{policy}:{retries}" if policy == "on-failure" and retries else policy


def failing(c: Mapping[str, Any]) -> bool:
    """A replica that needs help: not running, or running but reported unhealthy."""
    return not c["running"] or c["health"] == "unhealthy"


def is_single(target: Target) -> bool:
    """``container``/``id`` selections name one container; the rest are groups of replicas."""
    return bool(target.container or target.container_id)


def precheck(action: str, target: Target, snapshot: Mapping[str, Any]) -> Plan | None:
    """The refusals shared by container actions before looking at any container."""
    if not target.is_docker:
        return Plan.refuse(action, target, "no target: name a container or compose service in the step's "
                                           "params, or trigger the runbook from a container check")
    if target.swarm_service:
        return Plan.refuse(action, target, f"{action} acts on containers that exited; Swarm keeps the tasks of "
                                           f"service {target.swarm_service} running itself (it replaces any "
                                           "task that exits): use restart (a force-update) or scale instead")
    if snapshot.get("error"):
        return Plan.refuse(action, target, f"cannot inspect it: {snapshot['error']}")
    if not snapshot.get("containers"):
        return Plan.refuse(action, target, "no container matched")
    return None


def assemble(
    action: str,
    target: Target,
    snapshot: Mapping[str, Any],
    decisions: Sequence[tuple[Mapping[str, Any], Decision]],
    data: Mapping[str, Any],
) -> Plan:
    """Turn per-container decisions into one plan (see the module docstring for groups)."""
    acts = [(c, d) for c, d in decisions if d.kind == "act"]
    blocked = [d.text for _, d in decisions if d.kind == "block"]
    skipped = [(c, d) for c, d in decisions if d.kind == "skip"]
    if not acts:
        if blocked:
            return Plan.refuse(action, target, "; ".join(blocked))
        reasons = "; ".join(f"{c['name']} {d.text}" for c, d in skipped)
        return Plan.nothing(action, target, reasons)
    left = [{"name": c["name"], "reason": d.text} for c, d in decisions if d.kind != "act"]
    names = ", ".join(c["name"] for c, _ in acts)
    summary = f"{action} {names}"
    if left:
        summary += " (left alone: " + "; ".join(f"{x['name']}: {x['reason']}" for x in left) + ")"
    chosen = [{"id": c["id"], "name": c["name"], "running": c["running"]} for c, _ in acts]
    return Plan(action, target.describe(), True, summary, steps=tuple(d.text for _, d in acts),
                data={**data, "docker_host": snapshot.get("docker_host"), "containers": chosen, "left_alone": left})


# --------------------------------------------------------------------------- apply helpers (Docker I/O)


def _is_not_running_conflict(exc: Exception) -> bool:
    from docker.errors import APIError

    return isinstance(exc, APIError) and exc.status_code == 409 and "not running" in str(exc).lower()


async def wait_running(
    context: ActionContext, container: Any, timeout: float
) -> tuple[bool, dict[str, Any]]:
    """Reload ``container`` until Docker says running (not restarting), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.to_thread(container.reload)
        facts = container_facts(container.attrs)
        if facts["running"] and not facts["restarting"]:
            return True, facts
        if time.monotonic() >= deadline:
            return False, facts
        await context.sleep(POLL_INTERVAL)


def report(facts: Mapping[str, Any], ok: bool, elapsed: float) -> dict[str, Any]:
    """One container's line in ``Outcome.data``."""
    started = facts.get("started_s")
    return {
        "id": facts["id"][:12], "name": facts["name"], "running": ok, "status": facts["status"],
        "started_at": datetime.fromtimestamp(started, UTC).isoformat().replace("+00:00", "Z") if started else None,
        "restart_count": facts["restart_count"], "elapsed_s": round(elapsed, 3),
    }


def docker_error_text(exc: BaseException) -> str:
    """A short message for a Docker SDK / requests failure."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip() or type(exc).__name__
    return text[:300]


async def act_on_each(
    context: ActionContext,
    plan: Plan,
    verb: str,
    operate: Callable[[Any, Mapping[str, Any]], None],
    event_window: float,
) -> Outcome:
    """Run ``operate(container, entry)`` (sync, in a thread) for each planned container, then wait.

    A failure on one replica does not stop the others (each is independent); the outcome
    is ok only when every container ended up running.
    """
    import requests
    from docker.errors import DockerException, NotFound

    running_timeout = float(plan.data.get("running_timeout", 30.0))
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    try:  # connecting already talks to the daemon (API version): not on the event loop
        client = await asyncio.to_thread(docker_client, context.resources, plan.data.get("docker_host"))
    except DependencyUnavailableError as exc:
        return Outcome(False, str(exc))
    for entry in plan.data.get("containers", []):
        name = str(entry["name"])
        started = time.monotonic()
        try:
            container = await asyncio.to_thread(client.containers.get, entry["id"])
            context.expect_events(name, event_window)
            await asyncio.to_thread(operate, container, entry)
            ok, facts = await wait_running(context, container, running_timeout)
        except NotFound:
            problems.append(f"{name} is gone (removed or recreated since the plan)")
            continue
        except (DockerException, requests.RequestException, OSError) as exc:
            problems.append(f"{verb} {name} failed: {docker_error_text(exc)}")
            continue
        results.append(report(facts, ok, time.monotonic() - started))
        if not ok:
            problems.append(f"{name} is not running {format_duration(running_timeout)} after the {verb} "
                            f"(state {facts['status']})")
    done = ", ".join(r["name"] for r in results if r["running"])
    if problems:
        prefix = f"{verb}ed {done}; " if done else ""
        return Outcome(False, prefix + "; ".join(problems), {"containers": results})
    return Outcome(True, f"{verb}ed {done}", {"containers": results})


# --------------------------------------------------------------------------- the actions


class Restart(Remediation[RestartParams]):
    """Graceful (``docker restart``) or forced (kill, then start) restart of a container."""

    action: ClassVar[str] = "restart"
    params_model: ClassVar[type[RestartParams]] = RestartParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        if target.swarm_service:
            return await swarm.inspect_service(self.context, target)
        return await inspect_containers(self.context, target)

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        if target.swarm_service:
            return swarm.plan_restart(target, snapshot, mode=self.params.mode, wait=self.params.running_timeout)
        early = precheck(self.action, target, snapshot)
        if early is not None:
            return early
        single = is_single(target)
        decisions = [(c, self._decide(c, snapshot, single)) for c in snapshot["containers"]]
        p = self.params
        return assemble(self.action, target, snapshot, decisions,
                        {"mode": p.mode, "stop_timeout": p.stop_timeout, "running_timeout": p.running_timeout})

    def _decide(self, c: Mapping[str, Any], snapshot: Mapping[str, Any], single: bool) -> Decision:
        reason = protected(c, snapshot, self.params)
        if reason is not None:
            return Decision("block", reason)
        if not single and not failing(c):
            return Decision("skip", "is running and not unhealthy")
        name = c["name"]
        if not c["running"]:
            return Decision("act", f"start {name} (it is {c['status']}, exit code {c['exit_code']})")
        if self.params.mode == "force":
            return Decision("act", f"kill {name} (SIGKILL), then start it")
        grace = format_duration(self.params.stop_timeout)
        return Decision("act", f"restart {name}: SIGTERM, SIGKILL after {grace} if still running, then start")

    async def apply(self, plan: Plan) -> Outcome:
        if plan.data.get("swarm"):
            return await swarm.apply_restart(self.context, plan)
        mode = str(plan.data.get("mode", "graceful"))
        stop_timeout = float(plan.data.get("stop_timeout", 10.0))

        def operate(container: Any, entry: Mapping[str, Any]) -> None:
            if mode == "force":
                try:
                    container.kill()
                except Exception as exc:  # stopped meanwhile: start is all that is left to do
                    if not _is_not_running_conflict(exc):
                        raise
                container.start()
            else:
                container.restart(timeout=math.ceil(stop_timeout))

        return await act_on_each(self.context, plan, "restart", operate, stop_timeout + EVENT_MARGIN)


class Start(Remediation[StartParams]):
    """Start a container that exited on its own (and that nobody stopped on purpose)."""

    action: ClassVar[str] = "start"
    params_model: ClassVar[type[StartParams]] = StartParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        return await inspect_containers(self.context, target)

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        early = precheck(self.action, target, snapshot)
        if early is not None:
            return early
        decisions = [(c, self._decide(c, snapshot)) for c in snapshot["containers"]]
        return assemble(self.action, target, snapshot, decisions, {"running_timeout": self.params.running_timeout})

    def _decide(self, c: Mapping[str, Any], snapshot: Mapping[str, Any]) -> Decision:
        reason = protected(c, snapshot, self.params)
        if reason is not None:
            return Decision("block", reason)
        if c["running"]:
            return Decision("skip", "is already running")
        if c["status"] not in ("exited", "created"):
            return Decision("block", f"{c['name']} is {c['status']}, not exited")
        return Decision("act", f"start {c['name']} (it is {c['status']}, exit code {c['exit_code']})")

    async def apply(self, plan: Plan) -> Outcome:
        def operate(container: Any, entry: Mapping[str, Any]) -> None:
            container.start()

        return await act_on_each(self.context, plan, "start", operate, EVENT_MARGIN)


__all__ = ["Restart", "RestartParams", "Start", "StartParams", "build_snapshot", "container_facts"]
