"""``recreate``: remove a container and create it again from the same image and configuration.

A clean slate for a wedged container: a new writable layer, a new process tree, new
network endpoints, everything else as it was (see :mod:`remediations.clone` for what
"as it was" means field by field, including anonymous volumes, which are kept).

Refusals (the plan says why; nothing is applied):

* no Docker target, a Swarm service, Docker cannot be inspected, or nothing matched;
* a container an operator stopped on purpose (``context.operator_stops()``);
* a paused, dead or being-removed container;
* a container created with ``--rm`` (``AutoRemove``): stopping it deletes it, so there
  would be no old container to go back to if the new one failed.

Groups (a compose service or a label selection): only failing replicas (not running, or
``unhealthy``) are recreated; a single container is recreated whatever its state, since
the triggering check knows better than ``State.Running`` that it is broken.

"The same image" is the same image *id*: the container's own reference (``app:latest``)
while it still names that id, else the id itself, so a tag re-pointed since (a deploy
that has not happened yet) is not deployed by a recreate.

Plans hold the create spec in its public form (environment values masked: plans go to
the journal); ``apply`` rebuilds the real spec from a fresh inspect and refuses ("changed
since the plan was made; plan again") when its public form differs from the plan's.

``apply``, per container, never leaving the service with nothing
(:func:`replace_containers`, shared with ``rollback``):

0. rebuild the spec from a fresh inspect (refuse if the container changed);
1. tell the event listener (``expect_events`` with the old *id*: it is renamed next);
2. rename the old container to ``<name>-paramedic-old-<short id>``, freeing its name;
3. create the new one under the original name and connect its other networks
   (the old one still runs: a create failure costs no downtime);
4. stop the old one gracefully (its stop signal, SIGKILL after ``stop_timeout``);
5. start the new one; it must still be running (not restarting) ``start_grace`` later;
6. remove the old one (``v=False``: its anonymous volumes now belong to the new one).

Any failure in 3-5 rolls back: the new container is removed, the old one gets its name
back and is started again if it was running. ``Outcome.data["replaced"]`` lists
``{name, old_id, new_id}``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from agent.kernel.durations import Duration, format_duration
from agent.kernel.errors import DependencyUnavailableError
from remediations.base import ActionContext, Outcome, Plan, Remediation, Target, TargetParams
from remediations.clone import clone_spec, container_name, public_spec, same_as_planned, same_image, short_id
from remediations.dockerapi import DockerActionError, docker_client, find_containers

#: Seconds added to the expected duration of an action for ``expect_events``: events can
#: reach the listener a little after Docker's grace period ends.
EVENT_MARGIN = 30.0
OLD_SUFFIX = "-paramedic-old-"
_GONE = ("removing", "dead")


class RecreateParams(TargetParams):
    """How gently the old container is stopped, and how long the new one must stay up."""

    stop_timeout: Duration = Field(default=10.0, description="grace after the stop signal before SIGKILL")
    start_grace: Duration = Field(default=1.0, description="the new container must still run this long after start")


# --------------------------------------------------------------------------- snapshot


def docker_error_text(exc: BaseException) -> str:
    """A short message for a Docker SDK / requests failure."""
    text = str(getattr(exc, "explanation", None) or exc).strip() or type(exc).__name__
    return text[:300]


def image_config_of(client: Any, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``Config`` of the image ``attrs`` was created from; None once that image is gone
    (every setting is then sent explicitly)."""
    from docker.errors import NotFound

    try:
        return dict(client.api.inspect_image(attrs.get("Image"))["Config"] or {})
    except NotFound:
        return None


def resolve_refs(client: Any, refs: set[str]) -> dict[str, str | None]:
    """Image reference -> the id it names now (None: no such image here)."""
    from docker.errors import NotFound

    out: dict[str, str | None] = {}
    for ref in sorted(refs - {""}):
        try:
            out[ref] = str(client.api.inspect_image(ref)["Id"])
        except NotFound:
            out[ref] = None
    return out


def read_containers(client: Any, target: Target) -> list[dict[str, Any]]:
    """``[{"attrs": inspect, "image_config": its image's Config or None}]`` (sync; in a thread)."""
    return [{"attrs": dict(c.attrs), "image_config": image_config_of(client, c.attrs)}
            for c in find_containers(client, target)]


