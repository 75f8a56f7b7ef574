"""The scheduler (``agent.runtime.scheduler``) on a real asyncio loop with short intervals.

The probe is a fake ``run(name)`` that records when it started and ended and can be
made slow. Bounds are loose enough for a loaded two-core machine and tight enough that
a broken feature (half the runs, a reset phase, a second concurrent run) fails.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agent.runtime.scheduler import Scheduler


@dataclass
class Recorder:
    """A fake probe run: records start/end times per check, sleeps ``durations[name]``."""

    loop: asyncio.AbstractEventLoop
    durations: dict[str, float] = field(default_factory=dict)
    starts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    active: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_active_per_check: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    active_total: int = 0
    max_active_total: int = 0
    t0: float = 0.0

    def __post_init__(self) -> None:
        self.t0 = self.loop.time()

    def now(self) -> float:
        return self.loop.time() - self.t0

    async def __call__(self, name: str) -> None:
        self.starts[name].append(self.now())
        self.active[name] += 1
        self.active_total += 1
        self.max_active_per_check[name] = max(self.max_active_per_check[name], self.active[name])
        self.max_active_total = max(self.max_active_total, self.active_total)
        try:
            await asyncio.sleep(self.durations.get(name, 0.0))
        finally:
            self.active[name] -= 1
            self.active_total -= 1
            self.ends[name].append(self.now())


def scenario(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(asyncio.get_running_loop())

    asyncio.run(asyncio.wait_for(main(), timeout=20))


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    """Run the scheduler for ``seconds``, then stop it and wait for it to finish."""
    task = asyncio.create_task(scheduler.run_forever())
    await asyncio.sleep(seconds)
    scheduler.stop()
    await asyncio.wait_for(task, timeout=5)


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.create_task(coro)


# --------------------------------------------------------------------------- pacing


def test_every_check_runs_at_its_own_interval() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=0)
        s.set_checks({"a": 0.1, "b": 0.1, "slow-interval": 0.25})
        await run_for(s, 1.0)
        for name in ("a", "b"):
            assert 8 <= len(rec.starts[name]) <= 12, rec.starts[name]
        assert 3 <= len(rec.starts["slow-interval"]) <= 5, rec.starts["slow-interval"]
        # fixed rate: the k-th run is due at k * interval from the first, no drift accumulates
        starts = rec.starts["a"]
        assert abs((starts[-1] - starts[0]) - (len(starts) - 1) * 0.1) < 0.08, starts
        assert s.stats.started == sum(len(v) for v in rec.starts.values())
        assert s.stats.skipped == 0

    scenario(body)


def test_first_runs_are_spread_by_seeded_jitter() -> None:
    names = [f"c{i:02d}" for i in range(20)]

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=0.5, rng=random.Random(7))
        s.set_checks(dict.fromkeys(names, 60.0))
        await run_for(s, 0.7)
        offsets = {n: rec.starts[n][0] for n in names}
        assert all(len(rec.starts[n]) == 1 for n in names)
        assert all(0.0 <= t <= 0.6 for t in offsets.values())
        assert max(offsets.values()) - min(offsets.values()) > 0.25  # not a thundering herd
        assert len({round(t, 3) for t in offsets.values()}) >= 15
        # the seeded generator decides: same seed, same spread
        expected_rng = random.Random(7)
        expected = {n: expected_rng.uniform(0, 0.5) for n in names}
        assert sorted(names, key=offsets.__getitem__) == sorted(names, key=expected.__getitem__)
        for n in names:
            assert abs(offsets[n] - expected[n]) < 0.1, (n, offsets[n], expected[n])

    scenario(body)


def test_jitter_never_delays_a_first_run_beyond_one_interval() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=30.0, rng=random.Random(1))
        s.set_checks({f"c{i}": 0.2 for i in range(10)})
        await run_for(s, 0.5)
        assert all(rec.starts[f"c{i}"] and rec.starts[f"c{i}"][0] <= 0.3 for i in range(10)), dict(rec.starts)

    scenario(body)


def test_a_slow_check_never_runs_concurrently_with_itself_and_its_missed_run_follows_at_once() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"slow": 0.35})
        s = Scheduler(rec, jitter=0)
        s.set_checks({"slow": 0.1, "fast": 0.1})
        await run_for(s, 1.0)
        assert rec.max_active_per_check["slow"] == 1
        assert len(rec.starts["slow"]) >= 2
        # each rerun starts as soon as the previous run ended (the due time passed meanwhile)
        for end, next_start in zip(rec.ends["slow"], rec.starts["slow"][1:], strict=False):
            assert 0 <= next_start - end < 0.08, (end, next_start)
        assert s.stats.late_reruns >= 1
        # the slow check holds up nobody else
        assert len(rec.starts["fast"]) >= 8

    scenario(body)


# --------------------------------------------------------------------------- trigger


def test_trigger_runs_a_check_immediately() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 60.0, "other": 60.0})
        task = start(s.run_forever())
        await asyncio.sleep(0.2)
        assert len(rec.starts["web"]) == 1  # the first run, at start
        fired = rec.now()
        s.trigger("web")
        s.trigger("not-configured")  # ignored
        await asyncio.sleep(0.2)
        s.stop()
        await task
        assert len(rec.starts["web"]) == 2
        assert rec.starts["web"][1] - fired < 0.1  # not at the 60 s interval
        assert len(rec.starts["other"]) == 1
        assert "not-configured" not in rec.starts

    scenario(body)


def test_trigger_while_running_queues_exactly_one_rerun() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"web": 0.3})
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 60.0})
        task = start(s.run_forever())
        await asyncio.sleep(0.1)
        assert rec.active["web"] == 1
        for _ in range(3):
            s.trigger("web")
        await asyncio.sleep(0.9)  # first run ends at ~0.3, the rerun at ~0.6, then nothing
        s.stop()
        await task
        assert len(rec.starts["web"]) == 2
        assert rec.starts["web"][1] - rec.ends["web"][0] < 0.1
        assert rec.max_active_per_check["web"] == 1

    scenario(body)


def test_retry_soon_brings_the_next_run_forward_and_restarts_the_phase_from_it() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 0.6, "other": 60.0})
        task = start(s.run_forever())
        await asyncio.sleep(0.1)
        asked = rec.now()
        s.retry_soon("web", 0.1)
        s.retry_soon("web", 0.5)  # later than the one already due: changes nothing
        s.retry_soon("not-configured", 0.0)  # ignored
        await asyncio.sleep(0.85)  # the retry at ~0.2, the next run an interval after it (~0.8)
        s.stop()
        await task
        starts = rec.starts["web"]
        assert len(starts) == 3, starts
        assert 0.05 <= starts[1] - asked < 0.25  # not at the 0.6 s interval
        assert 0.5 < starts[2] - starts[1] < 0.75  # fixed rate from the retry, not from the first run
        assert len(rec.starts["other"]) == 1
        assert "not-configured" not in rec.starts

    scenario(body)


def test_retry_soon_never_postpones_a_run_that_is_due_sooner() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 0.3})
        task = start(s.run_forever())
        await asyncio.sleep(0.05)
        s.retry_soon("web", 5.0)
        await asyncio.sleep(0.4)
        s.stop()
        await task
        assert len(rec.starts["web"]) == 2  # at start and at 0.3 s, as if retry_soon had not been called

    scenario(body)


def test_retry_soon_during_the_run_queues_one_rerun_after_it() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"web": 0.3})
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 60.0})
        task = start(s.run_forever())
        await asyncio.sleep(0.1)
        s.retry_soon("web", 0.0)  # due while the first run goes on
        await asyncio.sleep(0.7)
        s.stop()
        await task
        assert len(rec.starts["web"]) == 2
        assert rec.starts["web"][1] - rec.ends["web"][0] < 0.1
        assert rec.max_active_per_check["web"] == 1

    scenario(body)


def test_hedge_runs_alongside_the_run_in_progress_without_moving_the_schedule() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"web": 0.4})
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 0.8})
        task = start(s.run_forever())
        await asyncio.sleep(0.1)
        assert s.hedge("web")
        assert not s.hedge("not-configured")
        assert s.in_flight() == 2
        await asyncio.sleep(0.9)  # the scheduled runs at 0 and 0.8 s, the hedge at 0.1 s
        s.stop()
        await task
        starts = rec.starts["web"]
        assert len(starts) == 3, starts
        assert 0.05 < starts[1] < 0.2
        assert 0.75 < starts[2] < 0.95
        assert rec.max_active_per_check["web"] == 2
        assert (s.stats.hedged, s.stats.started) == (1, 3)
        assert not s.hedge("web")  # stopped: nothing new starts

    scenario(body)


def test_hedges_at_once_are_capped_at_a_sixteenth_of_the_slots() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations=dict.fromkeys(("a", "b", "c"), 0.3))
        s = Scheduler(rec, max_in_flight=32, jitter=0)  # room for two hedges at once
        s.set_checks(dict.fromkeys(("a", "b", "c"), 60.0))
        task = start(s.run_forever())
        await asyncio.sleep(0.05)
        assert [s.hedge("a"), s.hedge("b"), s.hedge("c")] == [True, True, False]
        await asyncio.sleep(0.4)  # the two hedges ended: room again
        assert s.hedge("c")
        s.stop()
        await task
        assert s.stats.hedged == 3

    scenario(body)


def test_drain_waits_for_hedged_runs_too() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"web": 0.3})
        s = Scheduler(rec, jitter=0)
        s.set_checks({"web": 60.0})
        task = start(s.run_forever())
        await asyncio.sleep(0.05)
        s.hedge("web")
        await asyncio.sleep(0.05)
        s.stop()
        await task
        assert len(rec.ends["web"]) == 2  # both ended before run_forever returned
        assert s.in_flight() == 0

    scenario(body)


# --------------------------------------------------------------------------- concurrency


def test_max_in_flight_bounds_concurrency() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        names = [f"c{i}" for i in range(6)]
        rec = Recorder(loop, durations=dict.fromkeys(names, 0.15))
        lags: list[float] = []
        s = Scheduler(rec, max_in_flight=2, jitter=0, on_lag=lags.append)
        s.set_checks(dict.fromkeys(names, 60.0))
        await run_for(s, 0.8)
        assert rec.max_active_total == 2
        assert all(len(rec.starts[n]) == 1 for n in names)  # everyone got a turn
        # the queue shows up as lag: the last pair waited for two full rounds
        assert len(lags) == 6
        assert max(lags) >= 0.25
        assert sorted(s.stats.drain()) == sorted(lags)
        assert s.stats.samples == []

    scenario(body)


# --------------------------------------------------------------------------- reconfiguration


def test_set_checks_keeps_the_phase_of_unchanged_checks_and_drops_removed_ones() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        s = Scheduler(rec, jitter=0)
        s.set_checks({"keep": 0.3, "drop": 0.3, "retime": 0.3})
        task = start(s.run_forever())
        await asyncio.sleep(0.45)  # keep ran at ~0 and ~0.3; its next run is due at ~0.6
        changed_at = rec.now()
        s.set_checks({"keep": 0.3, "retime": 0.1, "new": 0.3})
        await asyncio.sleep(0.6)  # until ~1.05: keep runs at ~0.6 and ~0.9 (a reset phase: ~0.45, ~0.75)
        s.stop()
        await task
        keep = rec.starts["keep"]
        first = keep[0]
        assert len(keep) == 4, keep  # ~0, 0.3, 0.6, 0.9
        for k, t in enumerate(keep):
            assert abs((t - first) - 0.3 * k) < 0.08, keep  # not restarted at changed_at
        assert not [t for t in rec.starts["drop"] if t > changed_at]
        assert rec.starts["new"]
        assert rec.starts["new"][0] - changed_at < 0.1
        after = [t for t in rec.starts["retime"] if t > changed_at]
        assert len(after) >= 4  # now every 0.1 s

    scenario(body)


def test_a_check_removed_while_running_is_not_rerun() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"gone": 0.3})
        s = Scheduler(rec, jitter=0)
        s.set_checks({"gone": 0.1})
        task = start(s.run_forever())
        await asyncio.sleep(0.15)  # running, and already overdue: a rerun is queued
        s.set_checks({})
        await asyncio.sleep(0.4)
        s.stop()
        await task
        assert len(rec.starts["gone"]) == 1

    scenario(body)


# --------------------------------------------------------------------------- failures and stop


def test_a_run_that_raises_does_not_stop_the_scheduler_or_its_check() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop)
        calls: dict[str, int] = defaultdict(int)

        async def run(name: str) -> None:
            calls[name] += 1
            if name == "broken":
                raise RuntimeError("probe bug")
            await rec(name)

        loop.set_exception_handler(lambda _loop, _ctx: None)  # the failed task is reported, expected
        s = Scheduler(run, jitter=0)
        s.set_checks({"broken": 0.1, "fine": 0.1})
        await run_for(s, 0.6)
        assert calls["broken"] >= 4
        assert len(rec.starts["fine"]) >= 4

    scenario(body)


def test_stop_lets_in_flight_runs_finish_and_starts_nothing_new() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        rec = Recorder(loop, durations={"a": 0.3, "b": 0.3})
        s = Scheduler(rec, max_in_flight=1, jitter=0)
        s.set_checks({"a": 0.1, "b": 0.1})
        task = start(s.run_forever())
        await asyncio.sleep(0.1)
        assert rec.active_total == 1  # one runs, the other waits for the single slot
        stopped_at = rec.now()
        s.stop()
        await asyncio.wait_for(task, timeout=5)
        # the in-flight run was allowed to finish (not cancelled)...
        assert len(rec.ends["a"]) + len(rec.ends["b"]) == 1
        assert rec.active_total == 0
        # ...and nothing else started after stop(): not the queued check, not a rerun
        assert all(t < stopped_at for v in rec.starts.values() for t in v)
        assert rec.now() - stopped_at < 0.3

    scenario(body)
