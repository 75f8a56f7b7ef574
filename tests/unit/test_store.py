"""The SQLite store (``agent.store.sqlite``): a real database file in ``tmp_path``."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.state import Health, Thresholds
from agent.kernel.errors import StoreError
from agent.kernel.results import ConditionOutcome, Result, Status
from agent.store.sqlite import MIGRATIONS, Retention, Store

T = Thresholds(failure_threshold=3, success_threshold=2, flap_threshold=10_000)
TABLES = {"results", "check_state", "operator_stops", "journal", "incidents", "silences",
          "guardrail_counters", "images", "flags"}


def result(name: str, status: Status, at: float, message: str = "") -> Result:
    return Result(name, "tcp", status, message or status.name.lower(), 1.5, {"connected": status is Status.OK},
                  (ConditionOutcome("connected", status is Status.OK, status is Status.OK),), started_at=at)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "paramedic.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    try:
        yield s
    finally:
        s.close()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as raw:
        return {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def result_count(path: Path, check: str | None = None) -> int:
    raw = sqlite3.connect(path)
    try:
        if check is None:
            return int(raw.execute("SELECT count(*) FROM results").fetchone()[0])
        return int(raw.execute("SELECT count(*) FROM results WHERE check_name = ?", (check,)).fetchone()[0])
    finally:
        raw.close()


# --------------------------------------------------------------------------- schema


def test_first_open_creates_the_file_and_the_latest_schema(db_path: Path) -> None:
    assert not db_path.exists()
    s = Store(db_path)
    try:
        assert s.schema_version == len(MIGRATIONS) >= 1
    finally:
        s.close()
    assert db_path.exists()
    assert tables(db_path) >= TABLES
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        raw.close()


def test_reopening_migrates_nothing_and_keeps_data(db_path: Path) -> None:
    s = Store(db_path)
    s.apply_results([result("a", Status.CRITICAL, 10.0)], {"a": T})
    s.close()
    for _ in range(2):
        again = Store(db_path)
        try:
            assert again.schema_version == len(MIGRATIONS)
            assert again.states()["a"].failures == 1
        finally:
            again.close()
    assert result_count(db_path) == 1


def test_a_store_from_a_newer_paramedic_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    raw.close()
    with pytest.raises(StoreError, match=rf"schema version {len(MIGRATIONS) + 5}, newer") as info:
        Store(db_path)
    assert str(db_path) in str(info.value)
    assert "upgrade paramedic" in str(info.value)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all, just some text " * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(path)


def test_two_processes_creating_the_store_at_once_both_succeed(db_path: Path) -> None:
    """A daemon and a cron ``check`` may open a brand-new file at the same moment: both see
    version 0, and the second to get the write lock must not run the migration again."""
    db_path.parent.mkdir(parents=True)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # both openers read user_version 0, then queue for the lock
    outcomes: list[object] = []

    def open_store() -> None:
        try:
            s = Store(db_path)
            outcomes.append(s.schema_version)
            s.close()
        except StoreError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # let both reach BEGIN IMMEDIATE (they wait on the busy timeout)
    holder.execute("ROLLBACK")
    holder.close()
    for thread in threads:
        thread.join(timeout=15)
    assert outcomes == [len(MIGRATIONS), len(MIGRATIONS)]


# --------------------------------------------------------------------------- results and state


def test_apply_results_advances_state_in_order_and_returns_transitions(store: Store) -> None:
    batch = [result("a", Status.CRITICAL, 1.0), result("b", Status.OK, 1.0),
             result("a", Status.CRITICAL, 2.0), result("a", Status.CRITICAL, 3.0)]
    states, transitions = store.apply_results(batch, {"a": T, "b": T})
    assert set(states) == {"a", "b"}
    assert states["a"].health is Health.DOWN
    assert states["a"].failures == 3
    assert states["a"].since == 3.0
    assert states["b"].health is Health.OK
    assert [(t.check, t.before, t.after, t.at) for t in transitions] == [
        ("a", Health.OK, Health.FAILING, 1.0), ("a", Health.FAILING, Health.DOWN, 3.0)]
    # order matters: CRIT, CRIT, OK is OK; OK, CRIT, CRIT is FAILING(2)
    states, _ = store.apply_results(
        [result("c", Status.CRITICAL, 1.0), result("c", Status.CRITICAL, 2.0), result("c", Status.OK, 3.0),
         result("d", Status.OK, 1.0), result("d", Status.CRITICAL, 2.0), result("d", Status.CRITICAL, 3.0)], {})
    assert (states["c"].label, states["d"].label) == ("OK", "FAILING(2)")
    assert store.states(["a", "c", "zzz"]).keys() == {"a", "c"}


def test_apply_results_uses_each_checks_thresholds_and_defaults_for_the_rest(store: Store) -> None:
    one = Thresholds(failure_threshold=1)
    states, _ = store.apply_results([result("quick", Status.CRITICAL, 1.0), result("other", Status.CRITICAL, 1.0)],
                                    {"quick": one})
    assert states["quick"].health is Health.DOWN
    assert states["other"].label == "FAILING(1)"  # default threshold 3


def test_apply_results_of_nothing_is_a_no_op(store: Store) -> None:
    assert store.apply_results([], {}) == ({}, [])


def test_recent_results_are_newest_first_and_json_ready(store: Store) -> None:
    store.apply_results([result("a", Status.OK, float(i), f"run {i}") for i in range(5)], {})
    recent = store.recent_results("a", limit=3)
    assert [r["message"] for r in recent] == ["run 4", "run 3", "run 2"]
    assert recent[0]["status"] == "OK"
    assert recent[0]["observations"] == {"connected": True}
    assert recent[0]["conditions"] == [{"expr": "connected", "ok": True, "actual": True, "severity": "critical"}]
    assert store.recent_results("nobody") == []


def test_state_survives_close_and_reopen(db_path: Path) -> None:
    """Restart resume: a check that was DOWN is still DOWN, with its counters and since."""
    first = Store(db_path)
    first.apply_results([result("db", Status.CRITICAL, float(i)) for i in range(1, 5)], {"db": T})
    before = first.states()["db"]
    first.close()

    second = Store(db_path)
    try:
        resumed = second.states()["db"]
        assert resumed == before
        assert resumed.health is Health.DOWN
        assert (resumed.failures, resumed.since, resumed.version) == (4, 3.0, 4)
        # the next failure continues the count: no OK -> FAILING transition
        states, transitions = second.apply_results([result("db", Status.CRITICAL, 5.0)], {"db": T})
        assert transitions == []
        assert states["db"].failures == 5
        # and recovery still needs success_threshold passes
        states, transitions = second.apply_results([result("db", Status.OK, 6.0)], {"db": T})
        assert states["db"].label == "RECOVERING(1)"
    finally:
        second.close()


def test_flapping_state_and_flips_round_trip(db_path: Path) -> None:
    flappy = Thresholds(failure_threshold=3, success_threshold=2, flap_window=100.0, flap_threshold=2)
    first = Store(db_path)
    statuses = [Status.CRITICAL, Status.OK, Status.CRITICAL, Status.OK]
    states, _ = first.apply_results([result("f", s, float(i)) for i, s in enumerate(statuses)], {"f": flappy})
    first.close()
    assert states["f"].flapping
    second = Store(db_path)
    try:
        resumed = second.states()["f"]
        assert resumed.visible is Health.FLAPPING
        assert resumed.flips == (1.0, 2.0, 3.0)
        assert resumed.last_status is Status.OK
    finally:
        second.close()


def test_two_store_objects_on_one_file_never_lose_a_result(db_path: Path) -> None:
    """Two processes' views of one file (a daemon and a cron job): interleaved writes are
    serialised by the write lock and each reads the other's latest state."""
    n = 60
    stores = [Store(db_path), Store(db_path)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(s: Store, offset: int) -> None:
        try:
            start.wait()
            for i in range(n):
                s.apply_results([result("shared", Status.CRITICAL, 1000.0 + 2 * i + offset)], {"shared": T})
                s.apply_results([result(f"own-{offset}", Status.OK, 1000.0 + i)], {})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, k)) for k, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        for s in stores:  # both views agree
            shared = s.states()["shared"]
            assert shared.failures == 2 * n
            assert shared.version == 2 * n
            assert shared.health is Health.DOWN
            assert s.states()["own-0"].successes == n
            assert s.states()["own-1"].successes == n
    finally:
        for s in stores:
            s.close()
    assert result_count(db_path, "shared") == 2 * n
    assert result_count(db_path) == 4 * n


