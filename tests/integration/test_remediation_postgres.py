"""``postgres.terminate`` against a throwaway PostgreSQL (never the shared one: it ends sessions).

Sessions are plain psycopg connections left in the state under test: ``BEGIN; SELECT 1``
left open (idle in transaction), a ``pg_sleep`` running in a thread, a logical-replication
walsender idle in a transaction. Thresholds are small (1 s) so the tests stay quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from remediations.base import Outcome, Plan, Target
from remediations.postgres import Terminate, TerminateParams
from tests.support.services import PostgresServer

pytestmark = [pytest.mark.integration]

TARGET = Target(check="db")


@pytest.fixture
def sessions() -> Iterator[list[psycopg.Connection[Any]]]:
    opened: list[psycopg.Connection[Any]] = []
    try:
        yield opened
    finally:
        for conn in opened:
            conn.close()


def open_session(server: PostgresServer, opened: list[psycopg.Connection[Any]], name: str,
                 dsn: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    conn = psycopg.connect(f"{dsn or server.dsn()}&application_name={name}", **kwargs)
    opened.append(conn)
    return conn


def idle_in_transaction(server: PostgresServer, opened: list[psycopg.Connection[Any]],
                        name: str = "idler") -> psycopg.Connection[Any]:
    conn = open_session(server, opened, name)
    conn.execute("SELECT 1")  # psycopg opens the transaction (BEGIN) and leaves it open
    return conn


def run(action: Terminate) -> tuple[Plan, Outcome | None]:
    async def go() -> tuple[Plan, Outcome | None]:
        plan = action.plan(TARGET, await action.inspect(TARGET))
        return plan, (await action.apply(plan) if plan.changes else None)

    return asyncio.run(go())


def terminate(dsn: str, **fields: Any) -> Terminate:
    return Terminate(TerminateParams.model_validate({"dsn": dsn, **fields}))


def alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def test_idle_in_transaction_session_is_terminated_and_nothing_else(
    throwaway_postgres: PostgresServer, sessions: list[psycopg.Connection[Any]]
) -> None:
    server = throwaway_postgres
    idler = idle_in_transaction(server, sessions)
    mine = open_session(server, sessions, "mine", autocommit=True)
    mine.execute("SELECT 1")
    walsender = open_session(server, sessions, "replica", dsn=server.dsn() + "&replication=database")
    walsender.execute("SELECT 1")  # a walsender idle in a transaction: replication is never touched
    time.sleep(1.3)

    plan, outcome = run(terminate(server.dsn(), idle_in_transaction_longer_than="1s"))

    assert [s["pid"] for s in plan.data["sessions"]] == [idler.info.backend_pid]
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert outcome.message == f"terminated pid {idler.info.backend_pid}"
    assert outcome.data["ended"] == [idler.info.backend_pid]
    assert not alive(idler)
    assert alive(mine)
    with mine.cursor() as cur:
        cur.execute("SELECT backend_type, state FROM pg_stat_activity WHERE pid = %s", (walsender.info.backend_pid,))
        assert cur.fetchone() == ("walsender", "idle in transaction")
    # done: the next plan has nothing to do
    again, _ = run(terminate(server.dsn(), idle_in_transaction_longer_than="1s"))
    assert not again.changes
    assert again.refused is None


def test_long_query_is_cancelled_and_the_session_survives(
    throwaway_postgres: PostgresServer, sessions: list[psycopg.Connection[Any]]
) -> None:
    server = throwaway_postgres
    slow = open_session(server, sessions, "report", autocommit=True)
    errors: list[BaseException] = []

    def long_query() -> None:
        try:
            slow.execute("SELECT pg_sleep(60)")
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=long_query)
    thread.start()
    time.sleep(1.3)
    plan, outcome = run(terminate(server.dsn(), queries_longer_than="1s", cancel_first=True, cancel_grace="5s"))
    thread.join(10)

    assert [(s["pid"], s["op"]) for s in plan.data["sessions"]] == [(slow.info.backend_pid, "cancel")]
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert outcome.message == f"cancelled the query of pid {slow.info.backend_pid}"
    assert [type(e) for e in errors] == [psycopg.errors.QueryCanceled]
    assert alive(slow)  # cancel ends the query, not the session


def test_long_query_is_terminated_without_cancel_first(
    throwaway_postgres: PostgresServer, sessions: list[psycopg.Connection[Any]]
) -> None:
    server = throwaway_postgres
    slow = open_session(server, sessions, "report", autocommit=True)
    thread = threading.Thread(target=lambda: _swallow(slow, "SELECT pg_sleep(60)"))
    thread.start()
    time.sleep(1.3)
    _, outcome = run(terminate(server.dsn(), queries_longer_than="1s"))
    thread.join(10)
    assert outcome is not None
    assert outcome.ok, outcome.message
    assert not alive(slow)


def _swallow(conn: psycopg.Connection[Any], sql: str) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute(sql)  # type: ignore[arg-type]


def test_a_session_that_moved_on_since_the_plan_is_left_alone(
    throwaway_postgres: PostgresServer, sessions: list[psycopg.Connection[Any]]
) -> None:
    server = throwaway_postgres
    idler = idle_in_transaction(server, sessions)
    time.sleep(1.2)
    action = terminate(server.dsn(), idle_in_transaction_longer_than="1s")

    async def go() -> Outcome:
        plan = action.plan(TARGET, await action.inspect(TARGET))
        assert plan.changes
        idler.commit()  # the application finished its transaction meanwhile
        idler.execute("SELECT 1")  # ... and started a new one: same pid, new idle period
        return await action.apply(plan)

    outcome = asyncio.run(go())
    assert outcome.ok, outcome.message
    assert outcome.message == f"left alone (moved on since the plan) pid {idler.info.backend_pid}"
    assert alive(idler)


def test_too_many_sessions_are_refused_and_untouched(
    throwaway_postgres: PostgresServer, sessions: list[psycopg.Connection[Any]]
) -> None:
    server = throwaway_postgres
    idlers = [idle_in_transaction(server, sessions, f"idler-{i}") for i in range(3)]
    time.sleep(1.2)
    plan, outcome = run(terminate(server.dsn(), idle_in_transaction_longer_than="1s", max_sessions=2))
    assert outcome is None
    assert plan.refused is not None
    assert plan.refused.startswith("3 sessions on postgres@127.0.0.1:")
    assert all(alive(c) for c in idlers)


def test_a_role_without_the_right_to_signal_gets_a_clear_failure(
    throwaway_postgres: PostgresServer, sessions: list[psycopg.Connection[Any]]
) -> None:
    server = throwaway_postgres
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f"GRANT pg_read_all_stats TO {server.password_user}")  # sees, may not signal
    idler = idle_in_transaction(server, sessions)  # a superuser's session
    time.sleep(1.2)

    plan, outcome = run(terminate(server.password_dsn, idle_in_transaction_longer_than="1s"))

    assert [s["pid"] for s in plan.data["sessions"]] == [idler.info.backend_pid]
    assert outcome is not None
    assert not outcome.ok
    assert outcome.message.startswith(f"pg_terminate_backend({idler.info.backend_pid}): permission denied: ")
    assert "pg_signal_backend" in outcome.message
    assert outcome.data["failed"] == [idler.info.backend_pid]
    assert alive(idler)
    text = json.dumps([plan.as_dict(), outcome.as_dict()])
    assert server.password not in text


def test_unreachable_server_is_a_refusal_without_the_password(throwaway_postgres: PostgresServer) -> None:
    dsn = throwaway_postgres.dsn("paramedic", "wrong-pass-123", dbname="paramedic")
    plan, _ = run(terminate(dsn, idle_in_transaction_longer_than="1s"))
    assert plan.refused is not None
    assert plan.refused.startswith("cannot inspect paramedic@127.0.0.1:")
    assert "password authentication failed" in plan.refused
    assert "wrong-pass-123" not in plan.refused
