"""``docker.prune``: free disk space for the storage-full runbook, removing only what is listed.

What may go (each can be switched off):

* dangling images (untagged, ``<none>:<none>``) that no container uses -- or that only
  containers this same plan removes use;
* stopped containers (``exited``, ``created``, ``dead``) stopped for longer than
  ``stopped_containers_older_than`` (time since ``State.FinishedAt``, or since creation for
  one that never ran). Off by default: a stopped container's configuration exists nowhere
  else;
* unused build cache (``POST /build/prune``: only cache no build is using).

Never: a running, paused or restarting container; a container an operator stopped on
purpose (``context.operator_stops()``: listed as kept, with the reason); a tagged image;
an image some other container uses. ``only_labels`` narrows images and containers to
those carrying all the given labels (build cache entries have no labels, so with
``only_labels`` the build cache is left alone and the plan says so).

Unlike ``docker system prune``, ``apply`` removes exactly the ids the plan lists, one by one
(``containers.get(id).remove()``, ``images.remove(id)``), so something that became
prunable between plan and apply is not caught by surprise; an item that changed meanwhile
(a container started again, an image tagged or put to use) is skipped and reported.

Bytes: the plan's ``data.bytes_to_free`` is the sum of each image's unique size (``Size -
SharedSize`` from ``docker system df``: layers shared with a kept image free nothing), each
container's writable layer (``SizeRw``) and the build cache not in use and not shared. The
outcome's ``bytes_freed`` counts the items actually removed, with the build cache as
Docker reports it reclaimed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import Field, field_validator

from agent.kernel.durations import Duration, format_duration
from agent.kernel.errors import DependencyUnavailableError
from checks.container import parse_docker_time
from remediations.base import Outcome, Params, Plan, Remediation, Target
from remediations.dockerapi import docker_client
from remediations.restart import docker_error_text

STOPPED = ("exited", "created", "dead")
#: ``expect_events`` window for removals (``destroy`` events are not stops, but say it anyway).
EVENT_WINDOW = 30.0


class PruneParams(Params):
    """What to remove. ``stopped_containers_older_than: null`` keeps every container."""

    dangling_images: bool = True
    stopped_containers_older_than: Duration | None = None
    build_cache: bool = True
    only_labels: dict[str, str] | None = None
    docker_host: str | None = Field(default=None, description="else the triggering container check's")

    @field_validator("only_labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (not value or any(not k for k in value)):
            raise ValueError("only_labels must hold at least one non-empty key")
        return value


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _labelled(labels: Mapping[str, str] | None, wanted: Mapping[str, str] | None) -> bool:
    if not wanted:
        return True
    have = labels or {}
    return all(have.get(k) == v for k, v in wanted.items())


# --------------------------------------------------------------------------- snapshot (shaping, pure)


def shape_snapshot(
    df: Mapping[str, Any],
    dangling: list[Mapping[str, Any]],
    listed: list[Mapping[str, Any]],
    finished: Mapping[str, str],
    now: float,
    operator_stops: Mapping[str, Mapping[str, Any]],
    docker_host: str | None,
) -> dict[str, Any]:
    """The JSON snapshot, from ``df()``, the dangling image list, the container list
    (``containers(all=True)``) and ``State.FinishedAt`` of the stopped containers by id."""
    sizes = {str(i.get("Id")): i for i in df.get("Images") or ()}
    rw = {str(c.get("Id")): int(c.get("SizeRw") or 0) for c in df.get("Containers") or ()}
    images = []
    for image in dangling:
        image_id = str(image.get("Id"))
        info = sizes.get(image_id, image)
        size = int(info.get("Size") or 0)
        shared = int(info.get("SharedSize") or 0)
        images.append({"id": image_id, "size": size, "unique_size": max(size - max(shared, 0), 0),
                       "created": int(image.get("Created") or 0), "labels": dict(image.get("Labels") or {})})
    containers = []
    for summary in listed:
        cid = str(summary.get("Id"))
        names = summary.get("Names") or [cid[:12]]
        ended = parse_docker_time(finished.get(cid))
        containers.append({
            "id": cid, "name": str(names[0]).lstrip("/"), "status": str(summary.get("State")),
            "image_id": str(summary.get("ImageID") or ""), "size_rw": rw.get(cid, 0),
            "finished_s": ended.timestamp() if ended else None,
            "created_s": float(summary["Created"]) if summary.get("Created") else None,
            "labels": dict(summary.get("Labels") or {}),
        })
    cache = [{"id": str(b.get("ID")), "size": int(b.get("Size") or 0), "in_use": bool(b.get("InUse")),
              "shared": bool(b.get("Shared"))} for b in df.get("BuildCache") or ()]
    return {"now": now, "docker_host": docker_host, "images": images, "containers": containers,
            "build_cache": cache, "operator_stops": {k: dict(v) for k, v in operator_stops.items()}}


# --------------------------------------------------------------------------- the action


class Prune(Remediation[PruneParams]):
    """Remove listed dangling images, old stopped containers and unused build cache."""

    action: ClassVar[str] = "docker.prune"
    params_model: ClassVar[type[PruneParams]] = PruneParams

    def _host(self, target: Target) -> str | None:
        return self.params.docker_host or target.docker_host

    async def inspect(self, target: Target) -> dict[str, Any]:
        host = self._host(target)
        p = self.params

        def read() -> dict[str, Any]:
            from docker.errors import NotFound

            client = docker_client(self.context.resources, host)
            df = client.df()
            dangling = client.api.images(filters={"dangling": True}) if p.dangling_images else []
            listed = client.api.containers(all=True)  # all of them: an image any one uses must stay
            finished = {}
            if p.stopped_containers_older_than is not None:
                for c in listed:
                    if c.get("State") in STOPPED:
                        with contextlib.suppress(NotFound):
                            state = client.api.inspect_container(c["Id"]).get("State") or {}
                            finished[c["Id"]] = str(state.get("FinishedAt") or "")
            return {"df": df, "dangling": dangling, "listed": listed, "finished": finished}

        try:
            raw = await asyncio.to_thread(read)
        except DependencyUnavailableError as exc:
            return {"error": str(exc), "docker_host": host}
        except Exception as exc:  # docker SDK / requests errors: readable, never a crash
            return {"error": f"Docker error: {docker_error_text(exc)}", "docker_host": host}
        return shape_snapshot(raw["df"], raw["dangling"], raw["listed"], raw["finished"], self.context.clock(),
                              self.context.operator_stops(), host)

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        if snapshot.get("error"):
            return Plan.refuse(self.action, target, f"cannot inspect Docker: {snapshot['error']}")
        now = float(snapshot.get("now") or 0.0)
        containers, kept = self._containers(snapshot, now)
        removing = {c["id"] for c in containers}
        images, kept_images = self._images(snapshot, removing)
        kept += kept_images
        cache_bytes, cache_note = self._cache(snapshot)
        steps = [f"remove stopped container {c['name']} ({c['why']}, {human_bytes(c['bytes'])})" for c in containers]
        steps += [f"remove dangling image {i['id'][7:19]} ({human_bytes(i['bytes'])})" for i in images]
        if cache_bytes is not None:
            steps.append(f"prune unused build cache (about {human_bytes(cache_bytes)})")
        if cache_note:
            kept.append({"what": "build cache", "reason": cache_note})
        total = sum(c["bytes"] for c in containers) + sum(i["bytes"] for i in images) + (cache_bytes or 0)
        if not containers and not images and cache_bytes is None:
            reasons = "; ".join(f"{k['what']}: {k['reason']}" for k in kept)
            return Plan.nothing(self.action, target, "nothing to remove" + (f" (kept {reasons})" if reasons else ""))
        data = {
            "docker_host": snapshot.get("docker_host"),
            "containers": [{"id": c["id"], "name": c["name"], "bytes": c["bytes"]} for c in containers],
            "images": [{"id": i["id"], "bytes": i["bytes"]} for i in images],
            "build_cache": cache_bytes is not None, "build_cache_bytes": cache_bytes or 0,
            "bytes_to_free": total, "kept": kept,
        }
        parts = [f"{len(containers)} container(s)" if containers else "", f"{len(images)} image(s)" if images else "",
                 "unused build cache" if cache_bytes is not None else ""]
        summary = f"remove {', '.join(x for x in parts if x)}: about {human_bytes(total)} to free"
        return Plan(self.action, target.describe(), True, summary, steps=tuple(steps), data=data)

    def _containers(self, snapshot: Mapping[str, Any], now: float) -> tuple[list[dict[str, Any]],
                                                                         list[dict[str, Any]]]:
        limit = self.params.stopped_containers_older_than
        if limit is None:
            return [], []
        stops = snapshot.get("operator_stops") or {}
        chosen, kept = [], []
        for c in snapshot.get("containers") or ():
            if c["status"] not in STOPPED or not _labelled(c.get("labels"), self.params.only_labels):
                continue
            if c["name"] in stops:
                kept.append({"what": f"container {c['name']}",
                             "reason": "stopped by an operator: kept as they left it"})
                continue
            since = c.get("finished_s") or c.get("created_s")
            age = now - float(since) if since is not None else 0.0
            if age < limit:
                continue
            shown = format_duration(round(age) if age >= 1 else round(max(age, 0.0), 3))
            why = f"{c['status']} {shown} ago" if since is not None else c["status"]
            chosen.append({"id": c["id"], "name": c["name"], "bytes": int(c.get("size_rw") or 0), "why": why})
        return chosen, kept

    def _images(self, snapshot: Mapping[str, Any], removing: set[str]) -> tuple[list[dict[str, Any]],
                                                                               list[dict[str, Any]]]:
        if not self.params.dangling_images:
            return [], []
        users: dict[str, list[str]] = {}
        for c in snapshot.get("containers") or ():
            if c["id"] not in removing:
                users.setdefault(c["image_id"], []).append(c["name"])
        chosen, kept = [], []
        for image in snapshot.get("images") or ():
            if not _labelled(image.get("labels"), self.params.only_labels):
                continue
            if image["id"] in users:
                names = ", ".join(sorted(users[image["id"]])[:3])
                kept.append({"what": f"image {image['id'][7:19]}", "reason": f"used by container {names}"})
                continue
            chosen.append({"id": image["id"], "bytes": int(image["unique_size"])})
        return chosen, kept

    def _cache(self, snapshot: Mapping[str, Any]) -> tuple[int | None, str | None]:
        if not self.params.build_cache:
            return None, None
        if self.params.only_labels:
            return None, "build cache has no labels; left alone because only_labels is set"
        unused = [b for b in snapshot.get("build_cache") or () if not b["in_use"] and not b["shared"]]
        if not unused:
            return None, None
        return sum(b["size"] for b in unused), None

    async def apply(self, plan: Plan) -> Outcome:
        try:  # connecting already talks to the daemon (API version): not on the event loop
            client = await asyncio.to_thread(docker_client, self.context.resources, plan.data.get("docker_host"))
        except DependencyUnavailableError as exc:
            return Outcome(False, str(exc))
        removed: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for c in plan.data.get("containers") or ():
            await self._one(self._remove_container, client, c, removed, skipped, failed)
        for i in plan.data.get("images") or ():
            await self._one(self._remove_image, client, i, removed, skipped, failed)
        cache_freed = 0
        if plan.data.get("build_cache"):
            try:
                answer = await asyncio.to_thread(client.api.prune_builds)
                cache_freed = int((answer or {}).get("SpaceReclaimed") or 0)
                removed.append({"what": "build cache", "bytes": cache_freed})
            except Exception as exc:
                failed.append({"what": "build cache", "error": docker_error_text(exc)})
        freed = sum(int(r.get("bytes") or 0) for r in removed)
        parts = [f"removed {len(removed)} item(s), {human_bytes(freed)} freed"]
        parts += [f"skipped {s['what']}: {s['reason']}" for s in skipped]
        parts += [f"failed {f['what']}: {f['error']}" for f in failed]
        data = {"removed": removed, "skipped": skipped, "failed": failed, "bytes_freed": freed}
        return Outcome(not failed, "; ".join(parts), data)

    async def _one(
        self,
        remove: Callable[[Any, Mapping[str, Any]], str | None],
        client: Any,
        item: Mapping[str, Any],
        removed: list[dict[str, Any]],
        skipped: list[dict[str, Any]],
        failed: list[dict[str, Any]],
    ) -> None:
        from docker.errors import NotFound

        what = f"container {item['name']}" if "name" in item else f"image {str(item['id'])[7:19]}"
        try:
            reason = await asyncio.to_thread(remove, client, item)
        except NotFound:
            skipped.append({"what": what, "reason": "already gone"})
            return
        except Exception as exc:
            failed.append({"what": what, "error": docker_error_text(exc)})
            return
        if reason:
            skipped.append({"what": what, "reason": reason})
        else:
            removed.append({"what": what, "id": item["id"], "bytes": int(item.get("bytes") or 0)})

    def _remove_container(self, client: Any, item: Mapping[str, Any]) -> str | None:
        container = client.containers.get(item["id"])
        if container.status not in STOPPED:
            return f"it is {container.status} now"
        self.context.expect_events(str(item["name"]), EVENT_WINDOW)
        container.remove(v=False, force=False)
        return None

    def _remove_image(self, client: Any, item: Mapping[str, Any]) -> str | None:
        from docker.errors import APIError

        tags = [t for t in client.api.inspect_image(item["id"]).get("RepoTags") or () if t != "<none>:<none>"]
        if tags:
            return f"tagged {tags[0]} since the plan"
        try:
            client.images.remove(image=item["id"], force=False)
        except APIError as exc:
            if exc.status_code == 409:  # a container started using it meanwhile
                return f"in use: {docker_error_text(exc)}"
            raise
        return None


__all__ = ["Prune", "PruneParams", "shape_snapshot"]
