"""Property tests: no sequence of results, silences, pauses and attempts makes the guardrails
allow more than a budget, or any action during a silence or a pause.

A small simulated agent drives :func:`agent.core.guardrails.admit` the way the executor will:
results advance each check's state (the real state machine), an action is recorded only
when ``admit`` allowed it, the history handed to ``admit`` is only what
:func:`~agent.core.guardrails.history_need` asks for, and a target's counters reset when its
checks have been healthy for ``reset_after``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.sections import GuardrailSettings
from agent.core.guardrails import (
    POLICIES,
    Admission,
    Member,
    PastAction,
    RunningAction,
    Silence,
    Situation,
    admit,
    counters_reset,
    history_need,
    select_history,
)
from agent.core.state import CheckState, Thresholds, advance
from agent.kernel.results import Status

CHECKS = ("a", "b", "c")
TARGET = {"a": "container web", "b": "container web", "c": "container db"}  # two checks share a target
GROUP = frozenset({"compose:shop"})
T0 = 1_800_000_000.0


@dataclass
class Agent:
    """The executor's bookkeeping, reduced to what the guardrails see."""

    settings: GuardrailSettings
    thresholds: Thresholds
    now: float = T0
    states: dict[str, CheckState] = field(default_factory=lambda: {c: CheckState(c) for c in CHECKS})
    silences: list[Silence] = field(default_factory=list)
    paused: bool = False
    history: list[PastAction] = field(default_factory=list)
    running: list[RunningAction] = field(default_factory=list)
    reset_at: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(TARGET.values()))
    admissions: int = 0
    live_allowed: int = 0

    def result(self, check: str, status: Status) -> None:
        self.states[check], _ = advance(self.states[check], status, self.now, self.thresholds)
        for target in set(TARGET.values()):
            checks = [c for c in CHECKS if TARGET[c] == target]
            if all(counters_reset(self.states[c], self.now, self.settings) for c in checks):
                self.reset_at[target] = self.now

    def situation(self, check: str, dry_run: bool, history: tuple[PastAction, ...]) -> Situation:
        state = self.states[check]
        return Situation(
            now=self.now, check=check, status=state.last_status or Status.UNKNOWN, health=state.visible,
            action="restart", target=TARGET[check], runbook="rb", runbook_dry_run=dry_run,
            groups=GROUP, members=tuple(Member(c, self.states[c].visible, GROUP, TARGET[c]) for c in CHECKS),
            history=history, reset_at=self.reset_at[TARGET[check]], running=tuple(self.running),
            silences=tuple(self.silences), paused=self.paused, pause_reason="test",
        )

    def attempt(self, check: str, dry_run: bool, long: bool) -> Admission:
        target = TARGET[check]
        need = history_need(self.settings, self.now, self.reset_at[target])
        loaded = select_history(self.history, need, target)
        admission = admit(self.settings, self.situation(check, dry_run, loaded))
        # what the executor loads is enough: the full journal gives the same verdict
        full = admit(self.settings, self.situation(check, dry_run, tuple(self.history)))
        assert (admission.allowed, admission.give_up) == (full.allowed, full.give_up)
        assert [d.policy for d in admission.decisions] == [name for name, _ in POLICIES]
        assert admission.allowed == all(d.allowed for d in admission.decisions)
        self.admissions += 1

        silenced = any(s.check == check and self.now < s.until for s in self.silences)
        if silenced or self.paused:
            assert not admission.allowed
        if self.states[check].last_status in (None, Status.UNKNOWN, Status.OK):
            assert not admission.allowed
        if any(r.target == target for r in self.running):
            assert not admission.allowed
        if admission.allowed:
            self.history.append(PastAction(self.now, target, "restart", "ok", admission.dry_run))
            if not admission.dry_run:
                self.live_allowed += 1
                if long:
                    self.running.append(RunningAction(target, "restart", self.now))
        return admission

    def run(self, events: list[tuple[Any, ...]]) -> None:
        for event in events:
            kind = event[0]
            if kind == "tick":
                self.now += event[1]
            elif kind == "result":
                self.result(event[1], event[2])
            elif kind == "silence":
                self.silences.append(Silence(event[1], self.now + event[2], "property test"))
            elif kind == "unsilence":
                self.silences = [s for s in self.silences if s.check != event[1]]
            elif kind == "pause":
                self.paused = event[1]
            elif kind == "finish":
                self.running = self.running[1:]
            elif kind == "act":
                self.attempt(event[1], event[2], event[3])

    def check_budgets(self) -> None:
        """No sliding window of ``window`` holds more than ``budget`` live actions on a target,
        and no hour holds more than ``max_per_hour`` live actions overall."""
        live = sorted((a for a in self.history if not a.dry_run), key=lambda a: a.at)
        per = self.settings.per_target
        for target in set(TARGET.values()):
            times = [a.at for a in live if a.target == target]
            for i in range(len(times) - per.budget):
                assert times[i + per.budget] - times[i] >= per.window, (target, times)
        limit = self.settings.global_.max_per_hour
        times = [a.at for a in live]
        for i in range(len(times) - limit):
            assert times[i + limit] - times[i] >= 3600.0, times


