"""Evidence: what the agent looks at, read only, when an incident opens (the seed's "Investigation").

Per incident, for the runbook's target and the failing check:

===================  ==========================================================================
container logs       the last ``evidence.log_lines`` lines of each target container (docker SDK)
container state      ``docker inspect``'s ``State`` (status, exit code, OOM, health), restarts, image
pg_stat_activity     for a ``postgres`` check: sessions per state, lock waits, the oldest queries
redis INFO           for a ``redis`` check: clients, memory, persistence, replication fields
prometheus           the current value of every ``prometheus`` check's query (at most
                     ``evidence.prometheus_queries`` of them; the failing check's first)
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
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.config.model import Config, Runbook
from agent.config.sections import EvidenceSettings
from agent.kernel.models import Resources
from checks.base import CheckSpec
from remediations.base import Target

#: Containers of one target whose logs and state are collected (a compose service can have many).
MAX_CONTAINERS = 3

REDIS_FIELDS = (
    "redis_version", "role", "uptime_in_seconds", "connected_clients", "blocked_clients", "rejected_connections",
    "used_memory_human", "maxmemory_human", "maxmemory_policy", "mem_fragmentation_ratio", "evicted_keys",
    "expired_keys", "loading", "rdb_last_bgsave_status", "aof_enabled", "aof_last_write_status",
    "connected_slaves", "master_link_status", "instantaneous_ops_per_sec",
)

PG_SUMMARY_SQL = (
    "SELECT coalesce(state, '(background)') AS state, count(*) AS sessions,"
    " count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting_on_locks,"
    " round(coalesce(max(extract(epoch FROM now() - query_start)), 0)::numeric, 1) AS oldest_query_s"
    " FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY 1 ORDER BY 2 DESC"
)
PG_OLDEST_SQL = (
    "SELECT pid, usename, datname, state, wait_event_type, wait_event,"
    " round(extract(epoch FROM now() - query_start)::numeric, 1) AS running_s, left(query, 300) AS query"
    " FROM pg_stat_activity WHERE state IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()"
    " ORDER BY query_start NULLS LAST LIMIT 5"
)
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'")
_SPACE = re.compile(r"\s+")


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
        if check is not None and check.type == "postgres":
            jobs.append((f"pg_stat_activity of {check.name}", lambda: self._postgres(check), "head"))
        if check is not None and check.type == "redis":
            jobs.append((f"redis INFO of {check.name}", lambda: self._redis(check), "head"))
        proms = [c for c in self.config.checks if c.type == "prometheus"]
        proms.sort(key=lambda c: c.name != (check.name if check else None))
        for spec in proms[: self.settings.prometheus_queries]:
            jobs.append((f"prometheus query of {spec.name}", lambda s=spec: self._prometheus(s), "head"))  # type: ignore[misc]
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

    # ------------------------------------------------------------------ PostgreSQL

    async def _postgres(self, spec: Any) -> str:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        from checks.postgres import connection_params

        dsn = conninfo_to_dict(spec.dsn.get_secret_value()) if spec.dsn is not None else {}
        conninfo = make_conninfo("", **connection_params(spec, {k: str(v) for k, v in dsn.items()}))
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)
        try:
            cur = await conn.execute("SHOW max_connections")
            row = await cur.fetchone()
            limit = row[0] if row else "?"
            cur = await conn.execute(PG_SUMMARY_SQL)
            summary_rows = await cur.fetchall()
            cur = await conn.execute(PG_OLDEST_SQL)
            oldest = await cur.fetchall()
        finally:
            await conn.close()
        total = sum(int(r[1]) for r in summary_rows)
        lines = [f"sessions: {total} (max_connections {limit})",
                 "state | sessions | waiting on locks | oldest query (s)"]
        lines += [f"{r[0]} | {r[1]} | {r[2]} | {r[3]}" for r in summary_rows]
        if oldest:
            lines.append("oldest active queries (string literals masked):")
            for pid, user, db, state, wtype, wevent, secs, query in oldest:
                text = _SPACE.sub(" ", _SQL_LITERAL.sub("'?'", str(query or ""))).strip()
                wait = f" waiting {wtype}/{wevent}" if wtype else ""
                lines.append(f"pid {pid} {user}@{db} {state}{wait} {secs}s: {text[:200]}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ Redis

    async def _redis(self, spec: Any) -> str:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from checks.redis import connection_kwargs

        kwargs = connection_kwargs(spec) | {"retry": Retry(NoBackoff(), 0)}
        url = spec.url.get_secret_value() if spec.url is not None else None
        client = Redis.from_url(url, **kwargs) if url is not None else Redis(**kwargs)
        try:
            info = await client.info()
        finally:
            await client.aclose()
        return "\n".join(f"{name}: {info[name]}" for name in REDIS_FIELDS if name in info) or "(INFO was empty)"

    # ------------------------------------------------------------------ Prometheus

    async def _prometheus(self, spec: Any) -> str:
        from checks.prometheus import _new_client, _query, parse_result, query_budget

        budget = query_budget(self.settings.timeout)

        def ask() -> Any:
            client = _new_client(spec)
            try:
                return _query(client, spec, budget)
            finally:
                client.session.close()

        samples = parse_result(await asyncio.to_thread(ask))
        lines = [f"query: {spec.query}", f"{len(samples)} series"]
        for labels, value in sorted(samples, key=lambda s: sorted(s[0].items()))[:20]:
            label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.append(f"{{{label_text}}} {value:g}")
        if len(samples) > 20:
            lines.append(f"({len(samples) - 20} more series not shown)")
        return "\n".join(lines)
