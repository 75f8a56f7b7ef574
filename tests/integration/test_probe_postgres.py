"""The postgres probe against real servers: the shared one (127.0.0.1:5432, read only) and
throwaway ones we stop, freeze, lock down, replicate from and put TLS on."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trustme

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import ProbeRunner, run_once
from checks.postgres import PostgresProbe, PostgresSpec
from tests.support.servers import free_port
from tests.support.services import PostgresServer
from tests.support.sockets import open_connections_to
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SHARED = "postgresql://postgres@127.0.0.1:5432/postgres"
BUILTIN = ("in_recovery", "max_connections", "connections", "connections_ratio", "longest_query_s",
           "idle_in_transaction", "longest_idle_in_transaction_s")


def spec(**fields: Any) -> PostgresSpec:
    return PostgresSpec.model_validate({"name": "pg", "type": "postgres", **fields})


def run(check: PostgresSpec) -> Result:
    """One run through the real runner, with a redactor that knows NO secrets: whatever
    stays out of the result here stayed out because the probe kept it out."""

    async def go() -> Result:
        probe = PostgresProbe(check)
        try:
            return await ProbeRunner().run(check, probe)
        finally:
            await probe.close()

    return asyncio.run(go())


def scalar(dsn: str, sql: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def shared_available() -> None:
    try:
        scalar(SHARED, "SELECT 1")
    except psycopg.OperationalError as exc:
        from tests.support.servers import server_missing

        server_missing(f"the shared PostgreSQL at 127.0.0.1:5432 ({exc})")


# --------------------------------------------------------------------------- healthy


def test_shared_server_is_ok_with_real_observations() -> None:
    shared_available()
    config = parse_config(f"checks:\n  - name: db\n    type: postgres\n    dsn: {SHARED}\n")
    [result] = asyncio.run(run_once(config.checks, config.redactor))

    assert result.status is Status.OK, result.message
    obs = result.observations
    assert obs["connected"] is True
    assert [c.expr for c in result.conditions] == ["connected"]
    assert obs["max_connections"] == int(scalar(SHARED, "SHOW max_connections"))
    assert obs["server_version_num"] == int(scalar(SHARED, "SHOW server_version_num"))
    assert obs["server_version"] == scalar(SHARED, "SHOW server_version")
    assert obs["in_recovery"] is False
    assert obs["replication_lag_s"] is None
    assert obs["connections"] >= 1  # at least our own session
    assert obs["connections_ratio"] == round(obs["connections"] / obs["max_connections"], 4)
    assert obs["connect_ms"] > 0
    assert obs["latency_ms"] > 0
    assert "row" not in obs  # only with a custom query
    json.dumps(result.as_dict())


def test_custom_query_row_is_usable_in_conditions() -> None:
    shared_available()
    query = ("SELECT 3 AS n, 2.5::numeric AS ratio, timestamptz '2024-01-02 03:04:05+00' AS at, "
             "'ok' AS state FROM generate_series(1, 4)")
    ok = run(spec(dsn=SHARED, query=query, conditions=["row.n == 3", "rows == 4", "row.ratio < 3"]))
    assert ok.status is Status.OK, ok.message
    assert ok.observations["row"] == {"n": 3, "ratio": 2.5, "at": "2024-01-02T03:04:05+00:00", "state": "ok"}

    failing = run(spec(dsn=SHARED, query=query, conditions=["row.n == 4"]))
    assert failing.status is Status.CRITICAL
    assert failing.conditions[0].actual == 3

    empty = run(spec(dsn=SHARED, query="SELECT 1 AS n WHERE false", conditions=["rows == 0"]))
    assert empty.status is Status.OK, empty.message
    assert empty.observations["row"] is None


def test_activity_observations_see_other_sessions(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    with psycopg.connect(server.dsn()) as idle, psycopg.connect(server.dsn(), autocommit=True) as busy:
        idle.execute("SELECT 1")  # opens a transaction and leaves it idle
        sleeper = threading.Thread(target=lambda: busy.execute("SELECT pg_sleep(1.5)"))
        sleeper.start()
        try:
            time.sleep(0.6)
            result = run(spec(dsn=server.dsn(), conditions=["idle_in_transaction == 0"]))
        finally:
            sleeper.join()
        idle.rollback()

    obs = result.observations
    assert result.status is Status.CRITICAL  # the idle transaction fails the condition
    assert result.conditions[0].actual == 1
    assert obs["longest_idle_in_transaction_s"] >= 0.5
    assert 0.5 <= obs["longest_query_s"] < 1.5
    assert obs["connections"] >= 3
    assert obs["max_connections"] == 40  # the throwaway server's setting


def test_least_privilege_role_with_pg_monitor(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE monitor LOGIN")
        conn.execute("GRANT pg_monitor TO monitor")
        conn.execute("CREATE ROLE nobody LOGIN")
        conn.execute("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
        conn.execute("GRANT CONNECT ON DATABASE postgres TO monitor, nobody")
        with psycopg.connect(server.dsn(), autocommit=True) as other:  # a session to be seen
            other.execute("SELECT 1")
            monitor = run(spec(host=server.host, port=server.port, user="monitor", dbname="postgres"))
            nobody = run(spec(host=server.host, port=server.port, user="nobody", dbname="postgres"))

    assert monitor.status is Status.OK, monitor.message
    for name in BUILTIN:
        assert monitor.observations[name] is not None, name
    assert monitor.observations["connections"] >= 3  # us, the fixture's admin session, "other"

    assert nobody.status is Status.OK, nobody.message  # connected; stats are partial
    assert nobody.observations["max_connections"] == 40
    assert nobody.observations["in_recovery"] is False
    for name in ("connections", "connections_ratio", "longest_query_s", "idle_in_transaction"):
        assert nobody.observations[name] is None, name


# --------------------------------------------------------------------------- target failing


def test_stopped_server_is_critical_connection_refused(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    server.stop()
    result = run(spec(dsn=server.dsn()))
    assert result.status is Status.CRITICAL
    assert result.message == f"connection refused by 127.0.0.1:{server.port}"
    assert result.error == "ConnectionRefusedProbeError"


def test_frozen_server_times_out_and_leaves_no_socket(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    server.freeze()
    started = time.monotonic()
    result = run(spec(dsn=server.dsn(), timeout="1s"))
    took = time.monotonic() - started

    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 1s"
    assert took < 1.5
    assert open_connections_to(server.port) == 0


def test_server_frozen_mid_query_ends_at_the_timeout(throwaway_postgres: PostgresServer) -> None:
    """psycopg's own cancel-on-interrupt would wait ~10 s here; the probe must not."""
    server = throwaway_postgres
    freezer = threading.Timer(0.4, server.freeze)
    freezer.start()
    started = time.monotonic()
    try:
        result = run(spec(dsn=server.dsn(), timeout="1500ms", statement_timeout=0,
                          query="SELECT pg_sleep(0.8)"))
    finally:
        freezer.join()
    took = time.monotonic() - started

    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 1.5s"
    assert took < 2.1
    assert open_connections_to(server.port) == 0


