"""``postgres.terminate`` plans as pure functions over a recorded ``inspect`` snapshot.

tests/unit/fixtures/postgres_terminate/snapshot.json is real ``pg_stat_activity`` data
(recorded by record.py there): the server's background processes, a session idle in
transaction, one idle in an aborted transaction, an idle one, a walsender idle in a
transaction, and one running ``pg_sleep`` -- all about 1.5 s into their state.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Plan, Target
from remediations.postgres import Terminate, TerminateParams

SNAPSHOT: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "postgres_terminate" / "snapshot.json").read_text())
TARGET = Target(check="db")
DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pid_of(app: str) -> int:
    [pid] = [s["pid"] for s in SNAPSHOT["sessions"] if s["application_name"] == f"fixture-{app}"]
    return int(pid)


def params(**fields: Any) -> TerminateParams:
    return TerminateParams.model_validate({"dsn": DSN, **fields})


def plan(snapshot: dict[str, Any] | None = None, **fields: Any) -> Plan:
    return Terminate(params(**fields)).plan(TARGET, SNAPSHOT if snapshot is None else snapshot)


# --------------------------------------------------------------------------- params


def test_params_need_a_threshold_and_one_way_to_connect() -> None:
    with pytest.raises(ValidationError, match="set idle_in_transaction_longer_than, queries_longer_than"):
        TerminateParams.model_validate({"dsn": DSN})
    with pytest.raises(ValidationError, match="give either dsn or host, not both"):
        params(host="db", queries_longer_than="5m")
    with pytest.raises(ValidationError, match="give dsn, or host"):
        TerminateParams.model_validate({"queries_longer_than": "5m"})
    with pytest.raises(ValidationError):
        params(queries_longer_than="5m", max_sessions=0)
    with pytest.raises(ValidationError):
        params(queries_longer_than="5m", kill_everyone=True)
    p = params(idle_in_transaction_longer_than="10m", exclude_users=["replicator"])
    assert (p.idle_in_transaction_longer_than, p.exclude_users, p.max_sessions) == (600.0, ("replicator",), 20)
    host = TerminateParams.model_validate({"host": "db", "user": "ops", "password": "pw", "queries_longer_than": 60})
    assert host.spec().target() == "ops@db:5432"


# --------------------------------------------------------------------------- candidates


def test_idle_in_transaction_sessions_are_chosen_and_nothing_else() -> None:
    p = plan(idle_in_transaction_longer_than="1s")
    assert p.changes
    assert p.refused is None
    chosen = [s["pid"] for s in p.data["sessions"]]
    assert chosen == [pid_of("idle-in-transaction"), pid_of("aborted")]  # not the walsender, not idle, not active
    assert {s["op"] for s in p.data["sessions"]} == {"terminate"}
    assert p.steps[0] == (f"terminate pid {pid_of('idle-in-transaction')} (user postgres, application "
                          "'fixture-idle-in-transaction', from 127.0.0.1): idle in transaction for 1.6s (limit 1s)")
    assert "idle in transaction (aborted) for 1.5s" in p.steps[1]
    assert p.summary == (f"terminate 2 session(s) on postgres@127.0.0.1:5432/postgres: pids "
                         f"{pid_of('idle-in-transaction')}, {pid_of('aborted')}")


def test_the_plan_data_pins_each_backend_and_its_state() -> None:
    p = plan(idle_in_transaction_longer_than="1s")
    [first] = [s for s in SNAPSHOT["sessions"] if s["pid"] == pid_of("idle-in-transaction")]
    entry = p.data["sessions"][0]
    assert entry["backend_start"] == first["backend_start"]
    assert (entry["kind"], entry["since"]) == ("idle", first["state_change"])
    assert json.loads(json.dumps(p.as_dict()))["data"] == p.data


def test_walsender_is_never_chosen_even_idle_in_transaction() -> None:
    walsender = pid_of("walsender")
    [row] = [s for s in SNAPSHOT["sessions"] if s["pid"] == walsender]
    assert (row["backend_type"], row["state"]) == ("walsender", "idle in transaction")
    both = plan(idle_in_transaction_longer_than="1s", queries_longer_than="1s")
    assert walsender not in [s["pid"] for s in both.data["sessions"]]


def test_long_queries_terminate_or_cancel_first() -> None:
    p = plan(queries_longer_than="1s")
    assert [(s["pid"], s["op"], s["kind"]) for s in p.data["sessions"]] == [(pid_of("slow-query"), "terminate",
                                                                             "query")]
    cancel = plan(queries_longer_than="1s", cancel_first=True)
    assert cancel.data["sessions"][0]["op"] == "cancel"
    assert cancel.steps[0].startswith(f"cancel the query of pid {pid_of('slow-query')} ")
    assert "query running for 1.5s (limit 1s)" in cancel.steps[0]
    both = plan(idle_in_transaction_longer_than="1s", queries_longer_than="1s", cancel_first=True)
    assert both.summary.startswith("terminate and cancel 3 session(s)")


def test_own_session_and_excluded_users_are_never_chosen() -> None:
    own = copy.deepcopy(SNAPSHOT)
    own["self_pid"] = pid_of("idle-in-transaction")
    assert [s["pid"] for s in plan(own, idle_in_transaction_longer_than="1s").data["sessions"]] == [pid_of("aborted")]
    excluded = plan(idle_in_transaction_longer_than="1s", exclude_users=["postgres"])
    assert not excluded.changes
    assert excluded.refused is None


def test_nothing_over_the_limit_is_nothing_to_do() -> None:
    p = plan(idle_in_transaction_longer_than="10s", queries_longer_than="5m")
    assert not p.changes
    assert p.refused is None
    assert p.summary == ("nothing to do for check db: no session on postgres@127.0.0.1:5432/postgres is idle in "
                         "transaction longer than 10s or running a query longer than 5m")


def test_nothing_visible_says_the_role_cannot_see_other_sessions() -> None:
    blind = {**SNAPSHOT, "sees_all": False, "role": "app"}
    blind["sessions"] = [{**s, "state": None, "query": "<insufficient privilege>"} for s in SNAPSHOT["sessions"]]
    p = plan(blind, idle_in_transaction_longer_than="1s")
    assert "role app sees only its own sessions: grant it pg_monitor or pg_read_all_stats" in p.summary


def test_too_many_sessions_is_refused() -> None:
    p = plan(idle_in_transaction_longer_than="1s", queries_longer_than="1s", max_sessions=2)
    assert p.refused == ("3 sessions on postgres@127.0.0.1:5432/postgres match, more than max_sessions (2): ending "
                         "that many at once is for a person to decide")


def test_inspect_error_is_a_refusal() -> None:
    p = plan({"server": "postgres@db:5432", "error": "connection refused by 127.0.0.1:5432"},
             queries_longer_than="1s")
    assert p.refused == "cannot inspect postgres@db:5432: connection refused by 127.0.0.1:5432"


def test_secrets_stay_out_of_the_plan() -> None:
    secret_dsn = "postgresql://ops:hunter2-secret@127.0.0.1:5432/postgres"
    action = Terminate(TerminateParams.model_validate({"dsn": secret_dsn, "idle_in_transaction_longer_than": 1}))
    for snapshot in (SNAPSHOT, {"error": "boom"}):
        text = json.dumps(action.plan(TARGET, snapshot).as_dict())
        assert "hunter2" not in text
    assert "hunter2" not in repr(action.params)
