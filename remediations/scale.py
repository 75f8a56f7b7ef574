"""``scale``: set the number of containers of a docker-compose service, up or down.

Params: ``replicas`` (an absolute number) or ``step`` (``+1``/``-2``: relative to the
containers the service has now), exactly one of them, bounded by ``min`` (default 1: a
runbook never scales a service away by accident; set ``min: 0`` to allow it) and ``max``
(default 10: a loop of "scale up by one" cannot eat the host). A target outside the
bounds is clamped and the plan says so; when the clamped number is what runs already,
there is nothing to do.

The target is a compose service: ``compose: {project, service}`` in the params or the
triggering check, or a single container that belongs to one (its
``com.docker.compose.*`` labels). The service's containers are those labelled with its
project and service that are not one-off (``docker-compose run``) containers, whatever
their state, as ``docker-compose ps`` counts them.

Up: each new container is a copy (:func:`remediations.clone.clone_spec`, ``replica=True``)
of the highest-numbered running, not unhealthy container: same image (the same image
*id*: by the same tag while that tag still points to it), command, environment, labels
(with the next ``com.docker.compose.container-number``), networks and aliases (compose's
service-name alias included, so the service's DNS name covers the new replica), mounts
(named volumes and binds shared, anonymous volumes fresh), restart policy, healthcheck
and limits; it is named the way the existing containers are: ``<project>_<service>_<n>``
(docker-compose v1, Debian's 1.29) or ``<project>-<service>-<n>`` (compose v2). Because it
carries compose's labels, ``docker-compose ps`` lists it as part of the service.

Refusals: no compose service; nothing to copy (no container, or none running and
healthy); a **fixed published host port** (``127.0.0.1:8080:80``) or a static IP on the
template: a copy could not start, so the plan refuses and names the port rather than
leaving a half-created container (ephemeral ports, ``127.0.0.1::80``, are fine); names
that follow no compose scheme (``container_name:``, which compose cannot scale either).

Down: the highest-numbered containers are removed first, gracefully: ``expect_events``,
stop (its stop signal, SIGKILL after ``stop_timeout``), then remove. Their anonymous
volumes are kept, as compose keeps them (``docker volume prune`` reclaims them).

``apply`` up is all or nothing: every new container must be running ``start_grace``
after its start, otherwise every container this apply created is removed again.

A later ``docker-compose up`` without ``--scale`` returns the service to its file's scale.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import Field, model_validator

from agent.kernel.durations import format_duration
from agent.kernel.errors import DependencyUnavailableError
from remediations import swarm
from remediations.base import Outcome, Plan, Remediation, Target
from remediations.clone import (
    COMPOSE_NUMBER,
    clone_spec,
    compose_name,
    compose_number,
    container_name,
    labels_of,
    naming_style,
    public_spec,
    replica_conflicts,
    same_as_planned,
    same_image,
)
from remediations.dockerapi import (
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    DockerActionError,
    docker_client,
    find_containers,
)
from remediations.recreate import EVENT_MARGIN, RecreateParams, client_for, create_container, docker_error_text

COMPOSE_ONEOFF = "com.docker.compose.oneoff"


class ScaleParams(RecreateParams):
    """How many containers the service should have (see the module docstring)."""

    replicas: int | None = Field(default=None, ge=0, description="the number of containers wanted")
    step: int | None = Field(default=None, description="containers to add (+) or remove (-)")
    min: int = Field(default=1, ge=0, description="never fewer containers than this")
    max: int = Field(default=10, ge=1, description="never more containers than this")

    @model_validator(mode="after")
    def _one_way(self) -> ScaleParams:
        if (self.replicas is None) == (self.step is None):
            raise ValueError("set exactly one of replicas, step")
        if self.step == 0:
            raise ValueError("step must not be 0")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


# --------------------------------------------------------------------------- snapshot


def service_of(target: Target, attrs: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """``(project, service)``: the target's compose selection, or a single container's labels."""
    if target.compose_project and target.compose_service:
        return target.compose_project, target.compose_service
    if (target.container or target.container_id) and len(attrs) == 1:
        labels = labels_of(attrs[0])
        if labels.get(COMPOSE_PROJECT) and labels.get(COMPOSE_SERVICE):
            return labels[COMPOSE_PROJECT], labels[COMPOSE_SERVICE]
    return None


def read_service(client: Any, target: Target) -> dict[str, Any]:
    """The service's containers (not one-off) and what their image references resolve to."""
    from docker.errors import NotFound

    found = [dict(c.attrs) for c in find_containers(client, target)]
    service = service_of(target, found)
    if service is None:
        return {"project": None, "service": None, "containers": []}
    project, name = service
    members = find_containers(client, Target(compose_project=project, compose_service=name))
    attrs = [dict(c.attrs) for c in members if labels_of(c.attrs).get(COMPOSE_ONEOFF) != "True"]
    refs: dict[str, str | None] = {}
    for ref in sorted({str((a.get("Config") or {}).get("Image") or "") for a in attrs} - {""}):
        try:
            refs[ref] = str(client.api.inspect_image(ref)["Id"])
        except NotFound:
            refs[ref] = None
    return {"project": project, "service": name, "containers": attrs, "image_refs": refs}