def test_forget_checks_drops_state_of_removed_checks(store: Store) -> None:
    store.apply_results([result(n, Status.OK, 1.0) for n in ("a", "b", "c")], {})
    assert store.forget_checks(["a", "c"]) == 1
    assert set(store.states()) == {"a", "c"}
    assert store.forget_checks([]) == 2
    assert store.states() == {}


# --------------------------------------------------------------------------- retention


def test_prune_by_age(db_path: Path) -> None:
    now = [10_000.0]
    s = Store(db_path, clock=lambda: now[0])
    try:
        s.apply_results([result("a", Status.OK, t) for t in (100.0, 5_000.0, 9_000.0, 9_999.0)], {})
        s.apply_results([result("b", Status.OK, 50.0)], {})
        removed = s.prune(Retention(max_age=2_000.0, max_per_check=1000))
        assert removed == 3  # a@100, a@5000, b@50
        assert [r["started_at"] for r in s.recent_results("a")] == [9_999.0, 9_000.0]
        assert s.recent_results("b") == []
        assert s.states()["b"].health is Health.OK  # state is not history: it stays
    finally:
        s.close()


def test_prune_by_count_keeps_the_newest_per_check(db_path: Path) -> None:
    s = Store(db_path, clock=lambda: 1_000.0)
    try:
        s.apply_results([result("a", Status.OK, float(t), f"a{t}") for t in range(1, 16)], {})
        s.apply_results([result("b", Status.OK, float(t), f"b{t}") for t in range(1, 6)], {})
        removed = s.prune(Retention(max_age=10_000.0, max_per_check=10))
        assert removed == 5
        assert [r["message"] for r in s.recent_results("a", limit=100)] == [f"a{t}" for t in range(15, 5, -1)]
        assert len(s.recent_results("b", limit=100)) == 5
        assert s.prune(Retention(max_age=10_000.0, max_per_check=10)) == 0
    finally:
        s.close()


