"""``postgres`` probe: connect with psycopg 3 (async), run one query, read server health.

One fresh connection per run (a health probe should pay for its connect, like
``pg_isready``), in autocommit mode, without prepared statements (so it also works behind
PgBouncer in transaction mode). Then:

1. the health query (``SELECT 1``, or the configured ``query``), timed as ``latency_ms``;
   with a configured query its first row is ``row`` (JSON-safe) and ``rows`` the count;
2. one catalog query for the built-in observations (``stats: false`` skips it):
   ``in_recovery``, ``max_connections``, ``connections``, ``connections_ratio``,
   ``longest_query_s``, ``idle_in_transaction``, ``longest_idle_in_transaction_s``,
   ``replication_lag_s`` (replicas only). Values that need ``pg_read_all_stats`` (part of
   ``pg_monitor``) are ``None`` for a role without it, rather than silently counting
   only the role's own sessions.

Always present: ``connected``, ``connect_ms``, ``latency_ms``, ``server_version`` and
``server_version_num`` (from the startup handshake, no query).

Timeouts: the engine's ``asyncio.wait_for`` is the exact deadline. libpq's
``connect_timeout`` (whole seconds) and a server-side ``statement_timeout`` (sent as a
startup option, default just under the check timeout) make the server give up on its side
too. When the engine cancels a run mid-query we do *not* let psycopg's
cancel-on-interrupt run: it opens a second connection to send a cancel request and then
waits up to 10 s, which against a hung server would hold the probe far past its timeout.
Instead the socket is shut down (the query fails at once with EOF) and then closed.

Errors: refused/reset/timeout/"starting up"/"too many clients" are the target failing
(CRITICAL); bad password, unknown role or database, a ``pg_hba.conf`` reject, missing
privileges and TLS verification are agent-side (UNKNOWN). libpq sometimes echoes parts of
the connection string, so every message is scrubbed of the password and DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import re
import socket
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qsl, unquote

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.kernel.durations import Duration, format_duration
from agent.kernel.errors import (
    AgentSideError,
    AuthError,
    ConnectionLostError,
    ConnectionRefusedProbeError,
    DNSError,
    ProbeError,
    ProbeTimeoutError,
    TargetError,
    TLSError,
)
from agent.kernel.models import Frozen
from agent.kernel.redact import MASK
from checks.base import CheckSpec, Probe

if TYPE_CHECKING:
    from psycopg import AsyncConnection

T = TypeVar("T")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
DEFAULT_QUERY = "SELECT 1"
_DRAIN_S = 0.5  # how long an aborted session may take to notice its socket is gone

# --------------------------------------------------------------------------- the DSN, without psycopg


def parse_keyvalue_dsn(text: str) -> dict[str, str]:
    """Parse libpq ``key=value`` syntax (values may be 'quoted' with \\ escapes).

    Raises ``ValueError`` with a message that never repeats any part of ``text``: a
    malformed DSN usually breaks inside the password.
    """
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and not text[i].isspace() and text[i] != "=":
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"item {len(params) + 1} of the key=value connection string has no 'key='")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value, i = _dsn_value(text, i, len(params) + 1)
        params[key] = value


def _dsn_value(text: str, i: int, item: int) -> tuple[str, int]:
    quoted = i < len(text) and text[i] == "'"
    i += 1 if quoted else 0
    out: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if (quoted and ch == "'") or (not quoted and ch.isspace()):
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    if quoted:
        raise ValueError(f"item {item} of the key=value connection string has an unterminated quote")
    return "".join(out), i


def parse_url_dsn(text: str) -> dict[str, str]:
    """The parts of a ``postgresql://user:pass@host:port/db?k=v`` URI (multi-host safe)."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError("a URL connection string must start with postgresql:// or postgres://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    params: dict[str, str] = {}
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    else:
        hosts = netloc
    if hosts:
        params["host"], params["port"] = _split_hosts(unquote(hosts))
    if path:
        params["dbname"] = unquote(path)
    params.update(parse_qsl(query, keep_blank_values=True))
    return {k: v for k, v in params.items() if v != ""}


def _split_hosts(hosts: str) -> tuple[str, str]:
    names, ports = [], []
    for item in hosts.split(","):
        if item.startswith("["):
            name, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            name, _, port = item.partition(":")
        names.append(name)
        ports.append(port)
    return ",".join(names), ",".join(ports) if any(ports) else ""


