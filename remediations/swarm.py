"""Swarm services: ``restart`` (force-update), ``scale`` (replicas) and ``rollback`` (the
service's own), for a target that names a Swarm service (``service: web`` in a step's
params, i.e. ``Target.swarm_service``).

The ``restart``, ``scale`` and ``rollback`` actions delegate here when their target is a
Swarm service, so a runbook written for a compose service moves to Swarm by changing its
target. This module has no action class of its own; it offers, per action, a pure planner
and an applier over one shared snapshot:

* :func:`inspect_service` — read only: the service (``docker service inspect``: ``Spec``,
  ``PreviousSpec``, ``UpdateStatus``, ``Version``) and its tasks, found by exact name;
* :func:`plan_restart` / :func:`plan_scale` / :func:`plan_rollback` — pure;
* :func:`apply_restart` / :func:`apply_scale` / :func:`apply_rollback` — each sends one
  service update, then waits (bounded) until Swarm runs the tasks the plan expects.

Plans refuse (the reason is what a person reads) when the service does not exist, when
the engine is not a Swarm manager, for jobs (``replicated-job``/``global-job``: their tasks
run to completion), and while an update or a rollback is in progress or paused
(``UpdateStatus.State``: ``updating``, ``paused``, ``rollback_started``,
``rollback_paused``): an update now would interrupt Swarm's own rolling update, or push on
a deploy Swarm paused because its tasks failed. A ``paused`` deploy is exactly what
``rollback`` is for, so only rollback accepts it.

What the Engine API and the docker SDK (docker-py 7) really do, measured on Docker
20.10 (API 1.41), which explains the code:

* Every service update is ``POST /services/{id}/update?version=N`` with a *whole* spec;
  ``version`` (``Version.Index``) makes it compare-and-set. Swarm keeps exactly **one**
  ``PreviousSpec``: any update (a scale, a force-update) replaces it with the spec before
  that update, and resets ``UpdateStatus``.
* docker-py's ``Service.force_update()`` and ``Service.scale()`` send the spec read with
  ``insert_defaults=true``: they write the engine's defaults (``RestartPolicy``,
  ``StopGracePeriod``, ``UpdateConfig``...) into the stored spec, and because the task
  template then differs, ``Service.scale(2)`` *replaced the running task* of a service
  created without those fields. So updates here send the service's own spec, changed in
  the one field the action changes, through ``APIClient.update_service`` (every part of
  the spec passed explicitly, ``fetch_current_spec`` off): what the ``docker service``
  CLI does. A scale then starts or stops tasks and touches no other task.
* ``docker service rollback`` is the same update with the query ``rollback=previous``:
  the manager swaps ``Spec`` and ``PreviousSpec`` itself and **ignores the spec sent**
  (a label added to the body did not appear), then reports ``UpdateStatus.State``
  ``rollback_started`` -> ``rollback_completed`` (``rollback_paused`` on failures), using
  the service's ``RollbackConfig``. A second rollback swaps again, i.e. re-deploys what
  was rolled back: hence "a rollback is never rolled back". docker-py has no parameter
  for that query, so :func:`send_rollback` posts it with the client's own request helpers.
* Task containers are started from local images: the node tries to pull a tag first, and
  with no registry reachable that fails fast (logged by dockerd) and the local image runs.

Consequences the plans spell out: a restart or a scale after a deploy replaces the
``PreviousSpec`` a later rollback would return to (the plan says so in a step); a rollback
whose ``PreviousSpec`` differs from the current spec only by ``ForceUpdate`` (a restart
happened since the deploy) or only by the replica count (a scale) refuses, since it would
restore nothing a person deployed. "Already rolled back" is read from ``UpdateStatus``
(``rollback_*``, which stays until the next update): paramedic cannot mark the rolled-back
spec with a label, because the manager ignores the spec sent with a rollback, and a second
update to add one would replace ``PreviousSpec`` and ``UpdateStatus`` again.

Stops of task containers are announced to the event listener (``expect_events`` with
each current task's container id) so the Swarm-driven stops are not taken for an
operator's.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from agent.kernel.durations import format_duration
from agent.kernel.errors import DependencyUnavailableError
from remediations.base import ActionContext, Outcome, Plan, Target
from remediations.dockerapi import docker_client

UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_PAUSED = "rollback_paused"
ROLLBACK_COMPLETED = "rollback_completed"
#: ``UpdateStatus.State`` values that say the current spec was put there by a rollback.
ROLLED_BACK = (ROLLBACK_STARTED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED)
#: Label of a task container naming its service (set by Swarm).
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
#: Swarm's own default stop grace for a task (``ContainerSpec.StopGracePeriod`` unset).
DEFAULT_STOP_GRACE = 10.0
#: Seconds allowed per batch of a rolling update for a task to be scheduled and started.
START_ALLOWANCE = 10.0
#: Lower bound of every apply's wait (a restart's ``running_timeout`` may raise it).
DEFAULT_WAIT = 30.0
#: Seconds added to the wait for ``expect_events``.
EVENT_MARGIN = 30.0
#: How often apply re-reads the service and its tasks while waiting.
POLL_INTERVAL = 0.25
_NS = 1e9
_MODES = {"Replicated": "replicated", "Global": "global", "ReplicatedJob": "replicated-job",
          "GlobalJob": "global-job"}
_FORCE_UPDATE = "TaskTemplate.ForceUpdate"
_REPLICAS = "Mode.Replicated.Replicas"
_IMAGE = "TaskTemplate.ContainerSpec.Image"


class ScaleBounds(Protocol):
    """What :func:`plan_scale` reads from ``scale``'s params (``ScaleParams`` has it all)."""

    @property
    def replicas(self) -> int | None: ...
    @property
    def step(self) -> int | None: ...
    @property
    def min(self) -> int: ...
    @property
    def max(self) -> int: ...


