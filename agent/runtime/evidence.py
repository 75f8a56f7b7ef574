"""Evidence: what the agent looks at, read only, when an incident opens (the seed's "Investigation").

Per incident, for the runbook's target and the failing check:

===================  ==========================================================================
container logs       the last ``evidence.log_lines`` lines of each target container (docker SDK)
container state      ``docker inspect``'s ``State`` (status, exit code, OOM, health), restarts, image
pg_stat_activity     for a ``postgres`` check: sessions per state, lock waits, the oldest queries
redis INFO           for a ``redis`` check: clients, memory, persistence, replication fields
prometheus           the current value of every ``prometheus`` check's query (at most
                     ``evidence.prometheus_queries`` of them; the failing check's first)

The server collectors are the probes' own :meth:`~checks.base.Probe.evidence` hook (the
probe knows how to reach its server): ``evidence_label`` names what it collects and
``evidence_scope`` says whether it is collected for the failing check or for every check
of its type; the engine never asks which type a check is.
===================  ==========================================================================

Rules: a collector never raises (a failure becomes one line of evidence saying what could
not be collected and why), each runs under ``evidence.timeout``, and every output passes
the config's redactor and is cut to ``evidence.max_chars`` (logs keep their tail, the rest
their head). Query texts from ``pg_stat_activity`` also have their string literals masked,
since a secret typed into SQL is not one the config knows.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.config.model import Config, Runbook
from agent.config.sections import EvidenceSettings
from agent.kernel.models import Resources
from agent.registry import UnknownTypeError, probe_class
from checks.base import CheckSpec, Probe
from remediations.base import Target

#: Containers of one target whose logs and state are collected (a compose service can have many).
MAX_CONTAINERS = 3

@dataclass(frozen=True)
class Evidence:
    """One collector's output (already scrubbed and bounded)."""

    name: str
    ok: bool
    output: str

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the incident's timeline and the report."""
        return {"name": self.name, "ok": self.ok, "output": self.output}


def bound(text: str, limit: int, keep: str = "head") -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep == "tail":
        return f"[... {cut} earlier characters left out]\n" + text[-limit:]
    return text[:limit] + f"\n[... {cut} more characters left out]"


def summary(evidence: list[dict[str, Any]], limit: int = 600) -> str:
    """A few lines for a notice: each collector's name and the first line of its output."""
    lines = []
    for item in evidence:
        first = next((line for line in str(item.get("output", "")).splitlines() if line.strip()), "(empty)")
        lines.append(f"- {item.get('name')}: {first[:160]}")
    return bound("\n".join(lines), limit)


class EvidenceCollector:
    """Runs the collectors for one incident. ``resources`` shares the daemon's Docker clients."""

    def __init__(self, config: Config, resources: Resources | None = None) -> None:
        self.config = config
        self.resources = resources

    @property
    def settings(self) -> EvidenceSettings:
        """The ``incidents.evidence`` section of the current config."""
        return self.config.incidents.evidence

    async def collect(self, runbook: Runbook, check: CheckSpec | None, target: Target | None) -> list[Evidence]:
        """Every collector that applies, concurrently; never raises."""
        if not self.settings.enabled:
            return []
        jobs: list[tuple[str, Callable[[], Awaitable[str]], str]] = []
        if target is not None and target.is_docker and not target.swarm_service:
            jobs.append((f"container logs and state of {target.describe()}",
                         lambda: self._containers(target), "tail"))
        hook = _probe_class(check) if check is not None else None
        if check is not None and hook is not None and hook.evidence_label and hook.evidence_scope == "failing":
            jobs.append((f"{hook.evidence_label} of {check.name}", lambda: self._hook(check), "head"))
        every = [c for c in self.config.checks
                 if (cls := _probe_class(c)) is not None and cls.evidence_label and cls.evidence_scope == "every"]
        every.sort(key=lambda c: c.name != (check.name if check else None))
        for spec in every[: self.settings.prometheus_queries]:
            label = probe_class(spec.type).evidence_label
            jobs.append((f"{label} of {spec.name}", lambda s=spec: self._hook(s), "head"))  # type: ignore[misc]
        return list(await asyncio.gather(*(self._run(name, job, keep) for name, job, keep in jobs)))

    async def _run(self, name: str, job: Callable[[], Awaitable[str]], keep: str) -> Evidence:
        redactor = self.config.redactor
        try:
            output = await asyncio.wait_for(job(), self.settings.timeout)
            ok = True
        except TimeoutError:
            output, ok = f"could not collect: no answer within {self.settings.timeout:g}s", False
        except Exception as exc:  # a collector never breaks an incident
            output, ok = f"could not collect: {type(exc).__name__}: {exc}", False
        return Evidence(name, ok, bound(redactor.text(output), self.settings.max_chars, keep))

    # ------------------------------------------------------------------ Docker

    async def _containers(self, target: Target) -> str:
        return await asyncio.to_thread(self._containers_sync, target)

    def _containers_sync(self, target: Target) -> str:
        from remediations.dockerapi import docker_client, find_containers

        own = self.resources is None
        resources = self.resources or Resources()
        try:
            client = docker_client(resources, target.docker_host, timeout=max(1, math.ceil(self.settings.timeout)))
            found = find_containers(client, target)
            if not found:
                return f"no container matches {target.describe()}"
            parts = [self._one_container(c) for c in found[:MAX_CONTAINERS]]
            if len(found) > MAX_CONTAINERS:
                parts.append(f"({len(found) - MAX_CONTAINERS} more container(s) not shown)")
            return "\n\n".join(parts)
        finally:
            if own:
                asyncio.run(resources.close())

    def _one_container(self, container: Any) -> str:
        attrs = container.attrs
        state = dict(attrs.get("State") or {})
        health = state.pop("Health", None)
        if isinstance(health, dict):  # the last probe's output only: the log can be long
            log = health.get("Log") or []
            state["Health"] = {"Status": health.get("Status"), "FailingStreak": health.get("FailingStreak"),
                               "LastOutput": (log[-1].get("Output", "") if log else "")[:500]}
        facts = {"State": state, "RestartCount": attrs.get("RestartCount"),
                 "Image": (attrs.get("Config") or {}).get("Image"), "ImageId": attrs.get("Image")}
        lines = self.settings.log_lines
        try:
            raw = container.logs(tail=lines, timestamps=True) if lines else b""
            logs = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        except Exception as exc:
            logs = f"could not read logs: {type(exc).__name__}: {exc}"
        return (f"container {container.name}: docker inspect State\n{json.dumps(facts, indent=2, default=str)}\n"
                f"last {lines} log line(s):\n{logs.rstrip() or '(no output)'}")

    # ------------------------------------------------------------------ probes' own evidence

    async def _hook(self, spec: CheckSpec) -> str:
        """The probe's :meth:`~checks.base.Probe.evidence` hook, with a probe made for the occasion."""
        probe = probe_class(spec.type)(spec, self.resources or Resources())
        try:
            return await probe.evidence(self.settings.timeout)
        finally:
            await probe.close()


def _probe_class(spec: CheckSpec) -> type[Probe[Any]] | None:
    try:
        return probe_class(spec.type)
    except UnknownTypeError:  # a check type the registry does not know has no evidence
        return None
