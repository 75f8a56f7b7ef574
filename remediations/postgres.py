"""``postgres.terminate``: end sessions idle in a transaction too long, or queries running too long.

The seed's database runbook: a session left ``idle in transaction`` holds its locks and
its snapshot (vacuum cannot clean behind it) until someone ends it; a runaway query holds
a connection and CPU. This action lists those sessions and ends exactly those.

* ``inspect`` connects (the ``postgres`` probe's connection logic: same keys, same
  timeouts, autocommit, no prepared statements) and reads ``pg_stat_activity``: every
  session but its own, with ages computed by the server (no clock skew between us and it).
* ``plan`` (pure) picks the candidates: client backends only (never a ``walsender``, a
  logical replication worker, autovacuum or any other background process), never the
  agent's own session, never a role in ``exclude_users``; idle in transaction longer than
  ``idle_in_transaction_longer_than``, or an active query older than
  ``queries_longer_than``. None: nothing to do. More than ``max_sessions``: refused, because
  a fix that ends that many sessions at once is a decision for a person (blast radius).
* ``apply`` ends exactly the planned sessions, each with one guarded statement
  (``SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = .. AND
  backend_start = .. AND state_change/query_start = ..``): a pid recycled by a new backend,
  or a session that has moved on (committed, or finished its query) since the plan, matches
  no row and is left alone. With ``cancel_first``, long queries get ``pg_cancel_backend``
  first (the session survives, the query fails) and are terminated only if the same query
  still runs after ``cancel_grace``. A role without the right to signal a backend
  (superuser, ``pg_signal_backend``, or the same role) gets ``ok: false`` and the reason.

The plan and the outcome never contain the connection string or password: ``apply``
connects with the step's own params, and ``data`` carries only pids and timestamps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from agent.kernel.durations import Duration, format_duration
from checks.postgres import (
    PostgresConnection,
    PostgresSpec,
    connect_error,
    connection_params,
    first_line,
    json_value,
    scrub,
)
from remediations.base import Outcome, Params, Plan, Remediation, Target

if TYPE_CHECKING:
    from psycopg import AsyncConnection

IDLE_STATES = ("idle in transaction", "idle in transaction (aborted)")
CLIENT_BACKEND = "client backend"
#: How often ``apply`` looks whether terminated sessions are gone / cancelled queries stopped.
POLL_INTERVAL = 0.1

ACTIVITY_SQL = """
SELECT pid, backend_type, usename, application_name, host(client_addr) AS client_addr, state,
       backend_start, state_change, query_start,
       extract(epoch FROM clock_timestamp() - state_change)::float8 AS state_age_s,
       extract(epoch FROM clock_timestamp() - query_start)::float8 AS query_age_s,
       left(query, 200) AS query
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
ORDER BY pid
"""

SELF_SQL = """
SELECT pg_backend_pid() AS self_pid, current_user AS role,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all
"""

#: The guard: the same backend (pid + backend_start) still in the same idle period / query.
_SAME = ("FROM pg_stat_activity WHERE pid = %(pid)s AND backend_start = %(backend_start)s::timestamptz "
         "AND ((%(kind)s = 'idle' AND state_change = %(since)s::timestamptz AND state LIKE 'idle in transaction%%') "
         "OR (%(kind)s = 'query' AND query_start = %(since)s::timestamptz AND state = 'active'))")
SIGNAL_SQL = {
    "terminate": "SELECT pg_terminate_backend(pid) AS done " + _SAME,
    "cancel": "SELECT pg_cancel_backend(pid) AS done " + _SAME,
}
STILL_THERE_SQL = "SELECT 1 " + _SAME


class TerminateParams(Params, PostgresConnection):
    """Where to connect (the ``postgres`` probe's keys) and which sessions to end."""

    timeout: Duration = Field(default=10.0, gt=0, description="connect and per-statement limit")
    idle_in_transaction_longer_than: Duration | None = None
    queries_longer_than: Duration | None = None
    cancel_first: bool = False
    cancel_grace: Duration = 5.0
    exclude_users: tuple[str, ...] = ()
    max_sessions: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> TerminateParams:
        if self.idle_in_transaction_longer_than is None and self.queries_longer_than is None:
            raise ValueError("set idle_in_transaction_longer_than, queries_longer_than, or both")
        return self

    def spec(self) -> PostgresSpec:
        """The same connection as a ``postgres`` check would make (shared logic and validation)."""
        keys = ("dsn", "host", "port", "user", "password", "dbname", "sslmode", "sslrootcert", "sslcert",
                "sslkey", "application_name")
        fields = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        return PostgresSpec(name="postgres-terminate", type="postgres", timeout=self.timeout, stats=False, **fields)


# --------------------------------------------------------------------------- the plan (pure)


def candidate(s: Mapping[str, Any], params: TerminateParams, self_pid: int | None) -> dict[str, Any] | None:
    """What to do with one ``pg_stat_activity`` row: ``{pid, op, kind, since, reason...}`` or None."""
    if s.get("backend_type") != CLIENT_BACKEND or s.get("pid") == self_pid or not s.get("usename"):
        return None
    if s["usename"] in params.exclude_users:
        return None
    state = s.get("state")
    idle_limit, query_limit = params.idle_in_transaction_longer_than, params.queries_longer_than
    if idle_limit is not None and state in IDLE_STATES and (s.get("state_age_s") or 0) > idle_limit:
        age, kind, since, op = float(s["state_age_s"]), "idle", s.get("state_change"), "terminate"
        why = f"{state} for {format_duration(round(age, 1))} (limit {format_duration(idle_limit)})"
    elif query_limit is not None and state == "active" and (s.get("query_age_s") or 0) > query_limit:
        age, kind, since = float(s["query_age_s"]), "query", s.get("query_start")
        op = "cancel" if params.cancel_first else "terminate"
        why = f"query running for {format_duration(round(age, 1))} (limit {format_duration(query_limit)})"
    else:
        return None
    return {
        "pid": s["pid"], "backend_start": s.get("backend_start"), "kind": kind, "since": since, "op": op,
        "user": s["usename"], "application_name": s.get("application_name") or "",
        "client_addr": s.get("client_addr"), "state": state, "age_s": round(age, 3), "reason": why,
        "query": s.get("query") or "",
    }


def describe_session(c: Mapping[str, Any]) -> str:
    """``terminate pid 4242 (user app, application 'psql', from 10.0.0.7): idle in transaction for 42s``."""
    parts = [f"user {c['user']}"]
    if c.get("application_name"):
        parts.append(f"application {c['application_name']!r}")
    parts.append(f"from {c['client_addr']}" if c.get("client_addr") else "local socket")
    verb = "cancel the query of" if c["op"] == "cancel" else "terminate"
    return f"{verb} pid {c['pid']} ({', '.join(parts)}): {c['reason']}"


# --------------------------------------------------------------------------- the action


class Terminate(Remediation[TerminateParams]):
    """End PostgreSQL sessions idle in transaction, or running queries, for too long."""

    action: ClassVar[str] = "postgres.terminate"
    params_model: ClassVar[type[TerminateParams]] = TerminateParams

    async def inspect(self, target: Target) -> dict[str, Any]:
        spec = self.params.spec()
        try:
            conn = await self._connect(spec)
        except _Failed as exc:
            return {"server": spec.target(), "error": str(exc)}
        try:
            who = await (await conn.execute(SELF_SQL)).fetchone()
            cur = await conn.execute(ACTIVITY_SQL)
            names = [c.name for c in cur.description or ()]
            rows = [{n: json_value(v) for n, v in zip(names, row, strict=True)} for row in await cur.fetchall()]
        except Exception as exc:
            return {"server": spec.target(), "error": self._error(exc, "reading pg_stat_activity")}
        finally:
            await conn.close()
        self_pid, role, sees_all = who if who else (None, None, False)
        return {"server": spec.target(), "self_pid": self_pid, "role": role, "sees_all": bool(sees_all),
                "sessions": rows}

    def plan(self, target: Target, snapshot: Mapping[str, Any]) -> Plan:
        p = self.params
        server = str(snapshot.get("server") or p.spec().target())
        if snapshot.get("error"):
            return Plan.refuse(self.action, target, f"cannot inspect {server}: {snapshot['error']}")
        chosen = [c for s in snapshot.get("sessions") or ()
                  if (c := candidate(s, p, snapshot.get("self_pid"))) is not None]
        if not chosen:
            return Plan.nothing(self.action, target, self._none_reason(server, snapshot))
        if len(chosen) > p.max_sessions:
            return Plan.refuse(self.action, target, (
                f"{len(chosen)} sessions on {server} match, more than max_sessions ({p.max_sessions}): ending that "
                "many at once is for a person to decide"))
        steps = tuple(describe_session(c) for c in chosen)
        keep = ("pid", "backend_start", "kind", "since", "op", "user", "state", "age_s")
        data = {"server": server, "cancel_grace": p.cancel_grace,
                "sessions": [{k: c[k] for k in keep} for c in chosen]}
        ops = sorted({c["op"] for c in chosen}, reverse=True)
        summary = f"{' and '.join(ops)} {len(chosen)} session(s) on {server}: pids " + ", ".join(
            str(c["pid"]) for c in chosen)
        return Plan(self.action, target.describe(), True, summary, steps=steps, data=data)

    def _none_reason(self, server: str, snapshot: Mapping[str, Any]) -> str:
        p = self.params
        limits = []
        if p.idle_in_transaction_longer_than is not None:
            limits.append(f"idle in transaction longer than {format_duration(p.idle_in_transaction_longer_than)}")
        if p.queries_longer_than is not None:
            limits.append(f"running a query longer than {format_duration(p.queries_longer_than)}")
        text = f"no session on {server} is {' or '.join(limits)}"
        if not snapshot.get("sees_all"):
            text += (f" (role {snapshot.get('role')} sees only its own sessions: grant it pg_monitor or "
                     "pg_read_all_stats to see the others)")
        return text

    async def apply(self, plan: Plan) -> Outcome:
        spec = self.params.spec()
        try:
            conn = await self._connect(spec)
        except _Failed as exc:
            return Outcome(False, f"cannot connect to {spec.target()}: {exc}")
        try:
            return await self._signal_all(conn, list(plan.data.get("sessions") or ()))
        finally:
            await conn.close()

    async def _signal_all(self, conn: AsyncConnection[Any], sessions: list[dict[str, Any]]) -> Outcome:
        results: list[dict[str, Any]] = []
        for s in sessions:
            results.append({"pid": s["pid"], "op": s["op"], **await self._signal(conn, s, s["op"])})
        pairs = list(zip(sessions, results, strict=True))
        cancelled = [(s, r) for s, r in pairs if r["result"] == "cancelled"]
        if cancelled:
            await self._escalate(conn, cancelled, float(self.params.cancel_grace))
        terminated = [s for s, r in pairs if r["result"] == "terminated"]
        if terminated:
            await self._wait_gone(conn, terminated)
        return _outcome(results)

    async def _signal(self, conn: AsyncConnection[Any], s: Mapping[str, Any], op: str) -> dict[str, Any]:
        args = {"pid": s["pid"], "backend_start": s["backend_start"], "kind": s["kind"], "since": s["since"]}
        try:
            row = await (await conn.execute(SIGNAL_SQL[op], args)).fetchone()
        except Exception as exc:
            return {"result": "failed", "error": self._error(exc, f"pg_{op}_backend({s['pid']})")}
        if row is None:
            return {"result": "moved on", "detail": "the session ended or moved on since the plan: left alone"}
        if not row[0]:
            return {"result": "failed", "error": f"pg_{op}_backend({s['pid']}) returned false"}
        return {"result": "terminated" if op == "terminate" else "cancelled"}

    async def _escalate(
        self, conn: AsyncConnection[Any], cancelled: Sequence[tuple[dict[str, Any], dict[str, Any]]], grace: float
    ) -> None:
        """Terminate cancelled sessions still running the same query after ``grace`` seconds."""
        deadline = time.monotonic() + grace
        pending = list(cancelled)
        while pending:
            still = []
            for s, r in pending:
                if await self._still_there(conn, s):
                    still.append((s, r))
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            await self.context.sleep(POLL_INTERVAL)
        for s, r in pending:
            outcome = await self._signal(conn, s, "terminate")
            r.update(outcome if outcome["result"] != "terminated" else {"result": "terminated",
                                                                         "detail": "cancel did not stop it"})

    async def _wait_gone(self, conn: AsyncConnection[Any], sessions: Sequence[Mapping[str, Any]]) -> None:
        """Give terminated backends up to ``timeout`` to exit, so a verify that follows sees them gone."""
        deadline = time.monotonic() + float(self.params.timeout)
        pending = list(sessions)
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if await self._still_there(conn, s, any_activity=True)]
            if pending:
                await self.context.sleep(POLL_INTERVAL)

    async def _still_there(
        self, conn: AsyncConnection[Any], s: Mapping[str, Any], any_activity: bool = False
    ) -> bool:
        try:
            if any_activity:
                cur = await conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s::timestamptz",
                    (s["pid"], s["backend_start"]))
            else:
                args = {"pid": s["pid"], "backend_start": s["backend_start"], "kind": s["kind"], "since": s["since"]}
                cur = await conn.execute(STILL_THERE_SQL, args)
            return await cur.fetchone() is not None
        except Exception:
            return False

    async def _connect(self, spec: PostgresSpec) -> AsyncConnection[Any]:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        secrets = spec.secrets()
        try:
            dsn_params = conninfo_to_dict(spec.dsn.get_secret_value()) if spec.dsn is not None else {}
            conninfo = make_conninfo("", **connection_params(spec, {k: str(v) for k, v in dsn_params.items()}))
        except psycopg.Error as exc:
            raise _Failed(scrub(f"invalid connection string: {first_line(exc)}", secrets)) from None
        try:
            return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)
        except psycopg.Error as exc:
            raise _Failed(str(connect_error(str(exc), spec.target(), secrets))) from None

    def _error(self, exc: BaseException, what: str) -> str:
        """A readable, secret-free message; missing privileges say what is missing."""
        secrets = self.params.spec().secrets()
        sqlstate = getattr(exc, "sqlstate", None)
        detail = scrub(first_line(exc), secrets)
        if sqlstate == "42501":
            return (f"{what}: permission denied: {detail} (the role needs superuser, membership of "
                    "pg_signal_backend, or to be the session's own role)")
        code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        return f"{what} failed: {detail}{code}"


class _Failed(Exception):
    """Connecting failed; the message is already scrubbed of secrets."""


def _outcome(results: list[dict[str, Any]]) -> Outcome:
    ended = [r for r in results if r["result"] in ("terminated", "cancelled")]
    failed = [r for r in results if r["result"] == "failed"]
    moved = [r for r in results if r["result"] == "moved on"]
    parts = []
    for label, group in (("terminated", [r for r in ended if r["result"] == "terminated"]),
                         ("cancelled the query of", [r for r in ended if r["result"] == "cancelled"]),
                         ("left alone (moved on since the plan)", moved)):
        if group:
            parts.append(f"{label} pid " + ", ".join(str(r["pid"]) for r in group))
    for r in failed:
        parts.append(r["error"])
    data = {"sessions": results, "ended": [r["pid"] for r in ended], "failed": [r["pid"] for r in failed]}
    return Outcome(not failed, "; ".join(parts) or "nothing was done", data)


__all__ = ["Terminate", "TerminateParams", "candidate"]
