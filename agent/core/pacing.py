"""How soon the daemon looks again at a check that seems to be failing.

A check is DOWN after ``failure_threshold`` consecutive failed runs. Waiting a whole
``interval`` between those runs, or for one run's ``timeout`` before starting the next,
makes detection cost ``failure_threshold`` intervals or timeouts. Two things shorten it,
both bounded by the check's own settings:

* **retry**: after a failed run that does not make the check DOWN yet, the next run starts
  ``retry_interval`` later (:attr:`checks.base.CheckSpec.retry_delay`).
* **hedge**: a run still unanswered after :func:`hedge_delay` gets another run alongside it
  (the "hedged request" of Dean and Barroso's *The Tail at Scale*), as long as fewer runs
  are in flight than failures are still needed to call the check DOWN
  (:func:`another_run_helps`). A hung server then costs about one timeout, not one per
  failure. The delay is several times what the check's recent passing runs took, so a
  check that is merely slow is not doubled on every run, and never less than
  ``retry_interval`` nor more than half the timeout.

A hedge must answer a slow *target*, never a busy *agent*: a run that looks slow because
the event loop is behind would otherwise get a hedge, which adds load, which makes more
runs look slow. So the daemon skips a hedge whose timer fired more than
:data:`BUSY_LATENESS` late (the loop is behind), and the scheduler runs at most a
sixteenth of its in-flight slots as hedges at once (agent.runtime.scheduler).

These are pure functions over numbers; the daemon (agent.app.daemon) applies them.
"""

from __future__ import annotations

from collections import deque

#: A run unanswered for this many times the slowest recent passing run is unusual enough to hedge.
HEDGE_LATENCY_FACTOR = 4.0
#: How many recent passing runs' wall times :class:`RecentLatency` keeps per check.
RECENT_RUNS = 8
#: No hedge sooner than this: below it, a run's wall time is mostly the agent's own scheduling.
HEDGE_MIN_DELAY = 0.1
#: A hedge timer firing this late means the agent is busy, not the target slow: no hedge then.
BUSY_LATENESS = 0.05


class RecentLatency:
    """The wall times (seconds) of a check's last few passing runs."""

    def __init__(self, size: int = RECENT_RUNS) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        """Remember one passing run's wall time."""
        self._values.append(max(0.0, seconds))

    def slowest(self) -> float | None:
        """The slowest of the remembered runs; None before the first passing run."""
        return max(self._values) if self._values else None


def hedge_delay(retry_delay: float, timeout: float, slowest_recent: float | None) -> float:
    """Seconds a run may go unanswered before another starts alongside it.

    ``HEDGE_LATENCY_FACTOR`` times the slowest recent passing run, clamped to
    ``[max(retry_delay, HEDGE_MIN_DELAY), timeout / 2]``: the upper bound makes the second
    failure of a hang arrive within one and a half timeouts of the first run's start; the
    lower bound keeps the operator's ``retry_interval`` as the shortest gap between two
    looks, and the agent's own scheduling delays out of it. Without any passing run to
    compare with (the agent just started), half the timeout.
    """
    ceiling = timeout / 2
    wanted = ceiling if slowest_recent is None else min(ceiling, HEDGE_LATENCY_FACTOR * slowest_recent)
    return max(retry_delay, HEDGE_MIN_DELAY, wanted)


def another_run_helps(failure_threshold: int, failures: int, in_flight: int) -> bool:
    """Whether one more run in flight could bring the DOWN verdict sooner.

    ``failures`` is the check's current count of consecutive failed runs; each run in
    flight can add at most one, so more runs than failures still needed add nothing.
    """
    return in_flight < failure_threshold - failures