def parse_dsn(text: str) -> dict[str, str]:
    """Either DSN syntax, parsed the way libpq reads it (enough to validate and describe)."""
    return parse_url_dsn(text) if "://" in text else parse_keyvalue_dsn(text)


# --------------------------------------------------------------------------- spec


class PostgresConnection(Frozen):
    """Where a PostgreSQL server is and how to log in: shared by the probe and the
    ``postgres.terminate`` action, so both read the same keys the same way."""

    dsn: SecretStr | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    password: SecretStr | None = None
    dbname: str | None = None
    sslmode: SslMode | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    application_name: str = "paramedic"

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            if not value.get_secret_value().strip():
                raise ValueError("dsn must not be empty")
            parse_dsn(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _dsn_or_fields(self) -> PostgresConnection:
        fields = [f for f in ("host", "port", "user", "password", "dbname") if getattr(self, f) is not None]
        if self.dsn is not None and fields:
            raise ValueError(f"give either dsn or {', '.join(fields)}, not both")
        if self.dsn is None and self.host is None:
            raise ValueError("give dsn, or host (with port, user, password, dbname as needed)")
        if self.sslkey and not self.sslcert:
            raise ValueError("sslkey needs sslcert")
        return self


class PostgresSpec(CheckSpec, PostgresConnection):
    """A PostgreSQL server to connect to, and what to ask it."""

    type: Literal["postgres"]
    connect_timeout: int | None = Field(default=None, ge=1)
    statement_timeout: Duration | None = None
    query: str | None = None
    stats: bool = True

    default_conditions: ClassVar[tuple[str, ...]] = ("connected",)

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("query must not be empty (leave it out for SELECT 1)")
        return value

    def target(self) -> str:
        parts = parse_dsn(self.dsn.get_secret_value()) if self.dsn is not None else {}
        host = self.host or parts.get("host") or "localhost"
        port = str(self.port or parts.get("port") or 5432)
        user = self.user or parts.get("user")
        db = self.dbname or parts.get("dbname")
        where = f"[{host}]" if ":" in host and not host.startswith("/") else host
        text = f"{user}@{where}:{port}" if user else f"{where}:{port}"
        return f"{text}/{db}" if db else text

    def effective_statement_timeout(self) -> float:
        """Seconds; 0 means "do not send one". Default: just under the check timeout."""
        if self.statement_timeout is not None:
            return self.statement_timeout
        return max(self.timeout * 0.9, self.timeout - 0.5)

    def secrets(self) -> list[str]:
        """Every secret string this spec holds (decoded and as written), for scrubbing messages."""
        found = [self.password.get_secret_value()] if self.password is not None else []
        if self.dsn is not None:
            dsn = self.dsn.get_secret_value()
            found.append(dsn)
            with contextlib.suppress(ValueError):
                found.append(parse_dsn(dsn).get("password", ""))
            if "://" in dsn:
                netloc = re.split(r"[/?]", dsn.partition("://")[2], maxsplit=1)[0]
                found.append(netloc.rpartition("@")[0].partition(":")[2])
        return [s for s in found if s]


# --------------------------------------------------------------------------- connection parameters


def connection_params(spec: PostgresSpec, dsn_params: Mapping[str, str]) -> dict[str, str]:
    """libpq keywords for ``spec``; ``dsn_params`` is the DSN as libpq parsed it.

    Explicit spec fields win over the DSN; the DSN wins over our defaults
    (``application_name``, ``connect_timeout``); ``statement_timeout`` is appended to
    any ``options`` the DSN already carries.
    """
    params = {k: str(v) for k, v in dsn_params.items() if v is not None}
    explicit = {
        "host": spec.host, "port": spec.port, "user": spec.user, "dbname": spec.dbname,
        "password": spec.password.get_secret_value() if spec.password is not None else None,
        "sslmode": spec.sslmode, "sslrootcert": spec.sslrootcert,
        "sslcert": spec.sslcert, "sslkey": spec.sslkey, "connect_timeout": spec.connect_timeout,
    }
    params.update({k: str(v) for k, v in explicit.items() if v is not None})
    if "application_name" in spec.model_fields_set or "application_name" not in params:
        params["application_name"] = spec.application_name
    params.setdefault("connect_timeout", str(max(1, math.ceil(spec.timeout))))
    statement_ms = round(spec.effective_statement_timeout() * 1000)
    if statement_ms > 0:
        option = f"-c statement_timeout={statement_ms}"
        params["options"] = f"{params['options']} {option}" if params.get("options") else option
    return params


# --------------------------------------------------------------------------- the probe

#: Read by :meth:`evidence`, for an incident's timeline.
PG_SUMMARY_SQL = (
    "SELECT coalesce(state, '(background)') AS state, count(*) AS sessions,"
    " count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting_on_locks,"
    " round(coalesce(max(extract(epoch FROM now() - query_start)), 0)::numeric, 1) AS oldest_query_s"
    " FROM pg_stat_activity WHERE pid <> pg_backend_pid() GROUP BY 1 ORDER BY 2 DESC"
)
PG_OLDEST_SQL = (
    "SELECT pid, usename, datname, state, wait_event_type, wait_event,"
    " round(extract(epoch FROM now() - query_start)::numeric, 1) AS running_s, left(query, 300) AS query"
    " FROM pg_stat_activity WHERE state IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()"
    " ORDER BY query_start NULLS LAST LIMIT 5"
)
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'")
_SPACE = re.compile(r"\s+")


class PostgresProbe(Probe[PostgresSpec]):
    """Connects afresh each run; nothing is kept between runs."""

    evidence_label = "pg_stat_activity"
    evidence_scope = "failing"
    spec_model = PostgresSpec
    lazy_imports = ("psycopg", "psycopg.conninfo")

    async def observe(self) -> dict[str, Any]:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        spec = self.spec
        secrets = spec.secrets()
        try:
            dsn_params = conninfo_to_dict(spec.dsn.get_secret_value()) if spec.dsn is not None else {}
            params = connection_params(spec, {k: str(v) for k, v in dsn_params.items()})
            conninfo = make_conninfo("", **params)
        except psycopg.Error as exc:
            raise AgentSideError(scrub(f"invalid connection string: {first_line(exc)}", secrets)) from None
        started = time.perf_counter()
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)
        except psycopg.Error as exc:
            raise connect_error(str(exc), spec.target(), secrets) from None
        connect_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            return await _abortable(conn, self._session(conn, connect_ms))
        finally:
            await conn.close()

    async def _session(self, conn: AsyncConnection[Any], connect_ms: float) -> dict[str, Any]:
        import psycopg

        spec = self.spec
        out: dict[str, Any] = {"connected": True, "connect_ms": connect_ms}
        what = "query" if spec.query is not None else "health query"
        try:
            started = time.perf_counter()
            cur = await conn.execute(spec.query or DEFAULT_QUERY)
            first = await cur.fetchone() if cur.description else None
            out["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            if spec.query is not None:
                names = [c.name for c in cur.description or ()]
                out["row"] = json_row(names, first)
                out["rows"] = max(cur.rowcount, 0)
            out["server_version"] = conn.info.parameter_status("server_version")
            out["server_version_num"] = conn.info.server_version
            if spec.stats:
                what = "stats query"
                cur = await conn.execute(STATS_SQL)
                stats = await cur.fetchone()
                names = [c.name for c in cur.description or ()]
                out.update(stats_observations(dict(zip(names, stats or (), strict=False))))
        except psycopg.Error as exc:
            raise query_error(exc, what, spec, spec.secrets()) from None
        return out

    async def evidence(self, timeout: float) -> str:
        """Sessions per state, lock waits and the oldest queries (string literals masked), read only."""
        spec = self.spec
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        dsn = conninfo_to_dict(spec.dsn.get_secret_value()) if spec.dsn is not None else {}
        conninfo = make_conninfo("", **connection_params(spec, {k: str(v) for k, v in dsn.items()}))
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)
        try:
            cur = await conn.execute("SHOW max_connections")
            row = await cur.fetchone()
            limit = row[0] if row else "?"
            cur = await conn.execute(PG_SUMMARY_SQL)
            summary_rows = await cur.fetchall()
            cur = await conn.execute(PG_OLDEST_SQL)
            oldest = await cur.fetchall()
        finally:
            await conn.close()
        total = sum(int(r[1]) for r in summary_rows)
        lines = [f"sessions: {total} (max_connections {limit})",
                 "state | sessions | waiting on locks | oldest query (s)"]
        lines += [f"{r[0]} | {r[1]} | {r[2]} | {r[3]}" for r in summary_rows]
        if oldest:
            lines.append("oldest active queries (string literals masked):")
            for pid, user, db, state, wtype, wevent, secs, query in oldest:
                text = _SPACE.sub(" ", _SQL_LITERAL.sub("'?'", str(query or ""))).strip()
                wait = f" waiting {wtype}/{wevent}" if wtype else ""
                lines.append(f"pid {pid} {user}@{db} {state}{wait} {secs}s: {text[:200]}")
        return "\n".join(lines)


