"""Retry and hedge pacing (``agent.core.pacing``): pure functions over numbers."""

from __future__ import annotations

import pytest

from agent.core.pacing import HEDGE_LATENCY_FACTOR, HEDGE_MIN_DELAY, RecentLatency, another_run_helps, hedge_delay


def test_recent_latency_keeps_the_last_runs_and_reports_the_slowest() -> None:
    recent = RecentLatency(size=3)
    assert recent.slowest() is None
    for seconds in (0.9, 0.01, 0.02, 0.03):  # the 0.9 s run falls out of the window
        recent.add(seconds)
    assert recent.slowest() == 0.03
    recent.add(-1.0)  # a clock step never makes a negative latency
    assert recent.slowest() == 0.03


@pytest.mark.parametrize(("retry", "timeout", "slowest", "expected"), [
    (0.05, 1.0, 0.002, HEDGE_MIN_DELAY),  # a fast check: the agent's own scheduling is the floor
    (0.2, 1.0, 0.002, 0.2),  # ...or the operator's retry_interval, if longer
    (0.05, 1.0, 0.1, 0.1 * HEDGE_LATENCY_FACTOR),  # several times the usual latency
    (0.05, 1.0, 0.3, 0.5),  # a slow check: never later than half the timeout
    (0.05, 1.0, None, 0.5),  # no passing run yet: half the timeout
    (1.0, 5.0, 0.01, 1.0),  # the operator's retry_interval is the shortest gap between looks
    (3.0, 2.0, 0.01, 3.0),  # a retry longer than the timeout: effectively never hedged
])
def test_hedge_delay(retry: float, timeout: float, slowest: float | None, expected: float) -> None:
    assert hedge_delay(retry, timeout, slowest) == pytest.approx(expected)


@pytest.mark.parametrize(("threshold", "failures", "in_flight", "helps"), [
    (2, 0, 1, True),  # a hung first run: a second alongside brings the second failure
    (2, 0, 2, False),  # two in flight already cover the two failures needed
    (2, 1, 1, False),  # the run in flight decides
    (3, 0, 2, True),
    (3, 1, 1, True),
    (1, 0, 1, False),  # one failure decides: nothing to gain
])
def test_another_run_helps_only_while_failures_are_still_needed(
        threshold: int, failures: int, in_flight: int, helps: bool) -> None:
    assert another_run_helps(threshold, failures, in_flight) is helps