durations = st.floats(min_value=0, max_value=600, allow_nan=False)
guardrail_settings = st.builds(
    lambda budget, window, cooldown, base, factor, cap, jitter, reset, per_hour, concurrent, blast, dry:
    GuardrailSettings.model_validate({
        "dry_run": dry,
        "per_target": {"budget": budget, "window": window, "cooldown": cooldown, "reset_after": reset,
                       "backoff": {"base": base, "factor": factor, "max": base + cap, "jitter": jitter}},
        "global": {"max_per_hour": per_hour, "max_concurrent": concurrent},
        "blast_radius": {"max_unhealthy": blast},
    }),
    budget=st.integers(1, 4),
    window=st.floats(min_value=1, max_value=3600, allow_nan=False),
    cooldown=durations,
    base=st.floats(min_value=0, max_value=120, allow_nan=False),
    factor=st.floats(min_value=1, max_value=3, allow_nan=False),
    cap=durations,
    jitter=st.floats(min_value=0, max_value=0.5, allow_nan=False),
    reset=st.floats(min_value=0, max_value=3600, allow_nan=False),
    per_hour=st.integers(1, 12),
    concurrent=st.integers(1, 3),
    blast=st.sampled_from([0.5, 1.0, 1.0, 1.0]),
    dry=st.sampled_from([False, False, False, True]),
)
thresholds = st.builds(Thresholds, failure_threshold=st.integers(1, 3), success_threshold=st.integers(1, 2),
                       flap_window=st.just(600.0), flap_threshold=st.integers(2, 8))
check_names = st.sampled_from(CHECKS)
# Each round: time passes, one check reports, maybe something else happens, and (usually)
# the agent tries to act on that check. Weighted so that actions happen and budgets bite.
rounds = st.tuples(
    st.one_of(st.just(0.0), durations, durations, st.floats(min_value=0, max_value=4000)),
    check_names,
    st.sampled_from([Status.CRITICAL] * 5 + [Status.OK, Status.WARNING, Status.UNKNOWN]),
    st.one_of(
        st.none(), st.none(), st.none(), st.none(), st.none(),
        st.tuples(st.just("silence"), check_names, st.floats(min_value=1, max_value=3600)),
        st.tuples(st.just("unsilence"), check_names),
        st.tuples(st.just("pause"), st.booleans()),
        st.tuples(st.just("finish")),
    ),
    st.sampled_from([True, True, True, False]),  # act
    st.sampled_from([False, False, False, True]),  # dry-run runbook
    st.booleans(),  # long-running
)


def to_events(sequence: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    events: list[tuple[Any, ...]] = []
    for dt, check, status, extra, act, dry, long in sequence:
        events += [("tick", dt), ("result", check, status)]
        if extra is not None:
            events.append(extra)
        if act:
            events.append(("act", check, dry, long))
    return events


@settings(max_examples=300, deadline=None)
@given(guardrail_settings, thresholds, st.lists(rounds, min_size=10, max_size=150))
def test_no_sequence_exceeds_a_budget_or_acts_while_silenced_or_paused(
    settings_: GuardrailSettings, t: Thresholds, sequence: list[tuple[Any, ...]]
) -> None:
    agent = Agent(settings_, t)
    agent.run(to_events(sequence))
    agent.check_budgets()


def failing_forever(agent: Agent, attempts: int, every: float) -> list[Admission]:
    """The check stays CRITICAL; the agent tries to act every ``every`` seconds."""
    out = []
    for _ in range(attempts):
        agent.result("a", Status.CRITICAL)
        out.append(agent.attempt("a", dry_run=False, long=False))
        agent.now += every
    return out


def test_the_simulation_reaches_the_budget_and_then_gives_up() -> None:
    """Not vacuous: a target that stays broken gets exactly ``budget`` actions, then is given up."""
    agent = Agent(GuardrailSettings(), Thresholds(failure_threshold=1))
    admissions = failing_forever(agent, attempts=200, every=60.0)
    assert agent.live_allowed == 3
    assert admissions[-1].give_up
    assert [d.policy for d in admissions[-1].blocked] == ["target_budget"]
    agent.check_budgets()


def test_a_healthy_period_resets_the_counters() -> None:
    agent = Agent(GuardrailSettings(), Thresholds(failure_threshold=1, success_threshold=1))
    failing_forever(agent, attempts=60, every=60.0)
    assert agent.live_allowed == 3
    agent.result("a", Status.OK)
    agent.result("b", Status.OK)
    agent.now += 1800
    agent.result("a", Status.OK)
    assert agent.reset_at["container web"] == agent.now
    agent.now += 10
    failing_forever(agent, attempts=60, every=60.0)
    assert agent.live_allowed == 6
    agent.check_budgets()


def test_silence_and_pause_stop_everything_for_their_duration() -> None:
    agent = Agent(GuardrailSettings(), Thresholds(failure_threshold=1))
    agent.silences.append(Silence("a", T0 + 3600))
    failing_forever(agent, attempts=55, every=60.0)
    assert agent.live_allowed == 0
    agent.now = T0 + 3600
    agent.paused = True
    failing_forever(agent, attempts=10, every=60.0)
    assert agent.live_allowed == 0
    agent.paused = False
    failing_forever(agent, attempts=1, every=60.0)
    assert agent.live_allowed == 1


def test_two_checks_of_one_target_share_its_budget() -> None:
    agent = Agent(GuardrailSettings(), Thresholds(failure_threshold=1))
    for _ in range(100):
        for check in ("a", "b"):
            agent.result(check, Status.CRITICAL)
            agent.attempt(check, dry_run=False, long=False)
        agent.now += 60
    assert agent.live_allowed == 3
    agent.check_budgets()


def test_dry_run_attempts_never_spend_the_live_budget() -> None:
    agent = Agent(GuardrailSettings(), Thresholds(failure_threshold=1))
    for _ in range(50):
        agent.result("c", Status.CRITICAL)
        agent.attempt("c", dry_run=True, long=False)
        agent.now += 60
    assert agent.live_allowed == 0
    assert sum(a.dry_run for a in agent.history) == 3  # a dry-run agent shows what a live one would do
    assert agent.attempt("c", dry_run=False, long=False).allowed
