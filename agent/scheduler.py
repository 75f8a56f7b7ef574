"""Pace probes: each check at its own interval, first runs spread by jitter, bounded concurrency.

The scheduler knows nothing about probes; it calls ``run(name)`` (an async callable) when a
check is due and measures *lag*: how late a run started relative to when it was due
(the event loop being busy, or every in-flight slot taken). Runs are fixed-rate: the
next due time is the previous due time plus the interval, so a slow probe does not make
its check drift; a check whose previous run is still going is not started twice — its
next run starts as soon as that one ends, and the delay shows up as lag.

``trigger(name)`` runs a check now (Docker said its container died); a trigger while the
check is running queues exactly one more run.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class LagStats:
    """Scheduling lag observations since the last :meth:`drain` (seconds)."""

    samples: list[float] = field(default_factory=list)
    started: int = 0
    late_reruns: int = 0
    skipped: int = 0

    def drain(self) -> list[float]:
        """Return and clear the collected lag samples."""
        out, self.samples = self.samples, []
        return out


class Scheduler:
    """Runs ``run(name)`` for every check at its interval until ``stop()``.

    ``clock`` is the loop's monotonic clock by default; ``rng`` drives first-run jitter.
    """

    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        max_in_flight: int = 256,
        jitter: float = 10.0,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._run = run
        self._slots = asyncio.Semaphore(max_in_flight)
        self._jitter = jitter
        self._clock = clock or asyncio.get_running_loop().time
        self._rng = rng or random.Random()
        self._on_lag = on_lag
        self._intervals: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        self._rerun: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.last_tick = self._clock()
        self.stats = LagStats()

    # ------------------------------------------------------------------ configuration

    def set_checks(self, intervals: Mapping[str, float]) -> None:
        """Replace the set of checks. Unchanged checks keep their phase; new ones get jitter."""
        now = self._clock()
        old = self._intervals
        self._intervals = dict(intervals)
        for name, interval in intervals.items():
            if name in old and old[name] == interval and name in self._due:
                continue
            spread = self._rng.uniform(0, min(self._jitter, interval)) if self._jitter > 0 else 0.0
            self._schedule(name, now + spread)
        for name in set(self._due) - set(intervals):
            del self._due[name]
        self._wake.set()

    def _schedule(self, name: str, due: float) -> None:
        self._due[name] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, name))

    def trigger(self, name: str) -> None:
        """Run ``name`` as soon as possible (queued once if it is running now)."""
        if name not in self._intervals:
            return
        if name in self._running:
            self._rerun.add(name)
            return
        self._schedule(name, self._clock())
        self._wake.set()

    def in_flight(self) -> int:
        """How many probe runs are going on right now."""
        return len(self._running)

    # ------------------------------------------------------------------ the loop

    async def run_forever(self) -> None:
        """Dispatch due checks until :meth:`stop`; then wait for in-flight runs to end."""
        while not self._stopping:
            now = self._clock()
            self.last_tick = now
            self._dispatch_due(now)
            delay = self._heap[0][0] - now if self._heap else 1.0
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 1.0))
            else:
                await asyncio.sleep(0)
        await self.drain()

    def _dispatch_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            due, _, name = heapq.heappop(self._heap)
            if self._due.get(name) != due:
                continue  # superseded by a reschedule or removed
            interval = self._intervals[name]
            following = due + interval
            if following <= now:  # more than a whole interval behind: skip ahead, and say so
                missed = int((now - due) // interval)
                self.stats.skipped += missed
                following = due + (missed + 1) * interval
            self._schedule(name, following)
            if name in self._running:
                self._rerun.add(name)
                continue
            self._running[name] = asyncio.create_task(self._one(name, due), name=f"probe:{name}")

    async def _one(self, name: str, due: float) -> None:
        try:
            while True:
                async with self._slots:
                    lag = max(0.0, self._clock() - due)
                    self.stats.samples.append(lag)
                    self.stats.started += 1
                    if self._on_lag is not None:
                        self._on_lag(lag)
                    await self._run(name)
                if name not in self._rerun or self._stopping or name not in self._intervals:
                    break
                self._rerun.discard(name)
                self.stats.late_reruns += 1
                due = self._clock()
        finally:
            self._running.pop(name, None)

    def stop(self) -> None:
        """Stop dispatching; runs in flight are allowed to finish (or time out)."""
        self._stopping = True
        self._wake.set()

    async def drain(self) -> None:
        """Wait for every in-flight run to end."""
        tasks = list(self._running.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