class RollbackOptions(Protocol):
    """What :func:`plan_rollback` reads from ``rollback``'s params (to refuse what Swarm lacks)."""

    @property
    def previous_tag(self) -> str | None: ...
    @property
    def retag(self) -> bool: ...


class StalePlanError(Exception):
    """The service changed between plan and apply; the message says how."""


# --------------------------------------------------------------------------- snapshot (pure shaping)


def task_facts(task: Mapping[str, Any]) -> dict[str, Any]:
    """What plans and waits need from one task of ``GET /tasks``, JSON-safe."""
    status: Mapping[str, Any] = task.get("Status") or {}
    container: Mapping[str, Any] = status.get("ContainerStatus") or {}
    spec: Mapping[str, Any] = (task.get("Spec") or {}).get("ContainerSpec") or {}
    return {
        "id": str(task.get("ID") or ""),
        "slot": task.get("Slot"),
        "node": task.get("NodeID"),
        "desired": str(task.get("DesiredState") or ""),
        "state": str(status.get("State") or ""),
        "error": status.get("Err"),
        "container_id": container.get("ContainerID"),
        "image": spec.get("Image"),
        "updated_at": task.get("UpdatedAt"),
    }


def build_snapshot(
    name: str | None,
    attrs: Mapping[str, Any] | None,
    tasks: Sequence[Mapping[str, Any]],
    docker_host: str | None,
) -> dict[str, Any]:
    """The snapshot :func:`inspect_service` returns, from raw API data (tests feed recorded JSON).

    ``service`` is None when no service has that name.
    """
    service = None
    if attrs is not None:
        keep = ("ID", "Version", "CreatedAt", "UpdatedAt", "Spec", "PreviousSpec", "UpdateStatus")
        service = {k: copy.deepcopy(attrs[k]) for k in keep if k in attrs}
    return {"docker_host": docker_host, "name": name, "service": service,
            "tasks": [task_facts(t) for t in tasks]}


