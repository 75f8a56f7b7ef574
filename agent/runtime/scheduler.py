"""Pace probes: each check at its own interval, first runs spread by jitter, bounded concurrency.

The scheduler knows nothing about probes; it calls ``run(name)`` (an async callable) when a
check is due and measures *lag*: how late a run started relative to when it was due
(the event loop being busy, or every in-flight slot taken). Runs are fixed-rate: the
next due time is the previous due time plus the interval, so a slow probe does not make
its check drift; a check whose previous run is still going is not started twice — its
next run starts as soon as that one ends, and the delay shows up as lag. A run that
cannot happen — a second due time passing while one rerun already waits, or the whole
scheduler more than an interval behind — is counted as skipped (``stats.skipped`` and
``on_skip``), never silently lost.

``trigger(name)`` runs a check now (Docker said its container died); a trigger while the
check is running queues exactly one more run. ``retry_soon(name, delay)`` brings a check's
next run forward (the daemon calls it after a failed run, see ``retry_interval``).
``hedge(name)`` starts one extra run of a check alongside the one in progress (the daemon
calls it when a run goes unanswered for too long, see agent.core.pacing); it takes an in-flight
slot like any run but leaves the check's schedule and phase alone.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class LagStats:
    """Scheduling lag observations since the last :meth:`drain` (seconds).

    At most ``limit`` samples are kept (the newest): the daemon never drains them (it
    reads lag from its histogram), and at a thousand runs a second an unbounded list
    grew by over 100 MiB an hour.
    """

    samples: list[float] = field(default_factory=list)
    started: int = 0
    hedged: int = 0
    late_reruns: int = 0
    skipped: int = 0
    limit: int = 10_000

    def add(self, lag: float) -> None:
        """Record one run's lag, dropping the oldest half of the samples when full."""
        self.samples.append(lag)
        if len(self.samples) > self.limit:
            del self.samples[: len(self.samples) - self.limit // 2]

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
        on_skip: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._slots = asyncio.Semaphore(max_in_flight)
        self._jitter = jitter
        self._clock = clock or asyncio.get_running_loop().time
        self._rng = rng or random.Random()
        self._on_lag = on_lag
        self._on_skip = on_skip
        self._intervals: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        self._hedges: set[asyncio.Task[None]] = set()
        self._max_hedges = max(1, max_in_flight // 16)  # hedges at once: bounded extra load (agent.core.pacing)
        # check -> (when its queued rerun was due, whether a scheduled run is in it)
        self._rerun: dict[str, tuple[float, bool]] = {}
        self._wake = _Wakeup()
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
            self._rerun.setdefault(name, (self._clock(), False))
            return
        self._schedule(name, self._clock())
        self._wake.set()

    def retry_soon(self, name: str, delay: float) -> None:
        """Run ``name`` ``delay`` seconds from now if its next run is due later (a failure's retry).

        The fixed-rate phase restarts from that run: the following one is an interval after it.
        Called while ``name`` runs (at the end of a failed run), a due time that comes before
        the run has ended queues the rerun as usual.
        """
        if name not in self._intervals:
            return
        due = self._clock() + max(0.0, delay)
        if due < self._due.get(name, float("inf")):
            self._schedule(name, due)
            self._wake.set()

    def hedge(self, name: str) -> bool:
        """Start one more run of ``name`` now, alongside any in progress; False if it cannot run.

        The extra run waits for an in-flight slot like any other and counts in ``stats.started``
        and ``stats.hedged``; it neither moves the check's next due time nor queues a rerun.
        At most a sixteenth of ``max_in_flight`` hedges run at once (at least one): beyond
        that, many checks look slow at the same time, which is the agent's load or a shared
        dependency, not something more runs would settle sooner.
        """
        if name not in self._intervals or self._stopping or len(self._hedges) >= self._max_hedges:
            return False
        task = asyncio.create_task(self._extra(name), name=f"probe:{name}:hedge")
        self._hedges.add(task)
        task.add_done_callback(self._hedges.discard)
        self.stats.hedged += 1
        return True

    def in_flight(self) -> int:
        """How many probe runs are going on right now (scheduled, queued for a slot, or hedges)."""
        return len(self._running) + len(self._hedges)

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
                await self._wake.wait(min(delay, 1.0))
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
                self._skip(missed)
                following = due + (missed + 1) * interval
            self._schedule(name, following)
            if name in self._running:
                queued = self._rerun.get(name)
                if queued is not None and queued[1]:
                    self._skip(1)  # a scheduled rerun already waits for the run in progress: this one is lost
                else:  # the rerun (or a trigger's, which it joins) starts when the run in progress ends
                    self._rerun[name] = (queued[0] if queued is not None else due, True)
                continue
            self._running[name] = asyncio.create_task(self._one(name, due), name=f"probe:{name}")

    def _skip(self, runs: int) -> None:
        self.stats.skipped += runs
        if self._on_skip is not None and runs:
            self._on_skip(runs)

    async def _one(self, name: str, due: float) -> None:
        try:
            while True:
                async with self._slots:
                    if self._stopping:
                        break  # queued for a slot when stop() came: never started, so not in flight
                    lag = max(0.0, self._clock() - due)
                    self.stats.add(lag)
                    self.stats.started += 1
                    if self._on_lag is not None:
                        self._on_lag(lag)
                    await self._run(name)
                if name not in self._rerun or self._stopping or name not in self._intervals:
                    break
                due, _ = self._rerun.pop(name)  # lag counts from when the rerun was due, not from now
                self.stats.late_reruns += 1
        finally:
            self._running.pop(name, None)
            self._rerun.pop(name, None)

    async def _extra(self, name: str) -> None:
        async with self._slots:
            if self._stopping or name not in self._intervals:
                return
            self.stats.started += 1
            await self._run(name)

    def stop(self) -> None:
        """Stop dispatching; runs in flight are allowed to finish (or time out)."""
        self._stopping = True
        self._wake.set()

    async def drain(self) -> None:
        """Wait for every in-flight run to end."""
        tasks = [*self._running.values(), *self._hedges]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _Wakeup:
    """``asyncio.Event`` for one waiter, with a timed wait that costs a future and a timer.

    The dispatch loop sleeps until the next due time about as often as probes start (a
    thousand times a second with a thousand checks at 1 s); ``wait_for(event.wait())``
    creates a task each time, which alone was several percent of a core.
    """

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self, timeout: float) -> None:
        """Return when :meth:`set` is called or ``timeout`` seconds pass, whichever is first."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
