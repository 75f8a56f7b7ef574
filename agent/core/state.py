"""Health state per check: a small pure state machine over probe results.

::

            fail                 fail x failure_threshold
    OK ───────────► FAILING(n) ─────────────────────────► DOWN
     ▲                 │ pass                              │  ▲ fail
     │◄────────────────┘                                   ▼  │
     │◄───────────── RECOVERING(n) ◄───────────────────── pass
          pass x success_threshold

* A *failure* is a CRITICAL result. WARNING counts as a pass (the service answers, it is
  degraded) and UNKNOWN counts as neither: the agent could not tell, so counters and state
  stay where they were (and nothing is ever remediated on UNKNOWN).
* Flapping is an overlay, not a rung of the ladder: when the pass/fail verdict flipped more
  than ``flap_threshold`` times within ``flap_window``, the visible state is FLAPPING until
  the flips in the window fall to half that; underneath, the ladder keeps counting so the
  check leaves FLAPPING into the state its recent results deserve.

Everything here is pure: time comes in as an argument, so tests drive it with a fake clock
and the same function serves the daemon, ``paramedic check`` and restarts from the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from agent.kernel.models import Thresholds
from agent.kernel.results import Status


class Health(enum.StrEnum):
    """The ladder's rungs, plus the FLAPPING overlay."""

    OK = "OK"
    FAILING = "FAILING"
    DOWN = "DOWN"
    RECOVERING = "RECOVERING"
    FLAPPING = "FLAPPING"


@dataclass(frozen=True)
class CheckState:
    """Persisted state of one check. ``version`` increments on every write (compare-and-set)."""

    check: str
    health: Health = Health.OK
    failures: int = 0
    successes: int = 0
    since: float = 0.0
    last_status: Status | None = None
    last_result_at: float = 0.0
    flips: tuple[float, ...] = ()
    flapping: bool = False
    version: int = 0

    @property
    def visible(self) -> Health:
        """What people and the remediation layer see: FLAPPING wins over the ladder."""
        return Health.FLAPPING if self.flapping else self.health

    @property
    def label(self) -> str:
        """``FAILING(2)`` / ``RECOVERING(1)`` / ``DOWN`` for logs and tables."""
        if self.visible is Health.FAILING:
            return f"FAILING({self.failures})"
        if self.visible is Health.RECOVERING:
            return f"RECOVERING({self.successes})"
        return self.visible.value


@dataclass(frozen=True)
class Transition:
    """A change of visible state, for logs, metrics and (later) runbooks and incidents."""

    check: str
    before: Health
    after: Health
    at: float
    status: Status


def _replace(state: CheckState, **changes: Any) -> CheckState:
    """``dataclasses.replace`` for :class:`CheckState`, without its per-field machinery.

    :func:`advance` replaces three or four times per result, and the daemon advances a
    thousand results a second; this is several times faster. CheckState has no
    ``__post_init__`` or validation, so copying the fields is all ``replace`` would do.
    """
    new = object.__new__(CheckState)
    new.__dict__.update(state.__dict__, **changes)
    return new


def _is_failure(status: Status) -> bool:
    return status is Status.CRITICAL


def _ladder(state: CheckState, failed: bool, t: Thresholds, now: float) -> CheckState:
    """Move one rung. Counters count consecutive runs in the current direction."""
    h = state.health
    if failed:
        failures = state.failures + 1
        if h is Health.DOWN or h is Health.RECOVERING or failures >= t.failure_threshold:
            return _replace(state, health=Health.DOWN, failures=failures, successes=0)
        return _replace(state, health=Health.FAILING, failures=failures, successes=0)
    successes = state.successes + 1
    if h in (Health.DOWN, Health.RECOVERING):
        if successes >= t.success_threshold:
            return _replace(state, health=Health.OK, failures=0, successes=successes)
        return _replace(state, health=Health.RECOVERING, failures=0, successes=successes)
    return _replace(state, health=Health.OK, failures=0, successes=successes)


def _flap(state: CheckState, flipped: bool, t: Thresholds, now: float) -> CheckState:
    flips = tuple(x for x in state.flips if now - x <= t.flap_window) + ((now,) if flipped else ())
    flapping = state.flapping
    if not flapping and len(flips) > t.flap_threshold:
        flapping = True
    elif flapping and len(flips) <= t.flap_threshold // 2:
        flapping = False
    return _replace(state, flips=flips[-(t.flap_threshold + 1) * 2:], flapping=flapping)


def advance(state: CheckState, status: Status, now: float, t: Thresholds) -> tuple[CheckState, Transition | None]:
    """Apply one result. Returns the new state and the visible transition, if any.

    UNKNOWN records the status and time but moves nothing: the agent could not tell.
    """
    before = state.visible
    if status is Status.UNKNOWN:
        new = _replace(state, last_status=status, last_result_at=now, version=state.version + 1)
        return new, None
    failed = _is_failure(status)
    # The previous *verdict* comes from the counters (exactly one is non-zero once a check
    # has passed or failed), not from last_status: an UNKNOWN overwrites last_status and
    # would hide the flip of CRITICAL, UNKNOWN, OK.
    had_verdict = state.failures > 0 or state.successes > 0
    flipped = had_verdict and failed != (state.failures > 0)
    new = _ladder(state, failed, t, now)
    new = _flap(new, flipped, t, now)
    new = _replace(new, last_status=status, last_result_at=now, version=state.version + 1)
    if new.visible is not before:
        new = _replace(new, since=now)
        return new, Transition(state.check, before, new.visible, now, status)
    if state.since == 0.0:
        new = _replace(new, since=now)
    return new, None
