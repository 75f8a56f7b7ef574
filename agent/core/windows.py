"""Maintenance windows: which are active at ``now``, and which checks they cover.

A window (``maintenance:`` in config, :class:`agent.config.sections.MaintenanceWindow`) starts at
every firing of a 5-field ``cron`` expression read in its ``timezone`` and lasts
``duration`` of real (elapsed) time. It is *active* at ``now`` when some firing ``t``
satisfies ``t <= now < t + duration``; the latest firing at or before ``now`` decides,
because it is the one that ends last.

Daylight-saving time follows croniter: a firing inside a skipped hour (02:30 on the
spring-forward night in Europe/Berlin) happens at the first valid time after it (03:00);
a firing inside the hour that repeats (autumn) happens at both occurrences, so that night
the window runs from the first firing to the end of the second (one hour longer).

Pure: time comes in as ``now`` (epoch seconds); nothing reads a clock. The cron and time
zone *validation* of the config lives in :mod:`agent.config.windows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from agent.config.sections import MaintenanceWindow
from agent.kernel.durations import format_duration


@dataclass(frozen=True)
class ActiveWindow:
    """A maintenance window that is active now: which one, since when, until when."""

    index: int
    window: MaintenanceWindow
    started_at: float
    ends_at: float

    def applies_to(self, check: str, tags: Iterable[str] = ()) -> bool:
        """Whether the window covers ``check``: no scope covers all; else named or tagged."""
        w = self.window
        if not w.checks and not w.tags:
            return True
        return check in w.checks or not set(w.tags).isdisjoint(tags)

    def describe(self) -> str:
        """``maintenance[0] (0 2 * * SUN for 2h, Europe/Berlin)``."""
        w = self.window
        return f"maintenance[{self.index}] ({w.cron} for {format_duration(w.duration)}, {w.timezone})"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def last_start(window: MaintenanceWindow, now: float) -> float | None:
    """The latest firing of ``window.cron`` at or before ``now`` (epoch seconds), or None."""
    from croniter import croniter

    # croniter's get_prev is strictly before its start: start a microsecond after ``now`` so
    # that a firing exactly at ``now`` counts, and step back if rounding put one after it.
    start = (datetime.fromtimestamp(now, UTC) + timedelta(microseconds=1)).astimezone(_zone(window.timezone))
    it = croniter(window.cron, start)
    try:
        for _ in range(3):
            fired = float(it.get_prev(datetime).timestamp())
            if fired <= now:
                return fired
    except Exception:  # no firing in croniter's bounded search of the past
        return None
    return None


def active_windows(windows: Sequence[MaintenanceWindow], now: float) -> tuple[ActiveWindow, ...]:
    """The windows active at ``now``, with their start and end (in config order)."""
    active = []
    for index, window in enumerate(windows):
        started = last_start(window, now)
        if started is not None and started <= now < started + window.duration:
            active.append(ActiveWindow(index, window, started, started + window.duration))
    return tuple(active)


def covering(active: Iterable[ActiveWindow], check: str, tags: Iterable[str] = ()) -> tuple[ActiveWindow, ...]:
    """The active windows that cover ``check`` (by name, tag, or an unscoped window)."""
    tag_list = tuple(tags)
    return tuple(a for a in active if a.applies_to(check, tag_list))


__all__ = ["ActiveWindow", "active_windows", "covering", "last_start"]
