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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent.results import Result
from agent.state import Health, Transition

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
                               "more than a whole interval behind.", registry=r)
        self.docker_events = Counter("paramedic_docker_events", "Docker events about watched containers.",
                                     ["event"], registry=r)

    def observe_result(self, result: Result) -> None:
        """Account for one finished probe run."""
        self.probe_duration.labels(result.name, result.type).observe(result.duration_ms / 1000)
        self.probes.labels(result.name, result.status.name).inc()
        self.status.labels(result.name).set(int(result.status))
        if result.error:
            self.errors.labels(result.name, result.error).inc()

    def observe_transition(self, t: Transition) -> None:
        """Account for one visible state change."""
        self.transitions.labels(t.check, t.before.value, t.after.value).inc()
        self.up.labels(t.check).set(0 if t.after is Health.DOWN else 1)

    def forget(self, check: str) -> None:
        """Drop the per-check series of a check removed from the config."""
        for metric in (self.status, self.up):
            try:
                metric.remove(check)
            except KeyError:
                continue

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
