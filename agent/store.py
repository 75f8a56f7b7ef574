"""The persistent store: SQLite in one file (WAL), shared by ``paramedic run`` and ``check``.

It keeps recent results (bounded retention), the health state of every check, Docker
operator stops, and the tables later layers use (action journal, incidents, silences,
guardrail counters, image history, agent flags). The schema is versioned; each entry of
:data:`MIGRATIONS` runs once, in order, inside a transaction.

Concurrency: several processes may open the same file (a daemon and a cron ``check``).
State is advanced inside ``BEGIN IMMEDIATE`` transactions that read the current row and
write the next one with ``version + 1``: the database's write lock is the
compare-and-set, so two writers can never lose each other's results.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.results import Result, Status
from agent.state import CheckState, Health, Thresholds, Transition, advance

MIGRATIONS: tuple[str, ...] = (
    # 1: everything the daemon and the layers after it need.
    """
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        check_name TEXT NOT NULL,
        started_at REAL NOT NULL,
        status INTEGER NOT NULL,
        message TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        error TEXT,
        observations TEXT NOT NULL,
        conditions TEXT NOT NULL
    );
    CREATE INDEX results_by_check ON results (check_name, started_at);
    CREATE TABLE check_state (
        check_name TEXT PRIMARY KEY,
        health TEXT NOT NULL,
        failures INTEGER NOT NULL,
        successes INTEGER NOT NULL,
        since REAL NOT NULL,
        last_status INTEGER,
        last_result_at REAL NOT NULL,
        flips TEXT NOT NULL,
        flapping INTEGER NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE TABLE operator_stops (
        container TEXT PRIMARY KEY,
        container_id TEXT NOT NULL,
        event TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        intent_id INTEGER REFERENCES journal (id),
        phase TEXT NOT NULL,
        check_name TEXT,
        target TEXT,
        runbook TEXT,
        step INTEGER,
        action TEXT,
        dry_run INTEGER NOT NULL DEFAULT 0,
        outcome TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX journal_by_target ON journal (target, at);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL,
        runbook TEXT,
        target TEXT,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        acked_at REAL,
        resolved_at REAL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incidents_open ON incidents (dedup_key, status);
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        check_name TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        created_by TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE guardrail_counters (
        key TEXT PRIMARY KEY,
        value REAL NOT NULL,
        updated_at REAL NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE images (
        target TEXT NOT NULL,
        image TEXT NOT NULL,
        image_id TEXT NOT NULL,
        first_seen REAL NOT NULL,
        PRIMARY KEY (target, image_id)
    );
    CREATE TABLE flags (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
)


@dataclass(frozen=True)
class Retention:
    """How much result history to keep: both limits apply."""

    max_age: float = 7 * 86400.0
    max_per_check: int = 1000


# The daemon reads and writes a state row per result (a thousand a second): look enum
# members up in a dict (an Enum call costs microseconds) and skip JSON for the usual
# empty flip list. Unknown values still go through the Enum, which raises as before.
_HEALTH = {h.value: h for h in Health}
_STATUS = {int(s): s for s in Status}


def _state_from_row(row: sqlite3.Row) -> CheckState:
    last, flips = row["last_status"], row["flips"]
    return CheckState(
        check=row["check_name"], health=_HEALTH.get(row["health"]) or Health(row["health"]),
        failures=row["failures"], successes=row["successes"], since=row["since"],
        last_status=None if last is None else _STATUS.get(last) or Status(last),
        last_result_at=row["last_result_at"], flips=() if flips == "[]" else tuple(json.loads(flips)),
        flapping=bool(row["flapping"]), version=row["version"],
    )


def _state_params(s: CheckState) -> tuple[Any, ...]:
    last = None if s.last_status is None else int(s.last_status)
    flips = json.dumps(list(s.flips)) if s.flips else "[]"
    return (s.check, s.health.value, s.failures, s.successes, s.since, last,
            s.last_result_at, flips, int(s.flapping), s.version)


class Store:
    """One SQLite database. Thread-safe: all access goes through one connection and a lock.

    ``clock`` is injected so retention and operator-stop times are testable.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        current = self._db.execute("PRAGMA user_version").fetchone()[0]
        if current > len(MIGRATIONS):
            raise StoreError(
                f"store {self.path} has schema version {current}, newer than this paramedic "
                f"({len(MIGRATIONS)}); upgrade paramedic or use another store path"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process opening the same new file
                # may have run this migration while we waited for the lock.
                if self._db.execute("PRAGMA user_version").fetchone()[0] >= version:
                    self._db.execute("COMMIT")
                    continue
                for statement in filter(str.strip, MIGRATIONS[version - 1].split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _tx(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    value = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return value
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from None

    def close(self) -> None:
        """Checkpoint and close. Safe to call twice."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._db.close()
            except sqlite3.ProgrammingError:
                return

    @property
    def schema_version(self) -> int:
        """The migration level of the open database."""
        return int(self._query("PRAGMA user_version")[0][0])

    # ------------------------------------------------------------------ results & state

    def apply_results(
        self, results: Sequence[Result], thresholds: Mapping[str, Thresholds]
    ) -> tuple[dict[str, CheckState], list[Transition]]:
        """Store ``results`` and advance each check's state, atomically, in input order.

        Returns the new state of every check touched and the visible transitions, which
        is how callers learn that a check went DOWN. ``thresholds`` maps check name to its
        thresholds (a missing name gets the defaults).
        """
        if not results:
            return {}, []

        def work(db: sqlite3.Connection) -> tuple[dict[str, CheckState], list[Transition]]:
            names = sorted({r.name for r in results})
            states = self._read_states(db, names)
            transitions: list[Transition] = []
            for r in results:
                state = states.get(r.name) or CheckState(r.name)
                state, change = advance(state, r.status, r.started_at, thresholds.get(r.name, Thresholds()))
                states[r.name] = state
                if change is not None:
                    transitions.append(change)
            db.executemany(
                "INSERT INTO results (check_name, started_at, status, message, duration_ms, error,"
                " observations, conditions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [_result_params(r) for r in results],
            )
            db.executemany(
                "INSERT OR REPLACE INTO check_state (check_name, health, failures, successes, since,"
                " last_status, last_result_at, flips, flapping, version) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [_state_params(states[n]) for n in names],
            )
            return {n: states[n] for n in names}, transitions

        value: tuple[dict[str, CheckState], list[Transition]] = self._tx(work)
        return value

    @staticmethod
    def _read_states(db: sqlite3.Connection, names: Sequence[str]) -> dict[str, CheckState]:
        states: dict[str, CheckState] = {}
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT * FROM check_state WHERE check_name IN ({marks})", chunk)  # noqa: S608
            states.update((row["check_name"], _state_from_row(row)) for row in rows)
        return states

    def states(self, names: Iterable[str] | None = None) -> dict[str, CheckState]:
        """Current state of the named checks (all when ``names`` is None)."""
        if names is None:
            return {row["check_name"]: _state_from_row(row) for row in self._query("SELECT * FROM check_state")}
        with self._lock:
            return self._read_states(self._db, sorted(set(names)))

    def forget_checks(self, keep: Iterable[str]) -> int:
        """Drop state rows of checks no longer in the config; returns how many went."""
        keep_list = sorted(set(keep))

        def work(db: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(keep_list)) or "''"
            cur = db.execute(f"DELETE FROM check_state WHERE check_name NOT IN ({marks})", keep_list)  # noqa: S608
            return int(cur.rowcount)

        value: int = self._tx(work)
        return value

    def recent_results(self, check: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` results of ``check``, newest first, as plain dicts."""
        rows = self._query(
            "SELECT * FROM results WHERE check_name = ? ORDER BY started_at DESC, id DESC LIMIT ?", (check, limit)
        )
        return [
            {"name": r["check_name"], "started_at": r["started_at"], "status": Status(r["status"]).name,
             "message": r["message"], "duration_ms": r["duration_ms"], "error": r["error"],
             "observations": json.loads(r["observations"]), "conditions": json.loads(r["conditions"])}
            for r in rows
        ]

    def prune(self, retention: Retention) -> int:
        """Delete results beyond ``retention``; returns the number of rows removed."""
        cutoff = self.clock() - retention.max_age

        def work(db: sqlite3.Connection) -> int:
            removed = db.execute("DELETE FROM results WHERE started_at < ?", (cutoff,)).rowcount
            removed += db.execute(
                "DELETE FROM results WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
                " (PARTITION BY check_name ORDER BY started_at DESC, id DESC) AS n FROM results) WHERE n > ?)",
                (retention.max_per_check,),
            ).rowcount
            return int(removed)

        value: int = self._tx(work)
        return value

    # ------------------------------------------------------------------ operator intent

    def record_operator_stop(self, container: str, container_id: str, event: str) -> None:
        """Remember that a person (not paramedic) stopped or killed ``container``."""
        self._tx(lambda db: db.execute(
            "INSERT OR REPLACE INTO operator_stops (container, container_id, event, at) VALUES (?, ?, ?, ?)",
            (container, container_id, event, self.clock()),
        ))

    def clear_operator_stop(self, container: str) -> None:
        """The container was started again by someone: it is no longer held down on purpose."""
        self._tx(lambda db: db.execute("DELETE FROM operator_stops WHERE container = ?", (container,)))

    def operator_stops(self) -> dict[str, dict[str, Any]]:
        """Containers currently stopped on purpose by an operator, by name."""
        rows = self._query("SELECT * FROM operator_stops")
        return {r["container"]: {"id": r["container_id"], "event": r["event"], "at": r["at"]} for r in rows}

    # ------------------------------------------------------------------ image history (deploys)

    def record_image(self, target: str, image: str, image_id: str) -> bool:
        """Remember that ``target`` runs ``image_id`` (tag ``image``); True if that is a change (a deploy).

        The history is ordered by when each image was last *adopted*: going back to an image
        seen before moves it to the top again, so "the previous image" is always the one
        the target ran just before the current one.
        """

        def work(db: sqlite3.Connection) -> bool:
            newest = db.execute(
                "SELECT image_id FROM images WHERE target = ? ORDER BY first_seen DESC, rowid DESC LIMIT 1", (target,)
            ).fetchone()
            if newest is not None and newest["image_id"] == image_id:
                return False
            db.execute(
                "INSERT OR REPLACE INTO images (target, image, image_id, first_seen) VALUES (?, ?, ?, ?)",
                (target, image, image_id, self.clock()),
            )
            return True

        value: bool = self._tx(work)
        return value

    def record_images(self, records: Iterable[tuple[str, str, str]]) -> int:
        """:meth:`record_image` for each ``(target, image, image_id)``; returns how many were deploys."""
        return sum(self.record_image(*record) for record in records)

    def image_history(self, target: str) -> list[dict[str, Any]]:
        """Images ``target`` has run, newest first: ``{"image", "image_id", "first_seen"}``."""
        rows = self._query(
            "SELECT image, image_id, first_seen FROM images WHERE target = ? ORDER BY first_seen DESC, rowid DESC",
            (target,),
        )
        return [{"image": r["image"], "image_id": r["image_id"], "first_seen": r["first_seen"]} for r in rows]

    # ------------------------------------------------------------------ flags

    def set_flag(self, key: str, value: Any) -> None:
        """Store a small JSON value under ``key`` (e.g. the pause switch)."""
        self._tx(lambda db: db.execute(
            "INSERT OR REPLACE INTO flags (key, value, updated_at) VALUES (?, ?, ?)",
            (key, json.dumps(value), self.clock()),
        ))

    def flag(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        rows = self._query("SELECT value FROM flags WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default


# One encoder for every result: json.dumps(..., default=str) builds a new one per call, and
# the daemon encodes two documents per result, a thousand results a second.
_ENCODER = json.JSONEncoder(default=str)


def _result_params(r: Result) -> tuple[Any, ...]:
    return (
        r.name, r.started_at, int(r.status), r.message, r.duration_ms, r.error,
        _ENCODER.encode(dict(r.observations)),
        _ENCODER.encode([c.as_dict() for c in r.conditions]),
    )
