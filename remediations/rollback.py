"""``rollback``: recreate the container(s) from the image they ran before the last deploy.

Where "before" comes from:

* **image history** (default): the agent records, per watched target, each image id the
  target ran and when it first saw it (``Store.record_image`` / ``Store.image_history``,
  reached through ``context.image_history(target.key)``, newest first). The previous
  image is the newest entry whose id differs from the one running now.
* **the seed's tag convention** (``previous_tag: previous``): the image tagged
  ``<repository>:previous``, the repository being that of the running container's image
  reference (``app:latest`` -> ``app:previous``).

``retag: true`` also does what the seed's runbook does by hand (``docker tag
app:previous app:latest``): the running reference (``app:latest``) is re-pointed to the
previous image *before* the containers are recreated from it, so that the next ``docker
run app:latest`` or ``docker-compose up`` starts the good image too. Without it the new
containers name the previous image by a tag that still points to it, else by its id.

Refusals:

* the usual ones of :mod:`remediations.recreate` (no target, nothing matched, operator
  stop, paused, ``--rm``...);
* **a rollback is never rolled back**: the containers a rollback creates carry the label
  ``paramedic.rollback-from=<image id rolled back from>``; when it is present, the plan
  refuses ("already rolled back from X; a person must decide");
* the containers of a service run different images (a deploy may be in progress);
* no earlier image recorded, or the previous tag does not exist, or that image is no
  longer on the Docker host (pruned), or it is the image running now;
* ``retag`` when the container names its image by id or digest (no tag to re-point).

``apply`` re-tags (if asked), then replaces each container exactly like ``recreate`` (the
old one is kept, renamed, until the new one runs; any failure puts it back), with the
same configuration minus what the old image supplied (command, env, labels... of the
old image give way to the previous image's own: see :mod:`remediations.clone`). If
nothing could be replaced, a re-pointed tag is put back. The agent's image watcher sees
the new image id as the next entry of the history.

``requires_approval`` is True: a runbook step with ``rollback`` waits for a person unless
it says ``approval: none``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from agent.kernel.errors import DependencyUnavailableError
from remediations import swarm
from remediations.base import Outcome, Plan, Remediation, Target
from remediations.clone import LABEL_ROLLBACK_FROM, container_name, labels_of
from remediations.recreate import (
    RecreateParams,
    blocked,
    client_for,
    docker_error_text,
    inspect_replaceable,
    precheck,
    replace_containers,
    replacement,
    replacement_steps,
)

#: History entries looked at (newest first); older deploys are not rollback candidates.
HISTORY_LIMIT = 20


class RollbackParams(RecreateParams):
    """Which earlier image, and whether to re-point the running tag to it."""

    previous_tag: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="roll back to <repository>:<previous_tag> instead of the recorded history",
    )
    retag: bool = Field(default=False, description="re-point the running tag (app:latest) to the previous image")


# --------------------------------------------------------------------------- image references (pure)


def split_reference(reference: str) -> tuple[str, str] | None:
    """``(repository, tag)`` of ``repo[:tag]`` (tag ``latest`` when absent); None for an id or digest."""
    if not reference or reference.startswith("sha256:") or "@" in reference:
        return None
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1:]
    return reference, "latest"


def short(image_id: str) -> str:
    """``sha256:0123456789ab`` -> ``0123456789ab``."""
    return image_id.removeprefix("sha256:")[:12]


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def previous_from_history(history: Sequence[Mapping[str, Any]], current_id: str) -> Mapping[str, Any] | None:
    """The newest history entry whose image id is not ``current_id``."""
    return next((h for h in history if h.get("image_id") and h["image_id"] != current_id), None)


def _choose(
    params: RollbackParams, target: Target, snapshot: Mapping[str, Any], reference: str, current_id: str
) -> tuple[str, str, str] | str:
    """``(image reference to create from, image id, what it is in words)`` or a refusal."""
    images: Mapping[str, Any] = snapshot.get("images") or {}
    if params.previous_tag is not None:
        parts = split_reference(reference)
        if parts is None:
            return (f"the container runs {reference}, an id or digest: there is no repository to find "
                    f":{params.previous_tag} in")
        wanted = f"{parts[0]}:{params.previous_tag}"
        image_id = images.get(wanted)
        if not image_id:
            return f"no image {wanted} on this Docker host"
        if image_id == current_id:
            return f"{wanted} is the image running now ({short(current_id)}): there is nothing earlier to roll back to"
        return wanted, str(image_id), wanted
    history = list(snapshot.get("history") or [])
    entry = previous_from_history(history, current_id)
    if entry is None:
        seen = f" (history: {len(history)} entr{'y' if len(history) == 1 else 'ies'}, all the current image)"
        return f"no earlier image recorded for {target.describe()}" + (seen if history else "")
    image_id = str(entry["image_id"])
    tag = str(entry.get("image") or "")
    what = f"{tag or short(image_id)} ({short(image_id)}, first seen {_when(entry.get('first_seen'))})"
    if not images.get(image_id):
        return f"the earlier image {what} is no longer on this Docker host (removed or pruned)"
    ref = tag if tag and images.get(tag) == image_id else image_id
    return ref, image_id, what


# --------------------------------------------------------------------------- the action


class Rollback(Remediation[RollbackParams]):
    """Recreate the container(s) from the previous image with the same configuration."""

    action: ClassVar[str] = "rollback"
    params_model: ClassVar[type[RollbackParams]] = RollbackParams
    requires_approval: ClassVar[bool] = True

    async def inspect(self, target: Target) -> dict[str, Any]:
        if target.swarm_service:
            return await swarm.inspect_service(self.context, target)
        history = [dict(h) for h in self.context.image_history(target.key)][:HISTORY_LIMIT]
        previous_tag = self.params.previous_tag

        def resolve_images(client: Any, containers: list[dict[str, Any]]) -> dict[str, Any]:
            from docker.errors import NotFound

            refs = {str(h[k]) for h in history for k in ("image", "image_id") if h.get(k)}
            for item in containers:
                parts = split_reference(str((item["attrs"].get("Config") or {}).get("Image") or ""))
                if previous_tag is not None and parts is not None:
                    refs.add(f"{parts[0]}:{previous_tag}")
            images: dict[str, str | None] = {}
            for ref in sorted(refs):
                try:
                    images[ref] = str(client.api.inspect_image(ref)["Id"])
                except NotFound:
                    images[ref] = None
            return {"images": images}

        snapshot = await inspect_replaceable(self.context, target, resolve_images)
        snapshot["history"] = history
        return snapshot

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        if target.swarm_service:
            return swarm.plan_rollback(target, snapshot, self.params)
        early = precheck(self.action, target, snapshot)
        if early is not None:
            return early
        items = list(snapshot["containers"])
        stops = snapshot.get("operator_stops") or {}
        for item in items:
            reason = blocked(item["attrs"], stops)
            if reason is not None:
                return Plan.refuse(self.action, target, reason)
            rolled = labels_of(item["attrs"]).get(LABEL_ROLLBACK_FROM)
            if rolled:
                return Plan.refuse(self.action, target, (
                    f"{container_name(item['attrs'])} already runs an image installed by a paramedic rollback "
                    f"(rolled back from {short(rolled)}); a rollback is never rolled back: a person must decide"))
        current_ids = sorted({str(i["attrs"].get("Image") or "") for i in items})
        if len(current_ids) > 1:
            return Plan.refuse(self.action, target, (
                f"its containers run different images ({', '.join(short(i) for i in current_ids)}): a deploy may be "
                "in progress; a person must decide"))
        current_id = current_ids[0]
        reference = str((items[0]["attrs"].get("Config") or {}).get("Image") or "")
        chosen = _choose(self.params, target, snapshot, reference, current_id)
        if isinstance(chosen, str):
            return Plan.refuse(self.action, target, chosen)
        image_ref, image_id, what = chosen
        retag: dict[str, str] | None = None
        steps: list[str] = []
        if self.params.retag:
            parts = split_reference(reference)
            if parts is None:
                return Plan.refuse(self.action, target, f"retag: the container runs {reference}, not a tag")
            retag = {"repository": parts[0], "tag": parts[1], "image_id": image_id, "restore_id": current_id}
            image_ref = f"{parts[0]}:{parts[1]}"
            steps.append(f"re-tag {image_ref} to {short(image_id)} (it points to {short(current_id)} now)")
        entries = [replacement(item, image=image_ref, labels={LABEL_ROLLBACK_FROM: current_id}) for item in items]
        p = self.params
        steps += [s for entry in entries for s in replacement_steps(entry, p.stop_timeout, p.start_grace)]
        names = ", ".join(e["name"] for e in entries)
        summary = f"roll back {names} from {reference} ({short(current_id)}) to {what}"
        data = {"docker_host": snapshot.get("docker_host"), "stop_timeout": p.stop_timeout,
                "start_grace": p.start_grace, "image": image_ref, "image_id": image_id,
                "from_image_id": current_id, "retag": retag, "containers": entries}
        return Plan(self.action, target.describe(), True, summary, steps=tuple(steps), data=data)

    async def apply(self, plan: Plan) -> Outcome:
        if plan.data.get("swarm"):
            return await swarm.apply_rollback(self.context, plan)
        import requests
        from docker.errors import DockerException

        try:
            client = client_for(self.context, plan)
        except DependencyUnavailableError as exc:
            return Outcome(False, str(exc))
        retag = plan.data.get("retag")
        if retag:
            try:
                await asyncio.to_thread(client.api.tag, retag["image_id"], retag["repository"], retag["tag"],
                                        force=True)
            except (DockerException, requests.RequestException, OSError) as exc:
                return Outcome(False, f"re-tagging {retag['repository']}:{retag['tag']} failed: "
                                      f"{docker_error_text(exc)}")
        outcome = await replace_containers(self.context, client, plan.data["containers"],
                                           float(plan.data["stop_timeout"]), float(plan.data["start_grace"]))
        info = {"image": plan.data["image"], "image_id": plan.data["image_id"],
                "from_image_id": plan.data["from_image_id"]}
        if outcome.ok:
            return Outcome(True, f"rolled back to {plan.data['image']}: {outcome.message}",
                           {**outcome.data, **info})
        message = outcome.message
        if retag and not outcome.data.get("replaced"):
            try:
                await asyncio.to_thread(client.api.tag, retag["restore_id"], retag["repository"], retag["tag"],
                                        force=True)
                message += f"; {retag['repository']}:{retag['tag']} points to {short(retag['restore_id'])} again"
            except (DockerException, requests.RequestException, OSError) as exc:
                message += f"; could not re-point the tag back: {docker_error_text(exc)}"
        return Outcome(False, message, {**outcome.data, **info})
