"""The health state machine (``agent.core.state``): pure, driven with explicit times."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.state import CheckState, Health, Thresholds, Transition, advance
from agent.kernel.results import Status

OK, WARN, CRIT, UNK = Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN
T = Thresholds(failure_threshold=3, success_threshold=2, flap_window=600.0, flap_threshold=6)
NO_FLAP = Thresholds(failure_threshold=3, success_threshold=2, flap_window=600.0, flap_threshold=10_000)


def feed(
    statuses: Iterable[Status], t: Thresholds = T, state: CheckState | None = None, start: float = 1000.0,
    step: float = 1.0,
) -> tuple[CheckState, list[Transition]]:
    """Apply ``statuses`` one per ``step`` seconds; return the final state and every transition."""
    state = state or CheckState("c")
    transitions: list[Transition] = []
    now = start
    for status in statuses:
        state, change = advance(state, status, now, t)
        if change is not None:
            transitions.append(change)
        now += step
    return state, transitions


def moves(transitions: Sequence[Transition]) -> list[tuple[Health, Health]]:
    return [(t.before, t.after) for t in transitions]


# --------------------------------------------------------------------------- thresholds


def test_failures_below_threshold_are_failing_with_a_count() -> None:
    state, transitions = feed([CRIT, CRIT], NO_FLAP)
    assert state.visible is Health.FAILING
    assert state.failures == 2
    assert state.label == "FAILING(2)"
    # FAILING(1) -> FAILING(2) is not a visible change: one transition only
    assert moves(transitions) == [(Health.OK, Health.FAILING)]


def test_down_exactly_at_failure_threshold() -> None:
    state, transitions = feed([CRIT] * 3, NO_FLAP)
    assert state.visible is Health.DOWN
    assert state.label == "DOWN"
    assert moves(transitions) == [(Health.OK, Health.FAILING), (Health.FAILING, Health.DOWN)]
    assert transitions[-1].at == 1002.0
    assert transitions[-1].status is CRIT


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_down_at_configured_threshold_not_one_before(threshold: int) -> None:
    t = Thresholds(failure_threshold=threshold, success_threshold=2, flap_threshold=10_000)
    before, _ = feed([CRIT] * (threshold - 1), t)
    assert before.visible is not Health.DOWN
    after, _ = feed([CRIT], t, state=before, start=5000.0)
    assert after.visible is Health.DOWN


def test_a_pass_while_failing_resets_the_count() -> None:
    state, transitions = feed([CRIT, CRIT, OK, CRIT, CRIT], NO_FLAP)
    assert state.visible is Health.FAILING
    assert state.failures == 2
    assert Health.DOWN not in [t.after for t in transitions]


def test_recovery_needs_success_threshold_passes() -> None:
    down, _ = feed([CRIT] * 3, NO_FLAP)
    one, t1 = feed([OK], NO_FLAP, state=down, start=2000.0)
    assert one.visible is Health.RECOVERING
    assert one.label == "RECOVERING(1)"
    assert moves(t1) == [(Health.DOWN, Health.RECOVERING)]
    two, t2 = feed([OK], NO_FLAP, state=one, start=2001.0)
    assert two.visible is Health.OK
    assert moves(t2) == [(Health.RECOVERING, Health.OK)]
    assert two.failures == 0


def test_success_threshold_one_recovers_straight_to_ok() -> None:
    t = Thresholds(failure_threshold=3, success_threshold=1, flap_threshold=10_000)
    down, _ = feed([CRIT] * 3, t)
    state, transitions = feed([OK], t, state=down, start=2000.0)
    assert moves(transitions) == [(Health.DOWN, Health.OK)]
    assert state.visible is Health.OK


def test_a_failure_while_recovering_goes_straight_back_down() -> None:
    recovering, _ = feed([CRIT, CRIT, CRIT, OK], NO_FLAP)
    assert recovering.visible is Health.RECOVERING
    state, transitions = feed([CRIT], NO_FLAP, state=recovering, start=3000.0)
    assert state.visible is Health.DOWN  # one failure, not failure_threshold more
    assert moves(transitions) == [(Health.RECOVERING, Health.DOWN)]
    assert state.successes == 0


def test_a_failure_while_down_stays_down_without_a_transition() -> None:
    down, _ = feed([CRIT] * 3, NO_FLAP)
    state, transitions = feed([CRIT] * 5, NO_FLAP, state=down, start=2000.0)
    assert state.visible is Health.DOWN
    assert state.failures == 8
    assert transitions == []


def test_warning_counts_as_a_pass() -> None:
    failing, _ = feed([CRIT, CRIT], NO_FLAP)
    state, transitions = feed([WARN], NO_FLAP, state=failing, start=2000.0)
    assert state.visible is Health.OK
    assert moves(transitions) == [(Health.FAILING, Health.OK)]
    down, _ = feed([CRIT] * 3, NO_FLAP)
    state, _ = feed([WARN, WARN], NO_FLAP, state=down, start=3000.0)
    assert state.visible is Health.OK
    state, transitions = feed([WARN] * 4, NO_FLAP)
    assert state.visible is Health.OK
    assert transitions == []


@pytest.mark.parametrize("prefix", [[], [CRIT], [CRIT, CRIT], [CRIT] * 3, [CRIT, CRIT, CRIT, OK]])
def test_unknown_moves_nothing(prefix: list[Status]) -> None:
    before, _ = feed(prefix, NO_FLAP)
    after, transitions = feed([UNK] * 4, NO_FLAP, state=before, start=5000.0)
    assert transitions == []
    assert (after.health, after.failures, after.successes, after.since, after.flips, after.flapping) == (
        before.health, before.failures, before.successes, before.since, before.flips, before.flapping
    )
    assert after.last_status is UNK
    assert after.last_result_at == 5003.0
    assert after.version == before.version + 4


def test_unknown_does_not_break_a_run_of_failures() -> None:
    state, _ = feed([CRIT, UNK, CRIT, UNK, UNK, CRIT], NO_FLAP)
    assert state.visible is Health.DOWN


def test_unknown_does_not_break_a_run_of_passes() -> None:
    down, _ = feed([CRIT] * 3, NO_FLAP)
    state, _ = feed([OK, UNK, OK], NO_FLAP, state=down, start=2000.0)
    assert state.visible is Health.OK


def test_version_increments_on_every_result() -> None:
    state, _ = feed([OK, CRIT, UNK, WARN, CRIT])
    assert state.version == 5


# --------------------------------------------------------------------------- transitions and since


def test_transition_is_reported_once_with_before_and_after() -> None:
    state = CheckState("db")
    seen: list[Transition] = []
    for i, status in enumerate([CRIT, CRIT, CRIT, CRIT, CRIT, OK, OK, OK, OK]):
        state, change = advance(state, status, 100.0 + i, NO_FLAP)
        if change is not None:
            seen.append(change)
    assert [(t.check, t.before, t.after, t.at, t.status) for t in seen] == [
        ("db", Health.OK, Health.FAILING, 100.0, CRIT),
        ("db", Health.FAILING, Health.DOWN, 102.0, CRIT),
        ("db", Health.DOWN, Health.RECOVERING, 105.0, OK),
        ("db", Health.RECOVERING, Health.OK, 106.0, OK),
    ]


def test_since_is_set_by_the_first_result_and_moves_only_on_visible_change() -> None:
    state, _ = feed([OK], NO_FLAP, start=50.0)
    assert state.since == 50.0
    state, _ = feed([OK, WARN, OK], NO_FLAP, state=state, start=60.0)
    assert state.since == 50.0  # still OK: no change
    state, _ = feed([CRIT], NO_FLAP, state=state, start=70.0)
    assert state.since == 70.0  # OK -> FAILING
    state, _ = feed([CRIT], NO_FLAP, state=state, start=71.0)
    assert state.since == 70.0  # FAILING(1) -> FAILING(2) is the same visible state
    assert state.label == "FAILING(2)"
    state, _ = feed([CRIT], NO_FLAP, state=state, start=72.0)
    assert state.since == 72.0  # -> DOWN
    state, _ = feed([CRIT, UNK, CRIT], NO_FLAP, state=state, start=80.0)
    assert state.since == 72.0  # still DOWN


def test_the_first_result_being_unknown_sets_no_since() -> None:
    state, transitions = feed([UNK], NO_FLAP, start=50.0)
    assert transitions == []
    assert state.since == 0.0


# --------------------------------------------------------------------------- flapping


FLAP = Thresholds(failure_threshold=3, success_threshold=2, flap_window=100.0, flap_threshold=4)


def alternate(n: int, first: Status = CRIT) -> list[Status]:
    other = OK if first is CRIT else CRIT
    return [first if i % 2 == 0 else other for i in range(n)]


def test_flips_up_to_the_threshold_are_not_flapping() -> None:
    # 5 results = 4 flips, threshold 4: "more than" is needed
    state, transitions = feed(alternate(5), FLAP)
    assert len(state.flips) == 4
    assert not state.flapping
    assert Health.FLAPPING not in [t.after for t in transitions]


def test_more_flips_than_the_threshold_within_the_window_is_flapping() -> None:
    state, transitions = feed(alternate(6), FLAP, start=1000.0)
    assert state.flapping
    assert state.visible is Health.FLAPPING
    assert state.label == "FLAPPING"
    assert transitions[-1].after is Health.FLAPPING
    assert transitions[-1].at == 1005.0
    assert state.since == 1005.0
    assert [t.after for t in transitions].count(Health.FLAPPING) == 1


def test_flips_spread_wider_than_the_window_are_not_flapping() -> None:
    # one flip every 30 s: at most 4 flips fit in a 100 s window
    state, transitions = feed(alternate(20), FLAP, step=30.0)
    assert not state.flapping
    assert Health.FLAPPING not in [t.after for t in transitions]


def test_unknown_between_results_does_not_hide_flips() -> None:
    # CRIT, UNKNOWN, OK, UNKNOWN, CRIT, ...: every verdict still flips the last verdict
    statuses: list[Status] = []
    for status in alternate(6):
        statuses += [status, UNK]
    state, _ = feed(statuses, FLAP)
    assert len(state.flips) == 5
    assert state.flapping


def test_flapping_ends_when_flips_in_the_window_fall_to_half() -> None:
    flapping, _ = feed(alternate(6), FLAP, start=1000.0, step=1.0)  # flips at 1001..1005, ends on OK
    assert flapping.flapping
    assert flapping.last_status is OK
    # steady passes (no new flips); the old flips age out of the 100 s window one by one
    state = flapping
    # at 1102.5 the flips at 1001 and 1002 have expired: 3 remain (> 4 // 2): still flapping
    state, transitions = advance(state, OK, 1102.5, FLAP)
    assert state.flapping
    assert transitions is None
    assert len(state.flips) == 3
    # at 1103.5 the flip at 1003 expires too: 2 remain (== half): flapping ends
    state, change = advance(state, OK, 1103.5, FLAP)
    assert not state.flapping
    assert change is not None
    assert (change.before, change.after) == (Health.FLAPPING, Health.OK)
    assert state.since == 1103.5


def test_the_ladder_keeps_counting_underneath_flapping() -> None:
    flapping, _ = feed(alternate(6), FLAP, start=1000.0)  # ends on OK, flapping
    state, transitions = feed([CRIT] * 3, FLAP, state=flapping, start=1006.0)
    assert state.flapping
    assert state.health is Health.DOWN  # underneath
    assert state.visible is Health.FLAPPING
    assert transitions == []  # no visible change while flapping
    # long after, the flips expire: the check leaves FLAPPING into the state it earned
    state, change = advance(state, CRIT, 2000.0, FLAP)
    assert change is not None
    assert (change.before, change.after) == (Health.FLAPPING, Health.DOWN)


def test_old_flips_expire_out_of_the_window() -> None:
    state, _ = feed(alternate(4), FLAP, start=1000.0)  # 3 flips at 1001..1003
    assert state.flips == (1001.0, 1002.0, 1003.0)
    # 3 more flips after the first ones left the window: only the new ones count
    state, _ = feed(alternate(3), FLAP, state=state, start=1200.0)  # CRIT after OK: 3 flips
    assert state.flips == (1200.0, 1201.0, 1202.0)
    assert not state.flapping


# --------------------------------------------------------------------------- properties

statuses = st.lists(st.sampled_from([OK, WARN, CRIT, UNK]), max_size=60)
thresholds = st.builds(
    Thresholds,
    failure_threshold=st.integers(1, 5),
    success_threshold=st.integers(1, 4),
    flap_window=st.sampled_from([5.0, 30.0, 600.0]),
    flap_threshold=st.integers(2, 8),
)


@settings(max_examples=400, deadline=None)
@given(seq=statuses, t=thresholds)
def test_ladder_invariants(seq: list[Status], t: Thresholds) -> None:
    """Whatever the sequence, the ladder state is explained by the recent verdicts.

    ``verdicts`` are the non-UNKNOWN results as failed (True) / passed (False).
    """
    state, transitions = feed(seq, t)
    verdicts = [s is CRIT for s in seq if s is not UNK]
    last_f = verdicts[-t.failure_threshold:]
    last_s = verdicts[-t.success_threshold:]
    if len(last_f) == t.failure_threshold and all(last_f):
        assert state.health is Health.DOWN
    if len(last_s) == t.success_threshold and not any(last_s):
        assert state.health is Health.OK
    if state.health is Health.DOWN:
        # DOWN is entered and kept only by failures; a pass always leaves it
        assert verdicts[-1]
        assert len(verdicts) >= t.failure_threshold
        assert any(all(verdicts[i:i + t.failure_threshold]) for i in range(len(verdicts) - t.failure_threshold + 1))
    if state.health is Health.OK:
        assert not verdicts or not verdicts[-1]
    if state.health is Health.FAILING:
        assert 0 < state.failures < t.failure_threshold
        assert all(verdicts[-state.failures:])
        assert len(verdicts) == state.failures or not verdicts[-state.failures - 1]
    if state.health is Health.RECOVERING:
        assert 0 < state.successes < t.success_threshold
        assert not any(verdicts[-state.successes:])
        assert verdicts[-state.successes - 1]  # a RECOVERING run starts right after a failure
    # counters count the current run of equal verdicts
    if verdicts:
        run = len(verdicts) - next((i for i in range(len(verdicts) - 1, -1, -1)
                                    if verdicts[i] != verdicts[-1]), -1) - 1
        assert (state.failures if verdicts[-1] else state.successes) == run
        assert (state.successes if verdicts[-1] else state.failures) == 0
    # transitions chain: each starts where the previous ended, and each is a real change
    visible = Health.OK
    for change in transitions:
        assert change.before is visible
        assert change.after is not change.before
        visible = change.after
    assert state.visible is visible
    assert state.visible is (Health.FLAPPING if state.flapping else state.health)


@settings(max_examples=300, deadline=None)
@given(seq=statuses, t=thresholds, data=st.data())
def test_unknown_results_are_invisible_to_the_state(seq: list[Status], t: Thresholds, data: st.DataObject) -> None:
    """Inserting UNKNOWN results anywhere changes nothing but last_status/version/last_result_at."""
    known = [s for s in seq if s is not UNK]
    times = [1000.0 + 2 * i for i in range(len(known))]
    base = CheckState("c")
    with_unknowns = CheckState("c")
    base_moves: list[tuple[Health, Health, float]] = []
    other_moves: list[tuple[Health, Health, float]] = []
    for status, now in zip(known, times, strict=True):
        if data.draw(st.booleans()):  # an UNKNOWN just before this result
            with_unknowns, change = advance(with_unknowns, UNK, now - 1, t)
            assert change is None
        base, change = advance(base, status, now, t)
        if change:
            base_moves.append((change.before, change.after, change.at))
        with_unknowns, change = advance(with_unknowns, status, now, t)
        if change:
            other_moves.append((change.before, change.after, change.at))
    assert other_moves == base_moves
    fields = ("health", "failures", "successes", "since", "flips", "flapping")
    assert [getattr(with_unknowns, f) for f in fields] == [getattr(base, f) for f in fields]