def read_service(client: Any, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The service named exactly ``name`` (the API's name filter is a prefix match) and its tasks."""
    found = client.api.services(filters={"name": name})
    attrs = next((s for s in found if (s.get("Spec") or {}).get("Name") == name), None)
    if attrs is None:
        return None, []
    return dict(attrs), list(client.api.tasks(filters={"service": attrs["ID"]}))


async def inspect_service(context: ActionContext, target: Target) -> dict[str, Any]:
    """Read the service and its tasks; a Docker failure becomes ``{"error": ...}`` for the plan.

    A node that is not a Swarm manager answers 503 ("This node is not a swarm manager"):
    that, too, becomes the plan's refusal, readable in audit mode.
    """
    import requests
    from docker.errors import DockerException

    name = target.swarm_service

    def read() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        client = docker_client(context.resources, target.docker_host)
        return read_service(client, str(name))

    if not name:
        return build_snapshot(None, None, [], target.docker_host)
    try:
        attrs, tasks = await asyncio.to_thread(read)
    except DependencyUnavailableError as exc:
        return {"error": str(exc), "docker_host": target.docker_host, "name": name}
    except (DockerException, requests.RequestException, OSError) as exc:
        return {"error": f"Docker error while reading swarm service {name}: {error_text(exc)}",
                "docker_host": target.docker_host, "name": name}
    return build_snapshot(name, attrs, tasks, target.docker_host)


# --------------------------------------------------------------------------- spec reading (pure)


def mode_of(spec: Mapping[str, Any]) -> str:
    """``replicated`` / ``global`` / ``replicated-job`` / ``global-job``."""
    for key, mode in _MODES.items():
        if key in (spec.get("Mode") or {}):
            return mode
    return "replicated"


def replicas_of(spec: Mapping[str, Any]) -> int | None:
    """The declared replica count of a replicated service, else None."""
    replicated = (spec.get("Mode") or {}).get("Replicated")
    return int(replicated.get("Replicas") or 0) if isinstance(replicated, Mapping) else None


def image_of(spec: Mapping[str, Any]) -> str:
    """``TaskTemplate.ContainerSpec.Image``, shown without a pinned digest when it has a tag."""
    image = str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image") or "")
    name, _, digest = image.partition("@")
    tail = name.rsplit("/", 1)[-1]
    return name if digest and ":" in tail else image


def force_update_of(spec: Mapping[str, Any]) -> int:
    """``TaskTemplate.ForceUpdate`` (the counter ``docker service update --force`` raises)."""
    return int((spec.get("TaskTemplate") or {}).get("ForceUpdate") or 0)


def stop_grace_of(spec: Mapping[str, Any]) -> float:
    """Seconds a task gets after its stop signal (``StopGracePeriod``, default 10 s)."""
    grace = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("StopGracePeriod")
    return float(grace) / _NS if grace else DEFAULT_STOP_GRACE


def update_state(service: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(UpdateStatus.State or None, its message)``."""
    status: Mapping[str, Any] = service.get("UpdateStatus") or {}
    state = status.get("State")
    return (str(state) if state else None), str(status.get("Message") or "")


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two specs (lists compare whole), sorted."""
    paths: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            paths += spec_changes(a, b, path + ".")
        elif a != b and not (a in (None, {}, [], "") and b in (None, {}, [], "")):
            paths.append(path)
    return paths


def task_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Paths of the task template that differ, ``ForceUpdate`` aside: what makes Swarm replace tasks."""
    return [p for p in spec_changes(old, new) if p.startswith("TaskTemplate.") and p != _FORCE_UPDATE]


def fingerprint(*specs: Any) -> str:
    """A digest of specs, to tell at apply time whether the service changed since the plan."""
    text = json.dumps(specs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def active_tasks(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tasks Swarm wants running (``DesiredState == running``): one per replica slot / node."""
    return [dict(t) for t in snapshot.get("tasks") or () if t.get("desired") == "running"]


def last_error(tasks: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest task error Swarm reports (``No such image``, ``task: non-zero exit``...)."""
    failed = sorted((t for t in tasks if t.get("error")), key=lambda t: str(t.get("updated_at") or ""))
    return str(failed[-1]["error"]) if failed else None


def rollout_text(config: Mapping[str, Any] | None) -> str:
    """How Swarm rolls tasks per an ``UpdateConfig``/``RollbackConfig`` (absent: Swarm's defaults)."""
    cfg: Mapping[str, Any] = config or {}
    parallelism = int(cfg.get("Parallelism", 1))
    batch = "all at once" if parallelism == 0 else f"{parallelism} at a time"
    delay = float(cfg.get("Delay") or 0) / _NS
    pause = f", {format_duration(delay)} apart" if delay else ""
    return f"{batch}{pause}, {cfg.get('Order') or 'stop-first'}"


def rolling_wait(spec: Mapping[str, Any], config: Mapping[str, Any] | None, count: int, given: float) -> float:
    """How long apply waits for a rolling replacement of ``count`` tasks: at least ``given``,
    else the batches the update config makes times (stop grace + delay + a start allowance)."""
    cfg: Mapping[str, Any] = config or {}
    parallelism = int(cfg.get("Parallelism", 1))
    batches = 1 if parallelism == 0 else math.ceil(max(count, 1) / parallelism)
    per_batch = stop_grace_of(spec) + float(cfg.get("Delay") or 0) / _NS + START_ALLOWANCE
    return max(given, batches * per_batch)


def describe_changes(paths: Sequence[str], old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``image a -> b, replicas 3 -> 2; restores Env, RestartPolicy`` for the paths that differ."""
    named = []
    if _IMAGE in paths:
        named.append(f"image {image_of(old)} -> {image_of(new)}")
    if _REPLICAS in paths:
        named.append(f"replicas {replicas_of(old)} -> {replicas_of(new)}")
    others = [p.removeprefix("TaskTemplate.").removeprefix("ContainerSpec.") for p in paths
              if p not in (_IMAGE, _REPLICAS)]
    restores = f"restores {', '.join(others)}" if others else ""
    return "; ".join(x for x in (", ".join(named), restores) if x)


def _keeps_one_previous(service: Mapping[str, Any]) -> str | None:
    """The step that warns a restart/scale will make Swarm forget the spec before the last deploy."""
    previous = service.get("PreviousSpec")
    spec = service.get("Spec") or {}
    if not isinstance(previous, Mapping) or not task_changes(previous, spec):
        return None
    return (f"note: Swarm keeps one previous spec; this update replaces it, so a later rollback of "
            f"{spec.get('Name')} returns to this spec ({image_of(spec)}), no longer to the one before its "
            f"last deploy ({image_of(previous)})")


# --------------------------------------------------------------------------- plans (pure)


def precheck(action: str, target: Target, snapshot: Mapping[str, Any]) -> Plan | None:
    """Refusals shared by the three actions before looking at the service's state."""
    if not target.swarm_service:
        return Plan.refuse(action, target, "not a Swarm service target (set service: in the step's params)")
    if snapshot.get("error"):
        return Plan.refuse(action, target, f"cannot inspect it: {snapshot['error']}")
    service = snapshot.get("service")
    if not service:
        return Plan.refuse(action, target, f"no Swarm service named {target.swarm_service}")
    mode = mode_of(service.get("Spec") or {})
    if mode.endswith("-job"):
        return Plan.refuse(action, target, f"{target.swarm_service} is a {mode}: its tasks run to completion; "
                                           f"{action} acts on services that keep running")
    return None


def _busy(action: str, target: Target, service: Mapping[str, Any]) -> Plan | None:
    """Refusals of restart and scale while Swarm's own update is unfinished."""
    state, message = update_state(service)
    said = f" ({message})" if message else ""
    name = target.swarm_service
    if state in (UPDATING, ROLLBACK_STARTED):
        what = "an update" if state == UPDATING else "a rollback"
        return Plan.refuse(action, target, f"{what} of {name} is in progress{said}: another update now would "
                                           "interrupt it; leave it to Swarm")
    if state == PAUSED:
        return Plan.refuse(action, target, f"Swarm paused the last update of {name} because its tasks failed"
                                           f"{said}: a {action} would push that deploy on; roll back or let a "
                                           "person decide")
    if state == ROLLBACK_PAUSED:
        return Plan.refuse(action, target, f"Swarm's rollback of {name} is paused{said}: a person must decide")
    return None


def _base_data(op: str, snapshot: Mapping[str, Any], service: Mapping[str, Any]) -> dict[str, Any]:
    spec = service.get("Spec") or {}
    return {"swarm": True, "op": op, "docker_host": snapshot.get("docker_host"), "service_id": service.get("ID"),
            "service": spec.get("Name"), "version": (service.get("Version") or {}).get("Index"),
            "fingerprint": fingerprint(spec, service.get("PreviousSpec"))}


def plan_restart(
    target: Target, snapshot: Mapping[str, Any], mode: str = "graceful", wait: float = DEFAULT_WAIT,
    action: str = "restart",
) -> Plan:
    """A rolling restart of every task by ``docker service update --force`` (``ForceUpdate + 1``).

    ``mode`` graceful and force are the same here: a Swarm service has no kill-then-start,
    and the plan says so. ``wait`` bounds apply's wait (raised to what the service's update
    config needs for its batches).
    """
    early = precheck(action, target, snapshot)
    if early is not None:
        return early
    service: Mapping[str, Any] = snapshot["service"]
    busy = _busy(action, target, service)
    if busy is not None:
        return busy
    spec: Mapping[str, Any] = service.get("Spec") or {}
    name = str(spec.get("Name"))
    active = active_tasks(snapshot)
    replicas = replicas_of(spec)
    if replicas == 0:
        return Plan.nothing(action, target, f"{name} is scaled to 0 replicas: there is no task to restart")
    if not active:
        return Plan.nothing(action, target, f"{name} has no task (no node matches its placement?)")
    expected = replicas if replicas is not None else len(active)
    running = sum(1 for t in active if t["state"] == "running")
    error = last_error(snapshot.get("tasks") or ())
    grace = format_duration(stop_grace_of(spec))
    update_config = spec.get("UpdateConfig")
    timeout = rolling_wait(spec, update_config, expected, wait)
    count = f"{expected} task{'s' if expected != 1 else ''}"
    steps = [f"force-update {name} (ForceUpdate {force_update_of(spec)} -> {force_update_of(spec) + 1}): Swarm "
             f"replaces its {count} ({rollout_text(update_config)}); each old task gets its stop signal and "
             f"{grace} before SIGKILL"]
    if mode == "force":
        steps.append("mode force: a Swarm service has no kill-then-start; this is the same force-update as "
                     "graceful mode")
    steps.append(f"wait up to {format_duration(timeout)} until {count} newer than now run")
    note = _keeps_one_previous(service)
    if note:
        steps.append(note)
    summary = f"force-update swarm service {name}: Swarm replaces its {count} ({running} running now"
    summary += f"; last task error: {error})" if error and running < expected else ")"
    data = {**_base_data("restart", snapshot, service), "mode": mode, "expected": expected, "wait": timeout,
            "replace": [t["id"] for t in active],
            "containers": [t["container_id"] for t in active if t.get("container_id")]}
    return Plan(action, target.describe(), True, summary, steps=tuple(steps), data=data)


def plan_scale(target: Target, snapshot: Mapping[str, Any], bounds: ScaleBounds, wait: float = DEFAULT_WAIT,
               action: str = "scale") -> Plan:
    """Set a replicated service's ``Replicas``: ``bounds.replicas``, or the declared count plus
    ``bounds.step``, clamped to ``[bounds.min, bounds.max]`` (the plan says when it clamps)."""
    early = precheck(action, target, snapshot)
    if early is not None:
        return early
    service: Mapping[str, Any] = snapshot["service"]
    spec: Mapping[str, Any] = service.get("Spec") or {}
    name = str(spec.get("Name"))
    current = replicas_of(spec)
    if current is None:
        return Plan.refuse(action, target, f"{name} is a global service: Swarm runs one task per node, there "
                                           "is no replica count to scale")
    busy = _busy(action, target, service)
    if busy is not None:
        return busy
    wanted = bounds.replicas if bounds.replicas is not None else current + (bounds.step or 0)
    desired = min(max(wanted, bounds.min), bounds.max)
    clamp = f"; {wanted} clamped to {desired} (min {bounds.min}, max {bounds.max})" if desired != wanted else ""
    active = active_tasks(snapshot)
    running = sum(1 for t in active if t["state"] == "running")
    if desired == current:
        return Plan.nothing(action, target, f"{name} has {current} replica(s) already ({running} running){clamp}")
    grace = format_duration(stop_grace_of(spec))
    if desired > current:
        first = f"set {name}'s replicas from {current} to {desired}: Swarm starts {desired - current} task(s) " \
                f"from the same spec ({image_of(spec)}); the running ones are not touched"
    else:
        first = f"set {name}'s replicas from {current} to {desired}: Swarm stops {current - desired} task(s) of " \
                f"its choosing (not-running ones first), each with its stop signal and {grace} before SIGKILL"
    timeout = max(wait, stop_grace_of(spec) + START_ALLOWANCE)
    steps = [first, f"wait up to {format_duration(timeout)} until {desired} task(s) run"]
    note = _keeps_one_previous(service)
    if note:
        steps.append(note)
    summary = f"scale swarm service {name} from {current} to {desired} replicas ({running} running now){clamp}"
    data = {**_base_data("scale", snapshot, service), "from": current, "replicas": desired, "expected": desired,
            "wait": timeout, "replace": [],
            "containers": [t["container_id"] for t in active if t.get("container_id")] if desired < current else []}
    return Plan(action, target.describe(), True, summary, steps=tuple(steps), data=data)


def plan_rollback(target: Target, snapshot: Mapping[str, Any], options: RollbackOptions | None = None,
                  wait: float = DEFAULT_WAIT, action: str = "rollback") -> Plan:
    """Swarm's own rollback to ``PreviousSpec`` (``docker service rollback``), or the refusal."""
    if options is not None and (options.previous_tag is not None or options.retag):
        return Plan.refuse(action, target, "previous_tag and retag apply to containers; a Swarm service rolls "
                                           "back to its own previous spec (drop them from the step)")
    early = precheck(action, target, snapshot)
    if early is not None:
        return early
    service: Mapping[str, Any] = snapshot["service"]
    spec: Mapping[str, Any] = service.get("Spec") or {}
    name = str(spec.get("Name"))
    state, message = update_state(service)
    said = f" ({message})" if message else ""
    if state in ROLLED_BACK:
        return Plan.refuse(action, target, f"already rolled back: Swarm reports {state}{said} for {name}; a "
                                           "rollback is never rolled back (it would re-deploy what was rolled "
                                           "back): a person must decide")
    if state == UPDATING:
        return Plan.refuse(action, target, f"an update of {name} is in progress{said}: let it finish (its "
                                           "failure_action decides what Swarm does when tasks fail)")
    previous = service.get("PreviousSpec")
    if not isinstance(previous, Mapping) or not previous:
        return Plan.refuse(action, target, f"Swarm has no previous spec for {name} (not updated since it was "
                                           "created): nothing to roll back to")
    changes = [p for p in spec_changes(spec, previous) if p != _FORCE_UPDATE]
    if not changes:
        return Plan.refuse(action, target, (
            f"{name}'s previous spec is its current one but for a forced restart (ForceUpdate "
            f"{force_update_of(spec)} -> {force_update_of(previous)}): a restart replaced the spec of the last "
            "deploy, and Swarm keeps only one: a person must decide"))
    if changes == [_REPLICAS]:
        return Plan.refuse(action, target, (
            f"{name}'s previous spec differs only in the replica count ({replicas_of(spec)} -> "
            f"{replicas_of(previous)}): rolling back would only undo a scale; a person must decide"))
    active = active_tasks(snapshot)
    replicas = replicas_of(previous)
    expected = replicas if replicas is not None else len(active)
    replaced = bool(task_changes(spec, previous))
    rollback_config = spec.get("RollbackConfig")
    timeout = rolling_wait(previous, rollback_config, expected, wait)
    what = describe_changes(changes, spec, previous)
    steps = [f"ask Swarm to roll {name} back to its previous spec (POST /services/{{id}}/update?rollback=previous, "
             f"as docker service rollback does): {what}"]
    if replaced:
        steps.append(f"Swarm replaces its {expected} task(s) per its rollback config "
                     f"({rollout_text(rollback_config)}), each old task with its stop signal and "
                     f"{format_duration(stop_grace_of(spec))} before SIGKILL")
    steps.append(f"wait up to {format_duration(timeout)} until {expected} task(s) of the previous spec run; "
                 "Swarm then reports rollback_completed, and a later rollback plan refuses")
    paused = f" (Swarm paused its last update: {message or 'tasks failed'})" if state == PAUSED else ""
    summary = f"roll back swarm service {name} to its previous spec: {what}{paused}"
    data = {**_base_data("rollback", snapshot, service), "image": image_of(previous), "from_image": image_of(spec),
            "changes": changes, "expected": expected, "wait": timeout,
            "replace": [t["id"] for t in active] if replaced else [],
            "containers": [t["container_id"] for t in active if t.get("container_id")] if replaced else []}
    return Plan(action, target.describe(), True, summary, steps=tuple(steps), data=data)


# --------------------------------------------------------------------------- apply (Docker I/O)


def error_text(exc: BaseException) -> str:
    """A short message for a Docker SDK / requests failure."""
    text = str(getattr(exc, "explanation", None) or exc).strip() or type(exc).__name__
    return text[:300]


def send_update(client: Any, attrs: Mapping[str, Any], spec: Mapping[str, Any]) -> Any:
    """``POST /services/{id}/update`` with exactly ``spec`` (no engine defaults written in)."""
    return client.api.update_service(
        attrs["ID"], attrs["Version"]["Index"], name=spec.get("Name"), labels=spec.get("Labels"),
        mode=spec.get("Mode"), task_template=spec.get("TaskTemplate"), update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"), endpoint_spec=spec.get("EndpointSpec"),
        fetch_current_spec=False,
    )


def send_rollback(client: Any, attrs: Mapping[str, Any]) -> Any:
    """``docker service rollback``: the update endpoint with ``rollback=previous``.

    docker-py's ``update_service`` has no parameter for it, so this uses the client's own
    request helpers. The body must be a valid spec (the CLI sends the current one); the
    manager ignores it and installs ``PreviousSpec``.
    """
    api = client.api
    response = api._post_json(api._url("/services/{0}/update", attrs["ID"]), data=attrs["Spec"],
                              params={"version": attrs["Version"]["Index"], "rollback": "previous"})
    return api._result(response, json=True)


def read_fresh(client: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """The service as it is now; :class:`StalePlanError` when its specs differ from the plan's."""
    attrs: dict[str, Any] = client.api.inspect_service(data["service_id"])
    if fingerprint(attrs.get("Spec"), attrs.get("PreviousSpec")) != data.get("fingerprint"):
        raise StalePlanError(f"swarm service {data.get('service')} changed since the plan was made (someone "
                             "updated it); plan again")
    return attrs


def progress(op: str, attrs: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]],
             data: Mapping[str, Any]) -> tuple[str, str]:
    """Pure: ``("done" | "failed" | "waiting", words)`` for a service after apply's update.

    Done: as many tasks as expected are wanted running and run, none of them one the plan
    set out to replace. Failed: Swarm paused or rolled back our update, or (for a
    rollback) paused it, or someone else started another update.
    """
    state, message = update_state(attrs)
    said = f": {message}" if message else ""
    if op == "rollback":
        if state == ROLLBACK_PAUSED:
            return "failed", f"Swarm paused the rollback{said}"
        if state in (UPDATING, PAUSED):
            return "failed", f"another update started during the rollback ({state}{said})"
    elif state == PAUSED:
        return "failed", f"Swarm paused the update{said}"
    elif state in ROLLED_BACK:
        return "failed", f"Swarm rolled the update back ({state}{said})"
    facts = [task_facts(t) for t in tasks]
    active = [t for t in facts if t["desired"] == "running"]
    old = set(data.get("replace") or ())
    running = [t for t in active if t["state"] == "running" and t["id"] not in old]
    expected = int(data["expected"])
    if len(active) == expected and len(running) == expected:
        return "done", f"{expected} task{'s' if expected != 1 else ''} running"
    error = last_error([t for t in facts if t["id"] not in old])
    tail = f"; last task error: {error}" if error else ""
    fresh = "new " if old else ""
    return "waiting", f"{len(running)} of {expected} {fresh}task(s) running ({len(active)} wanted){tail}"


async def _apply(context: ActionContext, plan: Plan, change: Callable[[Any], Any], verb: str) -> Outcome:
    """Announce the stops, send the update (``change``, in a thread), wait for the tasks."""
    import requests
    from docker.errors import DockerException, NotFound

    data = plan.data
    name = data.get("service")
    wait = float(data.get("wait", DEFAULT_WAIT))
    try:
        client = await asyncio.to_thread(docker_client, context.resources, data.get("docker_host"))
    except DependencyUnavailableError as exc:
        return Outcome(False, str(exc))
    for container_id in data.get("containers") or ():
        context.expect_events(str(container_id)[:12], wait + EVENT_MARGIN)
    try:
        response = await asyncio.to_thread(change, client)
    except StalePlanError as exc:
        return Outcome(False, str(exc))
    except NotFound:
        return Outcome(False, f"swarm service {name} is gone (removed since the plan)")
    except (DockerException, requests.RequestException, OSError) as exc:
        return Outcome(False, f"{verb} of swarm service {name} failed: {error_text(exc)}")
    warnings = [str(w) for w in (response or {}).get("Warnings") or ()] if isinstance(response, Mapping) else []
    return await _wait(context, client, plan, verb, warnings)


async def _wait(context: ActionContext, client: Any, plan: Plan, verb: str, warnings: list[str]) -> Outcome:
    import requests
    from docker.errors import DockerException

    data = plan.data
    name = data.get("service")
    wait = float(data.get("wait", DEFAULT_WAIT))
    started = time.monotonic()
    while True:
        try:
            attrs = await asyncio.to_thread(client.api.inspect_service, data["service_id"])
            tasks = await asyncio.to_thread(client.api.tasks, filters={"service": data["service_id"]})
        except (DockerException, requests.RequestException, OSError) as exc:
            return Outcome(False, f"{verb} of swarm service {name} sent, but reading it back failed: "
                                  f"{error_text(exc)}", {"warnings": warnings})
        verdict, words = progress(str(data["op"]), attrs, tasks, data)
        elapsed = time.monotonic() - started
        info = {"service": name, "version": (attrs.get("Version") or {}).get("Index"),
                "update_state": update_state(attrs)[0], "image": image_of(attrs.get("Spec") or {}),
                "tasks": [task_facts(t) for t in tasks if t.get("DesiredState") == "running"],
                "elapsed_s": round(elapsed, 3), "warnings": warnings}
        if verdict == "done":
            return Outcome(True, f"{verb} of swarm service {name} done: {words}", info)
        if verdict == "failed":
            return Outcome(False, f"{verb} of swarm service {name} failed: {words}", info)
        if elapsed >= wait:
            return Outcome(False, f"{verb} of swarm service {name} not done after {format_duration(wait)}: "
                                  f"{words}", info)
        await context.sleep(POLL_INTERVAL)


async def apply_restart(context: ActionContext, plan: Plan) -> Outcome:
    """Raise ``ForceUpdate`` by one in the service's own spec, then wait for the new tasks."""

    def change(client: Any) -> Any:
        attrs = read_fresh(client, plan.data)
        spec = copy.deepcopy(attrs["Spec"])
        template = spec.setdefault("TaskTemplate", {})
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        return send_update(client, attrs, spec)

    return await _apply(context, plan, change, "force-update")


async def apply_scale(context: ActionContext, plan: Plan) -> Outcome:
    """Set ``Mode.Replicated.Replicas`` in the service's own spec, then wait for the count."""

    def change(client: Any) -> Any:
        attrs = read_fresh(client, plan.data)
        spec = copy.deepcopy(attrs["Spec"])
        spec.setdefault("Mode", {}).setdefault("Replicated", {})["Replicas"] = int(plan.data["replicas"])
        return send_update(client, attrs, spec)

    return await _apply(context, plan, change, "scale")


async def apply_rollback(context: ActionContext, plan: Plan) -> Outcome:
    """Swarm's own rollback to ``PreviousSpec``, then wait for the previous spec's tasks."""

    def change(client: Any) -> Any:
        return send_rollback(client, read_fresh(client, plan.data))

    outcome = await _apply(context, plan, change, "rollback")
    extra = {"image": plan.data.get("image"), "from_image": plan.data.get("from_image")}
    return Outcome(outcome.ok, outcome.message, {**outcome.data, **extra})


__all__ = [
    "SERVICE_NAME_LABEL", "RollbackOptions", "ScaleBounds", "StalePlanError", "apply_restart", "apply_rollback",
    "apply_scale", "build_snapshot", "inspect_service", "plan_restart", "plan_rollback", "plan_scale", "progress",
    "spec_changes", "task_facts",
]