# --------------------------------------------------------------------------- plan helpers (pure)


def usable(attrs: Mapping[str, Any]) -> bool:
    """Running, not restarting, health none/healthy: a container worth copying."""
    state = attrs.get("State") or {}
    health = str((state.get("Health") or {}).get("Status") or "none")
    return bool(state.get("Running")) and not state.get("Restarting") and health in ("none", "healthy")


def rebuild_specs(client: Any, plan_data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The real create specs of a planned scale-up, from a fresh inspect of the template.

    Raises ``DockerActionError`` when the template changed since the plan.
    """
    template = plan_data["template"]
    attrs = client.api.inspect_container(template["id"])
    specs = []
    for planned in plan_data["create"]:
        clone = planned["clone"]
        spec = clone_spec(attrs, name=planned["name"], image=clone["image"], labels=clone["labels"], replica=True)
        if not same_as_planned(spec, planned["spec"]):
            raise DockerActionError(f"{template['name']} (the container to copy) changed since the plan was made; "
                                    "plan again")
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------- the action


class Scale(Remediation[ScaleParams]):
    """Add or remove containers of a compose service, like ``docker-compose up --scale``."""

    action: ClassVar[str] = "scale"
    params_model: ClassVar[type[ScaleParams]] = ScaleParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        if target.swarm_service:
            return await swarm.inspect_service(self.context, target)
        base: dict[str, Any] = {"docker_host": target.docker_host, "project": None, "service": None,
                                "containers": []}
        if not target.is_docker or target.swarm_service:
            return base

        def read() -> dict[str, Any]:
            import requests
            from docker.errors import DockerException

            client = docker_client(self.context.resources, target.docker_host)
            try:
                return read_service(client, target)
            except (DockerException, requests.RequestException) as exc:
                raise DockerActionError(docker_error_text(exc)) from None

        try:
            return {**base, **await asyncio.to_thread(read)}
        except (DockerActionError, DependencyUnavailableError) as exc:
            return {**base, "error": str(exc)}

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        if not target.is_docker:
            return Plan.refuse(self.action, target, "no target: name a compose service in the step's params, "
                                                    "or trigger the runbook from a container check")
        if target.swarm_service:
            return swarm.plan_scale(target, snapshot, self.params)
        if snapshot.get("error"):
            return Plan.refuse(self.action, target, f"cannot inspect it: {snapshot['error']}")
        project, service = snapshot.get("project"), snapshot.get("service")
        if not project or not service:
            return Plan.refuse(self.action, target, "scale acts on a compose service: target compose "
                                                    "{project, service} or a container that belongs to one")
        containers = sorted(snapshot.get("containers") or [], key=lambda a: (compose_number(a), container_name(a)))
        if not containers:
            return Plan.refuse(self.action, target, f"compose service {project}/{service} has no containers: "
                                                    "scale needs one to copy")
        p = self.params
        current = len(containers)
        wanted = p.replicas if p.replicas is not None else current + (p.step or 0)
        desired = min(max(wanted, p.min), p.max)
        clamp = f"; {wanted} clamped to {desired} (min {p.min}, max {p.max})" if desired != wanted else ""
        if desired == current:
            return Plan.nothing(self.action, target,
                                f"{project}/{service} has {current} container(s) already{clamp}")
        summary = f"scale {project}/{service} from {current} to {desired}{clamp}"
        if desired > current:
            return self._up(target, snapshot, containers, desired - current, summary)
        return self._down(target, snapshot, containers, current - desired, summary)

    def _up(self, target: Target, snapshot: Mapping[str, Any], containers: list[dict[str, Any]], count: int,
            summary: str) -> Plan:
        project, service = str(snapshot["project"]), str(snapshot["service"])
        healthy = [a for a in containers if usable(a)]
        if not healthy:
            return Plan.refuse(self.action, target, f"no running, healthy container of {project}/{service} to copy")
        template = healthy[-1]
        conflicts = replica_conflicts(template)
        if conflicts:
            return Plan.refuse(self.action, target, f"cannot add containers to {project}/{service}: "
                                                    + "; ".join(conflicts))
        style = naming_style(project, service, containers)
        if style is None:
            names = ", ".join(container_name(a) for a in containers)
            return Plan.refuse(self.action, target, f"the containers' names ({names}) follow no compose naming "
                                                    "(a container_name: setting?); compose cannot scale that either")
        image = same_image(template, snapshot.get("image_refs") or {})
        first = max(compose_number(a) for a in containers) + 1
        create = []
        for number in range(first, first + count):
            name = compose_name(project, service, number, style)
            labels = {COMPOSE_NUMBER: str(number)}
            clone = {"image": image, "labels": labels}
            spec = clone_spec(template, name=name, image=image, labels=labels, replica=True)
            create.append({"name": name, "clone": clone, "spec": public_spec(spec)})
        template_name = container_name(template)
        steps = [f"create {c['name']} like {template_name} (image {image}) and start it" for c in create]
        steps.append(f"each must still run {format_duration(self.params.start_grace)} later, otherwise every "
                     "container created here is removed again")
        data = {"docker_host": snapshot.get("docker_host"), "direction": "up", "start_grace": self.params.start_grace,
                "template": {"id": template.get("Id"), "name": template_name}, "create": create}
        return Plan(self.action, target.describe(), True, summary, steps=tuple(steps), data=data)

    def _down(self, target: Target, snapshot: Mapping[str, Any], containers: list[dict[str, Any]], count: int,
              summary: str) -> Plan:
        doomed = list(reversed(containers))[:count]
        grace = format_duration(self.params.stop_timeout)
        steps = []
        remove = []
        for attrs in doomed:
            name = container_name(attrs)
            signal = (attrs.get("Config") or {}).get("StopSignal") or "SIGTERM"
            running = bool((attrs.get("State") or {}).get("Running"))
            steps.append(f"stop {name} ({signal}, SIGKILL after {grace}), then remove it" if running
                         else f"remove {name} (it is {(attrs.get('State') or {}).get('Status')})")
            remove.append({"id": attrs.get("Id"), "name": name, "number": compose_number(attrs)})
        data = {"docker_host": snapshot.get("docker_host"), "direction": "down",
                "stop_timeout": self.params.stop_timeout, "remove": remove}
        return Plan(self.action, target.describe(), True, summary, steps=tuple(steps), data=data)

    async def apply(self, plan: Plan) -> Outcome:
        if plan.data.get("swarm"):
            return await swarm.apply_scale(self.context, plan)
        try:
            client = client_for(self.context, plan)
        except DependencyUnavailableError as exc:
            return Outcome(False, str(exc))
        if plan.data.get("direction") == "up":
            return await self._apply_up(client, plan)
        return await self._apply_down(client, plan)

    async def _apply_up(self, client: Any, plan: Plan) -> Outcome:
        import requests
        from docker.errors import DockerException

        created: list[dict[str, str]] = []
        problem = ""
        try:
            specs = await asyncio.to_thread(rebuild_specs, client, plan.data)
        except DockerActionError as exc:
            return Outcome(False, str(exc), {"created": []})
        except (DockerException, requests.RequestException, OSError) as exc:
            return Outcome(False, f"cannot inspect {plan.data['template']['name']}: {docker_error_text(exc)}",
                           {"created": []})
        step = "starting"
        try:
            for spec in specs:
                step = f"creating {spec['name']}"
                container_id = await asyncio.to_thread(create_container, client, spec)
                created.append({"name": spec["name"], "id": container_id})
                step = f"starting {spec['name']}"
                await asyncio.to_thread(client.api.start, container_id)
            step = "checking the new containers"
            await self.context.sleep(float(plan.data.get("start_grace", 1.0)))
            for entry in created:
                state = (await asyncio.to_thread(client.api.inspect_container, entry["id"])).get("State") or {}
                if not state.get("Running") or state.get("Restarting"):
                    problem = (f"{entry['name']} did not stay running ({state.get('Status')}, exit code "
                               f"{state.get('ExitCode')})")
                    break
        except (DockerException, requests.RequestException, OSError) as exc:
            problem = f"{step} failed: {docker_error_text(exc)}"
        if not problem:
            return Outcome(True, "started " + ", ".join(c["name"] for c in created), {"created": created})
        undone = []
        for entry in created:
            try:
                self.context.expect_events(entry["id"], EVENT_MARGIN)
                await asyncio.to_thread(client.api.remove_container, entry["id"], force=True, v=True)
                undone.append(entry["name"])
            except (DockerException, requests.RequestException, OSError) as exc:
                problem += f"; could not remove {entry['name']}: {docker_error_text(exc)}"
        if undone:
            problem += "; removed again: " + ", ".join(undone)
        return Outcome(False, problem, {"created": [], "removed_again": undone})

    async def _apply_down(self, client: Any, plan: Plan) -> Outcome:
        import requests
        from docker.errors import DockerException, NotFound

        timeout = float(plan.data["stop_timeout"])
        removed: list[dict[str, Any]] = []
        gone: list[str] = []
        for entry in plan.data["remove"]:
            try:
                self.context.expect_events(str(entry["id"]), timeout + EVENT_MARGIN)
                await asyncio.to_thread(client.api.stop, entry["id"], timeout=math.ceil(timeout))
                await asyncio.to_thread(client.api.remove_container, entry["id"], v=False)
            except NotFound:
                gone.append(str(entry["name"]))
                continue
            except (DockerException, requests.RequestException, OSError) as exc:
                done = f" (removed: {', '.join(r['name'] for r in removed)})" if removed else ""
                return Outcome(False, f"removing {entry['name']} failed: {docker_error_text(exc)}{done}",
                               {"removed": removed})
            removed.append({"name": entry["name"], "id": entry["id"]})
        message = "removed " + (", ".join(r["name"] for r in removed) or "nothing")
        if gone:
            message += f" ({', '.join(gone)} already gone)"
        return Outcome(True, message, {"removed": removed, "already_gone": gone})
