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

from agent.core.state import CheckState, Health, Transition, advance
from agent.kernel.errors import StoreError
from agent.kernel.models import Thresholds
from agent.kernel.results import Result, Status

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
    # 2: the notification outbox (agent.notify): one row per notice and channel, by channel name.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        kind TEXT NOT NULL,
        incident_id INTEGER,
        dedup_key TEXT NOT NULL,
        severity TEXT NOT NULL,
        notice TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        claim TEXT,
        finished_at REAL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
    CREATE INDEX outbox_order ON outbox (channel, dedup_key, status, id)
    """,
    # 3: incidents (agent.runtime.incidents): the opening check, escalation/reminder/ack bookkeeping,
    # at most one unresolved incident per dedup key, and each incident's timeline.
    """
    ALTER TABLE incidents ADD COLUMN check_name TEXT;
    ALTER TABLE incidents ADD COLUMN escalated_at REAL;
    ALTER TABLE incidents ADD COLUMN reminded_at REAL;
    ALTER TABLE incidents ADD COLUMN acked_by TEXT;
    CREATE UNIQUE INDEX incidents_one_open ON incidents (dedup_key) WHERE status = 'open';
    CREATE TABLE incident_events (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        summary TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id)
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

    # ------------------------------------------------------------------ silences

    def add_silence(self, check: str, reason: str, until: float, created_by: str = "") -> int:
        """Silence ``check`` (no actions) until ``until``; returns the silence id."""

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO silences (check_name, reason, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?)",
                (check, reason, self.clock(), until, created_by),
            )
            return int(cur.lastrowid or 0)

        value: int = self._tx(work)
        return value

    def silences(self, active_at: float | None = None) -> list[dict[str, Any]]:
        """Silences, newest first; only those still active at ``active_at`` when given."""
        rows = self._query(
            "SELECT * FROM silences WHERE (? IS NULL OR expires_at > ?) ORDER BY created_at DESC, id DESC",
            (active_at, active_at),
        )
        return [{"id": r["id"], "check": r["check_name"], "reason": r["reason"], "created_at": r["created_at"],
                 "until": r["expires_at"], "created_by": r["created_by"]} for r in rows]

    def remove_silence(self, silence_id: int) -> bool:
        """End silence ``silence_id`` now; False if there is no such silence."""
        value: bool = self._tx(lambda db: bool(db.execute(
            "DELETE FROM silences WHERE id = ?", (silence_id,)).rowcount))
        return value

    # ------------------------------------------------------------------ the action journal
    #
    # Append-only. An action is two rows: an ``intent`` written before anything changes and
    # an ``outcome`` (pointing at it with ``intent_id``) written after. An intent without an
    # outcome is an action the agent was killed in the middle of: reconcile it, never redo it.

    def journal_intent(self, *, check: str | None, target: str, runbook: str | None, step: int | None,
                       action: str, dry_run: bool, detail: Mapping[str, Any]) -> int:
        """Record that ``action`` on ``target`` is about to happen; returns the intent id."""

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO journal (at, intent_id, phase, check_name, target, runbook, step, action, dry_run,"
                " outcome, detail) VALUES (?, NULL, 'intent', ?, ?, ?, ?, ?, ?, NULL, ?)",
                (self.clock(), check, target, runbook, step, action, int(dry_run), json.dumps(detail, default=str)),
            )
            return int(cur.lastrowid or 0)

        value: int = self._tx(work)
        return value

    def journal_outcome(self, intent_id: int, outcome: str, detail: Mapping[str, Any]) -> int:
        """Record how intent ``intent_id`` ended (``ok``, ``failed``, ``dry-run``, ``reconciled``...)."""

        def work(db: sqlite3.Connection) -> int:
            intent = db.execute("SELECT * FROM journal WHERE id = ? AND phase = 'intent'", (intent_id,)).fetchone()
            if intent is None:
                raise StoreError(f"no journal intent {intent_id}")
            cur = db.execute(
                "INSERT INTO journal (at, intent_id, phase, check_name, target, runbook, step, action, dry_run,"
                " outcome, detail) VALUES (?, ?, 'outcome', ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.clock(), intent_id, intent["check_name"], intent["target"], intent["runbook"], intent["step"],
                 intent["action"], intent["dry_run"], outcome, json.dumps(detail, default=str)),
            )
            return int(cur.lastrowid or 0)

        value: int = self._tx(work)
        return value

    def journal(self, limit: int = 50, since: float | None = None, target: str | None = None) -> list[dict[str, Any]]:
        """Actions, newest first: each intent with its outcome (``None`` while open)."""
        rows = self._query(
            "SELECT i.*, o.at AS outcome_at, o.outcome AS outcome_value, o.detail AS outcome_detail FROM journal i"
            " LEFT JOIN journal o ON o.intent_id = i.id AND o.phase = 'outcome'"
            " WHERE i.phase = 'intent' AND (? IS NULL OR i.at >= ?) AND (? IS NULL OR i.target = ?)"
            " ORDER BY i.at DESC, i.id DESC LIMIT ?",
            (since, since, target, target, limit),
        )
        return [_journal_entry(r) for r in rows]

    def open_intents(self) -> list[dict[str, Any]]:
        """Intents with no outcome: actions interrupted by a crash, oldest first."""
        rows = self._query(
            "SELECT i.*, NULL AS outcome_at, NULL AS outcome_value, NULL AS outcome_detail FROM journal i"
            " WHERE i.phase = 'intent' AND NOT EXISTS"
            " (SELECT 1 FROM journal o WHERE o.intent_id = i.id AND o.phase = 'outcome') ORDER BY i.at, i.id"
        )
        return [_journal_entry(r) for r in rows]

    # ------------------------------------------------------------------ flags

    def set_flag(self, key: str, value: Any) -> None:
        """Store a small JSON value under ``key`` (e.g. the pause switch)."""
        self._tx(lambda db: db.execute(
            "INSERT OR REPLACE INTO flags (key, value, updated_at) VALUES (?, ?, ?)",
            (key, json.dumps(value), self.clock()),
        ))

    def flags(self, prefix: str) -> dict[str, Any]:
        """Every flag whose key starts with ``prefix`` (JSON values), by key."""
        rows = self._query("SELECT key, value FROM flags WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def flag(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        rows = self._query("SELECT value FROM flags WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    # ------------------------------------------------------------------ notification outbox
    #
    # A row per (notice, channel), written before anything is sent; the dispatcher claims due
    # rows (compare-and-set on ``claim``), sends them, and marks them sent, due again later, or
    # failed. Rows hold the channel's *name*, never its URL, key or password.

    def outbox_add(self, channel: str, kind: str, incident_id: int, dedup_key: str, severity: str,
                   notice: str) -> int:
        """Queue ``notice`` (JSON) for ``channel``, due now; returns the row id."""
        now = self.clock()

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO outbox (channel, kind, incident_id, dedup_key, severity, notice, status, attempts,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                (channel, kind, incident_id, dedup_key, severity, notice, now, now),
            )
            return int(cur.lastrowid or 0)

        value: int = self._tx(work)
        return value

    def outbox_claim(self, token: str, now: float, lease_until: float, limit: int) -> list[OutboxRow]:
        """Claim up to ``limit`` due rows for one attempt each (``attempts`` is counted here).

        Per channel and dedup key, only the oldest pending row is ever due, so an incident's
        resolution never overtakes its initial alert on the same channel. A claimed row stays
        pending with ``next_attempt_at = lease_until``: if its claimer dies, it is due again then.
        """

        def work(db: sqlite3.Connection) -> list[OutboxRow]:
            rows = db.execute(
                "SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at <= ? AND NOT EXISTS"
                " (SELECT 1 FROM outbox p WHERE p.channel = o.channel AND p.dedup_key = o.dedup_key"
                " AND p.status = 'pending' AND p.id < o.id) ORDER BY o.next_attempt_at, o.id LIMIT ?",
                (now, limit),
            ).fetchall()
            ids = [r["id"] for r in rows]
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, claim = ?, next_attempt_at = ? WHERE id = ?",
                [(token, lease_until, i) for i in ids],
            )
            return [_outbox_row(db.execute("SELECT * FROM outbox WHERE id = ?", (i,)).fetchone()) for i in ids]

        value: list[OutboxRow] = self._tx(work)
        return value

    def _outbox_finish(self, sql: str, params: tuple[Any, ...]) -> bool:
        value: bool = self._tx(lambda db: db.execute(sql, params).rowcount == 1)
        return value

    def outbox_sent(self, row_id: int, token: str, at: float) -> bool:
        """Mark a claimed row delivered; False if the claim was lost (another process took over)."""
        return self._outbox_finish(
            "UPDATE outbox SET status = 'sent', finished_at = ?, claim = NULL, last_error = NULL"
            " WHERE id = ? AND claim = ? AND status = 'pending'", (at, row_id, token))

    def outbox_retry(self, row_id: int, token: str, next_attempt_at: float, error: str) -> bool:
        """A claimed row failed; it is due again at ``next_attempt_at``. ``error`` must be secret-free."""
        return self._outbox_finish(
            "UPDATE outbox SET next_attempt_at = ?, last_error = ?, claim = NULL"
            " WHERE id = ? AND claim = ? AND status = 'pending'", (next_attempt_at, error, row_id, token))

    def outbox_failed(self, row_id: int, token: str, at: float, error: str) -> bool:
        """Give a claimed row up (kept, with its last error, for the record)."""
        return self._outbox_finish(
            "UPDATE outbox SET status = 'failed', finished_at = ?, last_error = ?, claim = NULL"
            " WHERE id = ? AND claim = ? AND status = 'pending'", (at, error, row_id, token))

    def outbox_release(self, row_id: int, token: str, at: float) -> bool:
        """Hand a claimed row back unsent (shutdown interrupted it): due at ``at``, attempt not counted."""
        return self._outbox_finish(
            "UPDATE outbox SET next_attempt_at = ?, attempts = MAX(attempts - 1, 0), claim = NULL"
            " WHERE id = ? AND claim = ? AND status = 'pending'", (at, row_id, token))

    def outbox_abandon(self, channel: str, at: float, error: str) -> list[int]:
        """Mark every pending row of ``channel`` that nobody is sending now ``failed`` with ``error``.

        For a channel that is no longer configured (a reload removed it): its rows are kept,
        as undeliverable, rather than left pending forever. Returns their ids, oldest first.
        A row being sent right now is left to its sender. ``error`` must be secret-free.
        """

        def work(db: sqlite3.Connection) -> list[int]:
            # nobody is sending it: never claimed, handed back, or its claim's lease ran out
            # (a claimed row's next_attempt_at is the end of its lease)
            ids = [r["id"] for r in db.execute(
                "SELECT id FROM outbox WHERE channel = ? AND status = 'pending'"
                " AND (claim IS NULL OR next_attempt_at <= ?) ORDER BY id", (channel, at))]
            db.executemany(
                "UPDATE outbox SET status = 'failed', finished_at = ?, last_error = ?, claim = NULL"
                " WHERE id = ? AND status = 'pending'", [(at, error, i) for i in ids])
            return ids

        value: list[int] = self._tx(work)
        return value

    def outbox_due_now(self, channel: str, at: float) -> int:
        """Make every pending row of ``channel`` that nobody is sending now due at ``at`` (its
        definition changed: a backoff earned by the old one does not apply). Returns how many."""
        value: int = self._tx(lambda db: db.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE channel = ? AND status = 'pending' AND claim IS NULL"
            " AND next_attempt_at > ?", (at, channel, at)).rowcount)
        return value

    def outbox_next_due(self) -> float | None:
        """When the earliest claimable row is due (claimed rows: when their lease ends); None if none is pending.

        Rows waiting behind an older row of their channel and incident do not count: they
        become due when that one is finished, not at their own (past) time.
        """
        rows = self._query(
            "SELECT MIN(o.next_attempt_at) AS due FROM outbox o WHERE o.status = 'pending' AND NOT EXISTS"
            " (SELECT 1 FROM outbox p WHERE p.channel = o.channel AND p.dedup_key = o.dedup_key"
            " AND p.status = 'pending' AND p.id < o.id)"
        )
        due = rows[0]["due"]
        return None if due is None else float(due)

    def outbox_rows(self, status: str | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows, oldest first, optionally only those with ``status`` (pending/sent/failed)."""
        if status is None:
            rows = self._query("SELECT * FROM outbox ORDER BY id LIMIT ?", (limit,))
        else:
            rows = self._query("SELECT * FROM outbox WHERE status = ? ORDER BY id LIMIT ?", (status, limit))
        return [_outbox_row(r) for r in rows]

    def outbox_prune(self, before: float) -> int:
        """Delete sent and failed rows finished before ``before``; pending rows are never pruned."""
        value: int = self._tx(lambda db: db.execute(
            "DELETE FROM outbox WHERE status IN ('sent', 'failed') AND finished_at < ?", (before,)).rowcount)
        return value


    # ------------------------------------------------------------------ incidents
    #
    # One row per incident; at most one with status 'open' per dedup key (a unique partial
    # index), so a daemon and a cron run can never open the same incident twice. Every
    # change is also an event in ``incident_events`` (the timeline of the report).

    def incident_open(self, *, dedup_key: str, runbook: str | None, target: str | None, check: str | None,
                      severity: str, at: float, data: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The open incident for ``dedup_key``, or a new one; ``(incident, created)``."""

        def work(db: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            row = db.execute("SELECT * FROM incidents WHERE dedup_key = ? AND status = 'open'", (dedup_key,)).fetchone()
            if row is not None:
                return _incident(row), False
            cur = db.execute(
                "INSERT INTO incidents (dedup_key, runbook, target, check_name, severity, status, opened_at,"
                " updated_at, data) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?)",
                (dedup_key, runbook, target, check, severity, at, at, json.dumps(data, default=str)),
            )
            row = db.execute("SELECT * FROM incidents WHERE id = ?", (cur.lastrowid,)).fetchone()
            return _incident(row), True

        value: tuple[dict[str, Any], bool] = self._tx(work)
        return value

    def incident(self, incident_id: int) -> dict[str, Any] | None:
        """Incident ``incident_id``, or None."""
        rows = self._query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return _incident(rows[0]) if rows else None

    def open_incident(self, dedup_key: str) -> dict[str, Any] | None:
        """The open incident for ``dedup_key``, or None."""
        rows = self._query("SELECT * FROM incidents WHERE dedup_key = ? AND status = 'open'", (dedup_key,))
        return _incident(rows[0]) if rows else None

    def incidents(self, include_resolved: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        """Incidents, newest first; only open ones unless ``include_resolved``."""
        rows = self._query(
            "SELECT * FROM incidents WHERE (? OR status = 'open') ORDER BY opened_at DESC, id DESC LIMIT ?",
            (int(include_resolved), limit),
        )
        return [_incident(r) for r in rows]

    def incident_set(self, incident_id: int, at: float, *, only_open: bool = True, only_null: str | None = None,
                     **columns: Any) -> bool:
        """Set ``columns`` (and ``updated_at``) of an incident, compare-and-set style.

        ``only_open``: only while it is open; ``only_null``: only while that column is NULL
        (so two processes acknowledging or resolving at once change it once). True if changed.
        """
        allowed = {"status", "severity", "acked_at", "acked_by", "resolved_at", "escalated_at", "reminded_at", "data"}
        if not set(columns) <= allowed or (only_null is not None and only_null not in allowed):
            raise ValueError(f"cannot set incident columns {sorted(set(columns) - allowed)}")
        values = [json.dumps(v, default=str) if k == "data" else v for k, v in columns.items()]
        sets = ", ".join([*(f"{k} = ?" for k in columns), "updated_at = ?"])
        where = "id = ?" + (" AND status = 'open'" if only_open else "") + (
            f" AND {only_null} IS NULL" if only_null else "")
        value: bool = self._tx(lambda db: db.execute(
            f"UPDATE incidents SET {sets} WHERE {where}", (*values, at, incident_id)).rowcount == 1)  # noqa: S608
        return value

    def incident_event(self, incident_id: int, at: float, kind: str, summary: str,
                       data: Mapping[str, Any] | None = None) -> int:
        """Append an event to the incident's timeline; returns the event id."""

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO incident_events (incident_id, at, kind, summary, data) VALUES (?, ?, ?, ?, ?)",
                (incident_id, at, kind, summary, json.dumps(dict(data or {}), default=str)),
            )
            db.execute("UPDATE incidents SET updated_at = MAX(updated_at, ?) WHERE id = ?", (at, incident_id))
            return int(cur.lastrowid or 0)

        value: int = self._tx(work)
        return value

    def incident_events(self, incident_id: int) -> list[dict[str, Any]]:
        """The incident's timeline, oldest first."""
        rows = self._query("SELECT * FROM incident_events WHERE incident_id = ? ORDER BY at, id", (incident_id,))
        return [{"id": r["id"], "at": r["at"], "kind": r["kind"], "summary": r["summary"],
                 "data": json.loads(r["data"])} for r in rows]

    def results_between(self, check: str, since: float, until: float | None = None,
                        limit: int = 5000) -> list[dict[str, Any]]:
        """Results of ``check`` from ``since`` to ``until`` (now when None), oldest first."""
        rows = self._query(
            "SELECT * FROM results WHERE check_name = ? AND started_at >= ? AND (? IS NULL OR started_at <= ?)"
            " ORDER BY started_at, id LIMIT ?", (check, since, until, until, limit))
        return [{"started_at": r["started_at"], "status": Status(r["status"]).name, "message": r["message"],
                 "duration_ms": r["duration_ms"], "error": r["error"]} for r in rows]


def _incident(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": r["id"], "dedup_key": r["dedup_key"], "runbook": r["runbook"], "target": r["target"],
        "check": r["check_name"], "severity": r["severity"], "status": r["status"], "opened_at": r["opened_at"],
        "updated_at": r["updated_at"], "acked_at": r["acked_at"], "acked_by": r["acked_by"],
        "resolved_at": r["resolved_at"], "escalated_at": r["escalated_at"], "reminded_at": r["reminded_at"],
        "data": json.loads(r["data"] or "{}"),
    }


# One encoder for every result: json.dumps(..., default=str) builds a new one per call, and
# the daemon encodes two documents per result, a thousand results a second.
_ENCODER = json.JSONEncoder(default=str)


def _journal_entry(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": r["id"], "at": r["at"], "check": r["check_name"], "target": r["target"], "runbook": r["runbook"],
        "step": r["step"], "action": r["action"], "dry_run": bool(r["dry_run"]), "detail": json.loads(r["detail"]),
        "outcome": r["outcome_value"], "outcome_at": r["outcome_at"],
        "outcome_detail": json.loads(r["outcome_detail"]) if r["outcome_detail"] else None,
    }


def _result_params(r: Result) -> tuple[Any, ...]:
    return (
        r.name, r.started_at, int(r.status), r.message, r.duration_ms, r.error,
        _ENCODER.encode(dict(r.observations)),
        _ENCODER.encode([c.as_dict() for c in r.conditions]),
    )


@dataclass(frozen=True)
class OutboxRow:
    """One queued notification for one channel (see :meth:`Store.outbox_claim`)."""

    id: int
    channel: str
    kind: str
    incident_id: int | None
    dedup_key: str
    severity: str
    notice: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    finished_at: float | None
    last_error: str | None


def _outbox_row(row: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        id=row["id"], channel=row["channel"], kind=row["kind"], incident_id=row["incident_id"],
        dedup_key=row["dedup_key"], severity=row["severity"], notice=row["notice"], status=row["status"],
        attempts=row["attempts"], created_at=row["created_at"], next_attempt_at=row["next_attempt_at"],
        finished_at=row["finished_at"], last_error=row["last_error"],
    )