def test_statement_timeout_cancels_a_slow_query_on_the_server() -> None:
    shared_available()
    started = time.monotonic()
    result = run(spec(dsn=SHARED, timeout="5s", statement_timeout="300ms", query="SELECT pg_sleep(4)"))
    assert time.monotonic() - started < 2
    assert result.status is Status.CRITICAL
    assert result.error == "TargetError"
    assert "statement timeout" in result.message
    assert "statement_timeout 300ms" in result.message


# --------------------------------------------------------------------------- agent side


def test_wrong_password_is_unknown_and_never_leaks(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    secret = "Wr0ng-pa55word!"
    forms: dict[str, dict[str, Any]] = {
        "url": {"dsn": server.dsn("paramedic", secret, dbname="paramedic")},
        "keyvalue": {"dsn": f"host=127.0.0.1 port={server.port} user=paramedic password='{secret}' "
                            "dbname=paramedic"},
        "fields": {"host": "127.0.0.1", "port": server.port, "user": "paramedic", "password": secret,
                   "dbname": "paramedic"},
    }
    for form, fields in forms.items():
        result = run(spec(**fields))
        assert result.status is Status.UNKNOWN, form
        assert result.error == "AuthError", form
        assert result.message == f'127.0.0.1:{server.port}: password authentication failed for user "paramedic"'
        assert secret not in json.dumps(result.as_dict()), form


def test_right_password_is_ok(throwaway_postgres: PostgresServer) -> None:
    result = run(spec(dsn=throwaway_postgres.password_dsn, stats=False))
    assert result.status is Status.OK, result.message
    assert "in_recovery" not in result.observations


def test_unknown_role_database_or_missing_password_is_unknown(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    cases = [("ghost", "postgres", 'role "ghost" does not exist'),
             ("postgres", "nowhere", 'database "nowhere" does not exist'),
             ("paramedic", "paramedic", "no password supplied")]
    for user, dbname, expected in cases:
        result = run(spec(host="127.0.0.1", port=server.port, user=user, dbname=dbname))
        assert result.status is Status.UNKNOWN, expected
        assert result.error == "AuthError", expected
        assert result.message == f"127.0.0.1:{server.port}: {expected}"


def test_pg_hba_reject_is_unknown(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    hba = server.datadir / "pg_hba.conf"
    hba.write_text("host all outcast 127.0.0.1/32 reject\n" + hba.read_text())
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE outcast LOGIN")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)
    result = run(spec(host="127.0.0.1", port=server.port, user="outcast", dbname="postgres"))
    assert result.status is Status.UNKNOWN
    assert result.error == "AuthError"
    assert "pg_hba.conf rejects connection" in result.message


def test_query_errors_map_to_the_right_status() -> None:
    shared_available()
    syntax = run(spec(dsn=SHARED, query="SELEC 1"))
    assert syntax.status is Status.UNKNOWN
    assert syntax.message == 'query failed: syntax error at or near "SELEC" (SQLSTATE 42601)'
    division = run(spec(dsn=SHARED, query="SELECT 1/0"))
    assert division.status is Status.CRITICAL
    assert division.message == "query failed: division by zero (SQLSTATE 22012)"


# --------------------------------------------------------------------------- replica


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL's tools refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _postgres_dir(prefix: str) -> Path:
    """A fresh /tmp directory the ``postgres`` user owns (pytest's tmp_path is root-only).

    The ``owner`` file lets the fixtures' reaper clean up after a killed session.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / "owner").write_text(f"{os.getpid()}\n")
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


@pytest.fixture
def replica(throwaway_postgres: PostgresServer) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A streaming replica of the throwaway primary (pg_basebackup -R)."""
    primary = throwaway_postgres
    hba = primary.datadir / "pg_hba.conf"
    hba.write_text(hba.read_text() + "host replication all 127.0.0.1/32 trust\n")
    scalar(primary.dsn(), "SELECT pg_reload_conf()")
    root = _postgres_dir("paramedic-pg-replica-")
    backup = [str(primary.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
              "-U", "postgres", "-D", str(root / "data"), "-R", "-X", "stream", "--no-sync", "-c", "fast"]
    try:
        done = subprocess.run(_as_postgres(backup), capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        with (root / "data" / "postgresql.conf").open("a") as conf:
            conf.write(f"unix_socket_directories = '{root}'\n")
        standby = PostgresServer(bindir=primary.bindir, root=root, port=free_port())
        standby.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        wait_until(lambda: scalar(standby.dsn(), "SELECT pg_last_wal_receive_lsn() IS NOT NULL") or None,
                   timeout=20, what="replica streaming")
        yield primary, standby
    finally:
        standby.cleanup()


def test_replica_reports_recovery_and_lag(replica: tuple[PostgresServer, PostgresServer]) -> None:
    primary, standby = replica
    on_replica = run(spec(dsn=standby.dsn(), conditions=["in_recovery", "replication_lag_s < 30s"]))
    assert on_replica.status is Status.OK, on_replica.message
    lag = on_replica.observations["replication_lag_s"]
    assert isinstance(lag, float)
    assert lag >= 0

    on_primary = run(spec(dsn=primary.dsn(), conditions=["not in_recovery"]))
    assert on_primary.status is Status.OK, on_primary.message
    assert on_primary.observations["replication_lag_s"] is None


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_postgres(throwaway_postgres: PostgresServer, tmp_path: Path) -> tuple[PostgresServer, Path]:
    """The throwaway server with TLS on (a trustme CA); returns it and the CA file."""
    server = throwaway_postgres
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(server.datadir / "server.crt"))
    cert.private_key_pem.write_to_path(str(server.datadir / "server.key"))
    for name in ("server.crt", "server.key"):
        shutil.chown(server.datadir / name, "postgres", "postgres")
        (server.datadir / name).chmod(0o600)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET ssl = on")
        conn.execute("SELECT pg_reload_conf()")
    wait_until(lambda: scalar(server.dsn(), "SHOW ssl") == "on" or None, timeout=10, what="ssl on")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


def test_tls_verify_full_ok_and_wrong_ca_is_unknown(
    tls_postgres: tuple[PostgresServer, Path], tmp_path: Path
) -> None:
    server, ca_file = tls_postgres
    ok = run(spec(dsn=server.dsn(), sslmode="verify-full", sslrootcert=str(ca_file)))
    assert ok.status is Status.OK, ok.message

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    bad = run(spec(dsn=server.dsn(), sslmode="verify-full", sslrootcert=str(other_ca)))
    assert bad.status is Status.UNKNOWN
    assert bad.error == "TLSError"
    assert "certificate verify failed" in bad.message


def test_tls_required_but_server_has_none_is_unknown(throwaway_postgres: PostgresServer) -> None:
    result = run(spec(dsn=throwaway_postgres.dsn(), sslmode="require"))
    assert result.status is Status.UNKNOWN
    assert result.error == "TLSError"
    assert "server does not support SSL" in result.message