async def inspect_replaceable(
    context: ActionContext, target: Target, extra: Callable[[Any, list[dict[str, Any]]], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The snapshot ``recreate`` and ``rollback`` plan from; Docker errors land in ``error``.

    ``containers`` holds raw inspect data (environment values included: plans keep only
    :func:`~remediations.clone.public_spec`, but the snapshot itself must not be stored
    as is); ``image_refs`` maps each container's image reference to the id it names now.
    ``extra(client, containers)`` (sync, same thread) adds action-specific reads.
    """
    base: dict[str, Any] = {"docker_host": target.docker_host, "containers": [], "operator_stops": {}}
    if not target.is_docker or target.swarm_service:
        return base

    def read() -> dict[str, Any]:
        import requests
        from docker.errors import DockerException

        client = docker_client(context.resources, target.docker_host)
        try:
            containers = read_containers(client, target)
            refs = resolve_refs(client, {str((c["attrs"].get("Config") or {}).get("Image") or "") for c in containers})
            more = extra(client, containers) if extra is not None else {}
        except (DockerException, requests.RequestException) as exc:
            raise DockerActionError(docker_error_text(exc)) from None
        return {"containers": containers, "image_refs": refs, **more}

    try:
        found = await asyncio.to_thread(read)
    except (DockerActionError, DependencyUnavailableError) as exc:
        return {**base, "error": str(exc)}
    names = {container_name(c["attrs"]) for c in found["containers"]}
    stops = {k: dict(v) for k, v in context.operator_stops().items() if k in names}
    return {**base, **found, "operator_stops": stops}


# --------------------------------------------------------------------------- plan helpers (pure)


def precheck(action: str, target: Target, snapshot: Mapping[str, Any]) -> Plan | None:
    """Refusals before looking at any container."""
    if not target.is_docker:
        return Plan.refuse(action, target, "no target: name a container or compose service in the step's "
                                           "params, or trigger the runbook from a container check")
    if target.swarm_service:
        return Plan.refuse(action, target, f"{action} acts on containers; Swarm services are not supported")
    if snapshot.get("error"):
        return Plan.refuse(action, target, f"cannot inspect it: {snapshot['error']}")
    if not snapshot.get("containers"):
        return Plan.refuse(action, target, "no container matched")
    return None


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def blocked(attrs: Mapping[str, Any], operator_stops: Mapping[str, Any]) -> str | None:
    """Why this container must not be replaced, or None."""
    name = container_name(attrs)
    stop = operator_stops.get(name)
    if stop is not None:
        return (f"{name} was stopped by an operator at {_when(stop.get('at'))} (docker {stop.get('event') or 'stop'}); "
                f"paramedic leaves it stopped")
    status = str((attrs.get("State") or {}).get("Status") or "")
    if status == "paused":
        return f"{name} is paused (docker pause): someone froze it on purpose"
    if status in _GONE:
        return f"{name} is {status}"
    if (attrs.get("HostConfig") or {}).get("AutoRemove"):
        return (f"{name} was created with --rm: stopping it deletes it, so there would be no old container "
                "to go back to if the new one failed")
    return None


def failing(attrs: Mapping[str, Any]) -> bool:
    """A replica that needs help: not running, or running but reported unhealthy."""
    state = attrs.get("State") or {}
    health = str((state.get("Health") or {}).get("Status") or "none")
    return not state.get("Running") or health == "unhealthy"


def old_name(attrs: Mapping[str, Any]) -> str:
    """What the old container is renamed to while its replacement starts."""
    return f"{container_name(attrs)}{OLD_SUFFIX}{short_id(attrs)}"


def replacement(
    item: Mapping[str, Any], image: str, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One container's entry in a plan's ``data["containers"]``.

    ``clone`` holds the arguments ``apply`` rebuilds the create spec with (from a fresh
    inspect); ``spec`` is that spec's public form (environment values masked).
    """
    attrs = item["attrs"]
    name = container_name(attrs)
    clone: dict[str, Any] = {"image": image, "labels": dict(labels or {})}
    spec = clone_spec(attrs, name=name, image_config=item.get("image_config"), image=image, labels=clone["labels"])
    return {"id": str(attrs.get("Id")), "name": name, "old_name": old_name(attrs),
            "was_running": bool((attrs.get("State") or {}).get("Running")), "clone": clone,
            "spec": public_spec(spec)}


def replacement_steps(entry: Mapping[str, Any], stop_timeout: float, start_grace: float) -> list[str]:
    """The plan's human-readable steps for one replacement."""
    body = entry["spec"]["body"]
    name = entry["name"]
    nets = sorted([*body["NetworkingConfig"]["EndpointsConfig"], *(c["network"] for c in entry["spec"]["connect"])])
    signal = body.get("StopSignal") or "SIGTERM"
    steps = [
        f"rename {name} to {entry['old_name']}",
        f"create {name} from {body['Image']} with the same configuration"
        + (f" (networks: {', '.join(nets)})" if nets else ""),
    ]
    if entry["was_running"]:
        steps.append(f"stop the old container ({signal}, SIGKILL after {format_duration(stop_timeout)})")
    steps += [
        f"start {name}; it must still run {format_duration(start_grace)} later",
        "remove the old container (on any failure: remove the new one, give the old one its name back "
        "and start it again)",
    ]
    return steps


# --------------------------------------------------------------------------- apply helpers (Docker I/O)


def rebuild_spec(client: Any, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The real create spec for a planned replacement, from a fresh inspect (sync).

    Raises ``DockerActionError`` when the container changed since the plan (its public
    spec differs): applying a plan to something else than what was planned is refused.
    """
    attrs = client.api.inspect_container(entry["id"])
    clone = entry["clone"]
    spec = clone_spec(attrs, name=entry["name"], image_config=image_config_of(client, attrs),
                      image=clone["image"], labels=clone["labels"])
    if not same_as_planned(spec, entry["spec"]):
        raise DockerActionError(f"{entry['name']} changed since the plan was made; plan again")
    return spec


def create_container(client: Any, spec: Mapping[str, Any]) -> str:
    """Create a container from :func:`~remediations.clone.clone_spec`'s output; returns its id.

    Connects the extra networks; if that fails the half-made container is removed.
    """
    from docker.errors import DockerException

    created = client.api.create_container_from_config(spec["body"], spec["name"])
    container_id = str(created["Id"])
    try:
        for entry in spec.get("connect") or []:
            kwargs = {k: v for k, v in entry.items() if k != "network"}
            client.api.connect_container_to_network(container_id, entry["network"], **kwargs)
    except DockerException:
        client.api.remove_container(container_id, force=True)
        raise
    return container_id


def _still_running(client: Any, container_id: str) -> tuple[bool, str]:
    state = client.api.inspect_container(container_id).get("State") or {}
    if state.get("Running") and not state.get("Restarting"):
        return True, "running"
    return False, f"{state.get('Status')} (exit code {state.get('ExitCode')})"


class _Replacer:
    """Replaces one container as the module docstring's steps say; undoes them on failure."""

    def __init__(self, context: ActionContext, client: Any, entry: Mapping[str, Any],
                 stop_timeout: float, start_grace: float) -> None:
        self.context, self.client, self.entry = context, client, entry
        self.stop_timeout, self.start_grace = stop_timeout, start_grace
        self.renamed = False
        self.stopped = False
        self.new_id: str | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def run(self) -> Outcome:
        import requests
        from docker.errors import DockerException

        api = self.client.api
        entry = self.entry
        name = entry["name"]
        window = self.stop_timeout + self.start_grace + EVENT_MARGIN
        try:
            spec = await self._call(rebuild_spec, self.client, entry)
        except DockerActionError as exc:
            return Outcome(False, str(exc), {"name": name, "old_id": entry["id"], "restored": True})
        except (DockerException, requests.RequestException, OSError) as exc:
            return Outcome(False, f"cannot inspect {name}: {docker_error_text(exc)}",
                           {"name": name, "old_id": entry["id"], "restored": True})
        step = "rename the old container"
        try:
            self.context.expect_events(entry["id"], window)
            await self._call(api.rename, entry["id"], entry["old_name"])
            self.renamed = True
            step = "create the new container"
            self.new_id = await self._call(create_container, self.client, spec)
            self.context.expect_events(self.new_id, window)
            if entry["was_running"]:
                step = "stop the old container"
                await self._call(api.stop, entry["id"], timeout=math.ceil(self.stop_timeout))
                self.stopped = True
            step = "start the new container"
            await self._call(api.start, self.new_id)
            await self.context.sleep(self.start_grace)
            ok, state = await self._call(_still_running, self.client, self.new_id)
            if not ok:
                return await self._undo(f"the new {name} did not stay running: {state}")
        except (DockerException, requests.RequestException, OSError) as exc:
            return await self._undo(f"{step} failed: {docker_error_text(exc)}")
        data = {"name": name, "old_id": entry["id"], "new_id": self.new_id}
        try:
            await self._call(api.remove_container, entry["id"], v=False)
        except (DockerException, requests.RequestException, OSError) as exc:
            return Outcome(True, f"replaced {name}, but the old container {entry['old_name']} could not be removed: "
                                 f"{docker_error_text(exc)}", {**data, "old_left": entry["old_name"]})
        return Outcome(True, f"replaced {name}", data)

    async def _undo(self, reason: str) -> Outcome:
        """Back to the old container: remove the new one, rename the old one back, start it."""
        import requests
        from docker.errors import DockerException, NotFound

        api = self.client.api
        entry = self.entry
        problems = []
        if self.new_id is not None:
            try:
                await self._call(api.remove_container, self.new_id, force=True, v=True)
            except NotFound:
                pass
            except (DockerException, requests.RequestException, OSError) as exc:
                problems.append(f"remove the new container {self.new_id[:12]}: {docker_error_text(exc)}")
        if self.renamed:
            try:
                await self._call(api.rename, entry["id"], entry["name"])
            except (DockerException, requests.RequestException, OSError) as exc:
                problems.append(f"rename {entry['old_name']} back: {docker_error_text(exc)}")
        if entry["was_running"]:
            try:
                await self._call(api.start, entry["id"])
            except (DockerException, requests.RequestException, OSError) as exc:
                problems.append(f"start the old container again: {docker_error_text(exc)}")
        restored = ("the old container is back" if entry["was_running"] else "the old container is back (stopped)")
        if problems:
            restored = "restoring the old container failed too: " + "; ".join(problems)
        return Outcome(False, f"{entry['name']}: {reason}; {restored}",
                       {"name": entry["name"], "old_id": entry["id"], "restored": not problems})


async def replace_containers(
    context: ActionContext, client: Any, entries: Sequence[Mapping[str, Any]], stop_timeout: float, start_grace: float
) -> Outcome:
    """Replace each planned container in turn; stop at the first failure (it was undone)."""
    done: list[dict[str, Any]] = []
    for entry in entries:
        result = await _Replacer(context, client, entry, stop_timeout, start_grace).run()
        if not result.ok:
            before = f" (already replaced: {', '.join(d['name'] for d in done)})" if done else ""
            return Outcome(False, result.message + before, {"replaced": done, "failed": dict(result.data)})
        done.append(dict(result.data))
    notes = [d for d in done if d.get("old_left")]
    message = "replaced " + ", ".join(d["name"] for d in done)
    if notes:
        message += "; old containers left behind: " + ", ".join(d["old_left"] for d in notes)
    return Outcome(True, message, {"replaced": done})


def client_for(context: ActionContext, plan: Plan) -> Any:
    """The Docker client for the plan's host; raises ``DependencyUnavailableError``."""
    return docker_client(context.resources, plan.data.get("docker_host"))


# --------------------------------------------------------------------------- the action


class Recreate(Remediation[RecreateParams]):
    """Remove and create again from the same image and configuration."""

    action: ClassVar[str] = "recreate"
    params_model: ClassVar[type[RecreateParams]] = RecreateParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        return await inspect_replaceable(self.context, target)

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        early = precheck(self.action, target, snapshot)
        if early is not None:
            return early
        single = bool(target.container or target.container_id)
        stops = snapshot.get("operator_stops") or {}
        chosen: list[dict[str, Any]] = []
        left: list[str] = []
        for item in snapshot["containers"]:
            attrs = item["attrs"]
            reason = blocked(attrs, stops)
            if reason is not None:
                return Plan.refuse(self.action, target, reason)
            if single or failing(attrs):
                chosen.append(replacement(item, same_image(attrs, snapshot.get("image_refs") or {})))
            else:
                left.append(container_name(attrs))
        if not chosen:
            return Plan.nothing(self.action, target, f"no replica is failing ({', '.join(left)} running)")
        p = self.params
        steps = [s for entry in chosen for s in replacement_steps(entry, p.stop_timeout, p.start_grace)]
        summary = "recreate " + ", ".join(e["name"] for e in chosen) + " from the same image and configuration"
        if left:
            summary += f" (healthy, left alone: {', '.join(left)})"
        data = {"docker_host": snapshot.get("docker_host"), "stop_timeout": p.stop_timeout,
                "start_grace": p.start_grace, "containers": chosen}
        return Plan(self.action, target.describe(), True, summary, steps=tuple(steps), data=data)

    async def apply(self, plan: Plan) -> Outcome:
        try:
            client = client_for(self.context, plan)
        except DependencyUnavailableError as exc:
            return Outcome(False, str(exc))
        return await replace_containers(self.context, client, plan.data["containers"],
                                        float(plan.data["stop_timeout"]), float(plan.data["start_grace"]))
