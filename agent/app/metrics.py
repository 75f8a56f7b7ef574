"""Prometheus metrics of the agent itself, on a registry of its own (never the global one).

Documented in the README's metrics table; names are stable API:

* ``paramedic_probe_duration_seconds{check,type}`` histogram
* ``paramedic_probes_total{check,status}`` counter
* ``paramedic_check_status{check}`` gauge: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
* ``paramedic_check_up{check}`` gauge: 1 unless the check's state is DOWN (or FLAPPING while failing)
* ``paramedic_state_transitions_total{check,from,to}`` counter
* ``paramedic_probe_errors_total{check,kind}`` counter (kind = error class, e.g. ProbeTimeoutError)
* ``paramedic_scheduler_lag_seconds`` histogram: how late probe runs started
* ``paramedic_probes_in_flight`` gauge, ``paramedic_scheduler_skipped_runs_total`` counter
* ``paramedic_docker_events_total{event}`` counter
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent.core.state import Health, Transition
from agent.kernel.results import Result, Status

_PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """All of paramedic's own metrics; ``render()`` gives the text exposition format."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.probe_duration = Histogram(
            "paramedic_probe_duration_seconds", "Wall time of one probe run, retries included.",
            ["check", "type"], buckets=_PROBE_BUCKETS, registry=r)
        self.probes = Counter("paramedic_probes", "Probe runs by resulting status.", ["check", "status"], registry=r)
        self.status = Gauge("paramedic_check_status", "Last status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
                            ["check"], registry=r)
        self.up = Gauge("paramedic_check_up", "1 unless the check is DOWN.", ["check"], registry=r)
        self.transitions = Counter("paramedic_state_transitions", "Visible health state changes.",
                                   ["check", "from", "to"], registry=r)
        self.errors = Counter("paramedic_probe_errors", "Probe runs that ended in an error, by kind.",
                              ["check", "kind"], registry=r)
        self.lag = Histogram("paramedic_scheduler_lag_seconds", "How late probe runs started.",
                             buckets=_LAG_BUCKETS, registry=r)
        self.in_flight = Gauge("paramedic_probes_in_flight", "Probe runs going on now.", registry=r)
        self.skipped = Counter("paramedic_scheduler_skipped_runs", "Runs skipped because the scheduler fell "
                               "more than a whole interval behind, or a check was still running at two due times.",
                               registry=r)
        self.hedged = Counter("paramedic_hedged_runs", "Extra runs started alongside a run left unanswered "
                              "longer than the check usually takes (agent.core.pacing).", ["check"], registry=r)
        self.held = Counter("paramedic_held_runs", "Runs not started because a runbook step was being "
                            "applied to the check's target (its verification probes instead).", ["check"], registry=r)
        self.docker_events = Counter("paramedic_docker_events", "Docker events about watched containers.",
                                     ["event"], registry=r)
        self._children: dict[tuple[str, str, Status], tuple[Any, Any, Any]] = {}

    def observe_result(self, result: Result) -> None:
        """Account for one finished probe run."""
        # labels() validates, stringifies and locks on every call: at a thousand results a
        # second, keep each check's children (per status) instead of looking them up again.
        key = (result.name, result.type, result.status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.probe_duration.labels(result.name, result.type),
                self.probes.labels(result.name, result.status.name),
                self.status.labels(result.name),
            )
        duration, probes, status = children
        duration.observe(result.duration_ms / 1000)
        probes.inc()
        status.set(int(result.status))
        if result.error:
            self.errors.labels(result.name, result.error).inc()

    def observe_transition(self, t: Transition) -> None:
        """Account for one visible state change."""
        self.transitions.labels(t.check, t.before.value, t.after.value).inc()
        self.up.labels(t.check).set(0 if t.after is Health.DOWN else 1)

    def forget(self, check: str) -> None:
        """Drop the per-check series of a check removed from the config."""
        self._children = {k: v for k, v in self._children.items() if k[0] != check}
        for metric in (self.status, self.up, self.hedged, self.held):
            try:
                metric.remove(check)
            except KeyError:
                continue

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    async def render_async(self, chunk: int = 250, share: float = 0.3) -> bytes:
        """The same text as :meth:`render`, made on the event loop in the background.

        With a thousand checks a render costs ~0.2 s of CPU, and the loop that runs a
        thousand probes a second has not that much to spare at once: in one piece it
        stalls every probe due meanwhile, and in a thread it is worse on plain asyncio
        (its loop gives up the GIL at every socket call and waits up to 5 ms to get it
        back). So it is made a slice at a time — one metric family at a time (collecting
        the probe-duration histogram is the largest piece), formatted ``chunk`` samples
        at a time by prometheus_client itself — and after each slice it sleeps long
        enough to take at most ``share`` of the loop's time. A scrape takes longer
        (under a second with a thousand checks); the probes hardly notice.
        """
        clock = time.perf_counter
        rest = (1 - share) / share
        out: list[str] = []
        async for family in _lazily(self.registry.collect(), clock, rest):
            parts = []
            for start in range(0, max(len(family.samples), 1), chunk):
                t0 = clock()
                part = Metric(family.name, family.documentation, family.type, family.unit)
                part.samples = family.samples[start:start + chunk]
                parts.append(generate_latest(_Families([part])).decode("utf-8"))
                await asyncio.sleep((clock() - t0) * rest)
            out.append(_merge(parts))
        return "".join(out).encode("utf-8")


async def _lazily(families: Iterable[Metric], clock: Callable[[], float], rest: float) -> AsyncIterator[Metric]:
    """Each family as it is collected, then a pause ``rest`` times as long as collecting it."""
    iterator = iter(families)  # the registry collects each family only when it is reached
    while True:
        t0 = clock()
        family = next(iterator, None)
        if family is None:
            return
        await asyncio.sleep((clock() - t0) * rest)
        yield family


class _Families:
    """The collector interface ``generate_latest`` needs, over given metric families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _merge(parts: list[str]) -> str:
    """Join the expositions of one family's sample slices into that family's exposition.

    Each slice comes out as blocks, each a ``# HELP``/``# TYPE`` pair and its lines: the
    family's own samples first, then one gauge block per OpenMetrics suffix (``_created``)
    in suffix order. Merged: each block once, with the lines of every slice in order.
    """
    if len(parts) == 1:
        return parts[0]
    blocks: dict[str, list[str]] = {}
    for text in parts:
        current: list[str] = []
        lines = text.splitlines(keepends=True)
        i = 0
        while i < len(lines):
            if lines[i].startswith("# HELP "):
                header = lines[i] + lines[i + 1]  # HELP, then TYPE
                current = blocks.setdefault(header, [])
                i += 2
                continue
            current.append(lines[i])
            i += 1
    first, *suffixed = blocks  # the family's own block comes first in every slice
    return "".join(header + "".join(blocks[header]) for header in [first, *sorted(suffixed)])