# --------------------------------------------------------------------------- operator stops and flags


def test_operator_stops_round_trip(db_path: Path) -> None:
    now = [500.0]
    s = Store(db_path, clock=lambda: now[0])
    s.record_operator_stop("web-1", "abc123", "stop")
    now[0] = 600.0
    s.record_operator_stop("db", "def456", "kill")
    s.record_operator_stop("web-1", "abc124", "kill")  # a later stop replaces the earlier one
    s.close()
    s = Store(db_path, clock=lambda: now[0])
    try:
        assert s.operator_stops() == {
            "web-1": {"id": "abc124", "event": "kill", "at": 600.0},
            "db": {"id": "def456", "event": "kill", "at": 600.0},
        }
        s.clear_operator_stop("web-1")
        s.clear_operator_stop("never-stopped")
        assert set(s.operator_stops()) == {"db"}
    finally:
        s.close()


def test_flags_round_trip(db_path: Path) -> None:
    s = Store(db_path)
    assert s.flag("paused") is None
    assert s.flag("paused", default=False) is False
    s.set_flag("paused", True)
    s.set_flag("note", {"by": "ops", "until": 12.5, "tags": ["a", "b"]})
    s.close()
    s = Store(db_path)
    try:
        assert s.flag("paused") is True
        assert s.flag("note") == {"by": "ops", "until": 12.5, "tags": ["a", "b"]}
        s.set_flag("paused", False)
        assert s.flag("paused", default=True) is False
    finally:
        s.close()


def test_close_twice_is_safe(db_path: Path) -> None:
    s = Store(db_path)
    s.close()
    s.close()