async def _abortable(conn: AsyncConnection[Any], work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` (which uses ``conn``) so that cancelling us ends it within ``_DRAIN_S``.

    A cancelled psycopg query tries a server-side cancel first (a new connection, then up
    to 5 s + 5 s of waiting): against a frozen server that would hold the engine's
    ``wait_for`` long past the check timeout. So ``work`` runs shielded in its own task,
    and on cancellation we shut the socket down: the pending read sees EOF, psycopg fails
    the query at once, and only then is the connection closed (closing the descriptor
    while psycopg still watches it could hit a reused descriptor number).
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        shutdown_socket(conn)
        done, _ = await asyncio.wait({task}, timeout=_DRAIN_S)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's exception as seen (we re-raise our own cancellation)."""
    if not task.cancelled():
        task.exception()


def shutdown_socket(conn: AsyncConnection[Any]) -> None:
    """``shutdown(SHUT_RDWR)`` the connection's socket without closing its descriptor."""
    try:
        fd = conn.pgconn.socket
    except Exception:  # the connection is already bad or closed
        return
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


# --------------------------------------------------------------------------- built-in observations

STATS_SQL = """
SELECT
  pg_is_in_recovery() AS in_recovery,
  current_setting('max_connections')::int AS max_connections,
  pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all,
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections,
  (SELECT coalesce(extract(epoch FROM max(now() - query_start)), 0) FROM pg_stat_activity
     WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  ) AS longest_query_s,
  (SELECT count(*) FROM pg_stat_activity
     WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')) AS idle_in_transaction,
  (SELECT coalesce(extract(epoch FROM max(now() - state_change)), 0) FROM pg_stat_activity
     WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
  ) AS longest_idle_in_transaction_s,
  CASE WHEN pg_is_in_recovery() THEN
    CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END
  END AS replication_lag_s
"""

_NEEDS_STATS_ROLE = ("connections", "longest_query_s", "idle_in_transaction", "longest_idle_in_transaction_s")


def stats_observations(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The stats row as observations; activity values are ``None`` without pg_read_all_stats."""
    sees_all = bool(raw.get("sees_all"))
    out: dict[str, Any] = {
        "in_recovery": raw.get("in_recovery"),
        "max_connections": raw.get("max_connections"),
    }
    for name in _NEEDS_STATS_ROLE:
        value = raw.get(name) if sees_all else None
        out[name] = _seconds(value) if name.endswith("_s") else value
    lag = raw.get("replication_lag_s")
    out["replication_lag_s"] = _seconds(lag)
    conns, limit = out["connections"], out["max_connections"]
    out["connections_ratio"] = round(conns / limit, 4) if conns is not None and limit else None
    return out


def _seconds(value: Any) -> float | None:
    return None if value is None else round(max(float(value), 0.0), 3)


def json_row(names: Sequence[str], row: Sequence[Any] | None) -> dict[str, Any] | None:
    """A result row as ``{column: value}`` with JSON-safe values (``None`` for no row)."""
    if row is None:
        return None
    return {name: json_value(value) for name, value in zip(names, row, strict=False)}


def json_value(value: Any) -> Any:
    """Decimal -> float, date/time -> ISO text, interval -> seconds, bytes -> hex, else str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------- errors

_SERVER_AT = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)'
    r'|on socket "(?P<socket>[^"]*)") failed: (?P<detail>.*)'
)
_TARGET_STATE = ("the database system is starting up", "the database system is shutting down",
                 "the database system is in recovery mode", "not yet accepting connections",
                 "too many clients", "remaining connection slots are reserved",
                 "is not currently accepting connections", "the database system is not accepting")
_LOST = ("server closed the connection unexpectedly", "connection reset", "eof detected",
         "connection has been closed unexpectedly", "broken pipe", "connection socket closed")
_DNS = ("could not translate host name", "failed to resolve host", "name or service not known",
        "temporary failure in name resolution", "nodename nor servname")
_AUTH = re.compile(
    r"password authentication failed|no password supplied|authentication failed|pg_hba\.conf"
    r'|^(role|database) ".*" does not exist|is not permitted to log in|permission denied'
    r"|must be superuser|sasl|scram|peer authentication|ident authentication",
    re.IGNORECASE,
)
_TLS = ("ssl", "certificate", "tls", "does not support ssl")


_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error text (libpq appends hints and attempt lists)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if isinstance(exc, BaseException) else "unknown error"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and any ``password=...``/URL password) masked."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PASSWORD_KV.sub(lambda m: m.group(1) + MASK, text)
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", rf"\1{MASK}@", text)


def _strip(detail: str) -> str:
    detail = detail.strip()
    for prefix in ("connection failed:", "connection is bad:", "FATAL:", "ERROR:", "fe_sendauth:"):
        if detail.startswith(prefix):
            detail = detail[len(prefix):].strip()
    return detail


def connect_error(message: str, target: str, secrets: Iterable[str] = ()) -> ProbeError:
    """Map a psycopg/libpq connection failure onto the error tree (pure: tested alone)."""
    line = first_line(message)
    match = _SERVER_AT.search(line)
    if match:
        where = match["socket"] or f"{match['host']}:{match['port']}"
        detail = _strip(match["detail"])
    else:
        where, detail = target, _strip(line)
    detail = scrub(detail, secrets)
    low = detail.lower()
    if any(s in low for s in _TARGET_STATE):
        return TargetError(f"{where}: {detail}")
    if "connection refused" in low:
        return ConnectionRefusedProbeError(f"connection refused by {where}")
    if "timeout expired" in low or "timed out" in low:
        return ProbeTimeoutError(f"connection to {where} timed out")
    if any(s in low for s in _DNS):
        return DNSError(f"cannot resolve {where}: {detail}")
    if any(s in low for s in _LOST):
        return ConnectionLostError(f"connection to {where} lost during connect: {detail}")
    if "pg_hba.conf" in low:  # before TLS: these messages end in "SSL off" / "no encryption"
        return AuthError(f"{where}: {detail}")
    if any(s in low for s in _TLS):
        return TLSError(f"TLS with {where} failed: {detail}")
    if _AUTH.search(detail):
        return AuthError(f"{where}: {detail}")
    if "no route to host" in low or "network is unreachable" in low:
        return TargetError(f"{where} is unreachable: {detail}")
    return TargetError(f"cannot connect to {where}: {detail}")


_AGENT_SIDE_CLASSES = ("42", "0A", "3D", "3F", "25", "0L", "0P", "2B")


def query_error(exc: Exception, what: str, spec: PostgresSpec, secrets: Iterable[str] = ()) -> ProbeError:
    """Map an error raised while querying (after connecting) onto the error tree."""
    sqlstate: str | None = getattr(exc, "sqlstate", None)
    detail = scrub(first_line(exc), secrets)
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    if sqlstate == "57014":
        limit = format_duration(spec.effective_statement_timeout())
        return TargetError(f"{what} cancelled on the server: {detail} (statement_timeout {limit})")
    if sqlstate is None or sqlstate.startswith("08"):
        low = detail.lower()
        if sqlstate or any(s in low for s in _LOST) or "consuming input failed" in low:
            return ConnectionLostError(f"connection to {spec.target()} lost during the {what}: {detail}")
        return TargetError(f"{what} failed: {detail}")
    if sqlstate.startswith("28") or sqlstate == "42501":
        return AuthError(f"{what} refused: {detail}{code}")
    if sqlstate.startswith(_AGENT_SIDE_CLASSES):
        return AgentSideError(f"{what} failed: {detail}{code}")
    return TargetError(f"{what} failed: {detail}{code}")


__all__ = ["PostgresProbe", "PostgresSpec", "connect_error", "connection_params", "query_error"]
