"""The postgres probe's pure parts: spec validation, DSN handling, error mapping, values."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from agent.config.model import parse_config
from agent.kernel.errors import (
    AgentSideError,
    AuthError,
    ConfigError,
    ConnectionLostError,
    ConnectionRefusedProbeError,
    DNSError,
    ProbeTimeoutError,
    TargetError,
    TLSError,
)
from checks.postgres import (
    PostgresSpec,
    connect_error,
    connection_params,
    json_row,
    json_value,
    parse_dsn,
    parse_keyvalue_dsn,
    query_error,
    scrub,
    stats_observations,
)


def spec(**fields: Any) -> PostgresSpec:
    return PostgresSpec.model_validate({"name": "pg", "type": "postgres", **fields})


# --------------------------------------------------------------------------- spec


def test_minimal_specs_and_default_condition() -> None:
    by_dsn = spec(dsn="postgresql://u@db/app")
    by_host = spec(host="db")
    assert [c.expr for c in by_dsn.effective_conditions()] == ["connected"]
    assert by_host.application_name == "paramedic"
    assert by_host.stats is True
    assert by_host.query is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "give dsn, or host"),
        ({"dsn": "postgresql://db/x", "host": "db"}, "give either dsn or host, not both"),
        ({"dsn": "postgresql://db/x", "password": "pw"}, "give either dsn or password, not both"),
        ({"host": "db", "sslmode": "verify"}, "sslmode"),
        ({"host": "db", "connect_timeout": 0}, "connect_timeout"),
        ({"host": "db", "port": 70000}, "port"),
        ({"host": "db", "sslkey": "k.pem"}, "sslkey needs sslcert"),
        ({"host": "db", "query": "  "}, "query must not be empty"),
        ({"dsn": "mysql://db/x"}, "postgresql://"),
        ({"dsn": " "}, "dsn must not be empty"),
        ({"host": "db", "statement_timeout": "soon"}, "valid duration"),
        ({"host": "db", "unknown": 1}, "Extra inputs"),
    ],
)
def test_invalid_specs(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        spec(**fields)


def test_malformed_dsn_is_a_config_error_that_does_not_echo_the_secret() -> None:
    text = """
checks:
  - name: db
    type: postgres
    dsn: "host=db password='hunter2 secret"
  - name: db2
    type: postgres
    dsn: "host=db password=hunter3 secret2"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    joined = "\n".join(info.value.problems)
    assert "checks[0].dsn" in joined
    assert "unterminated quote" in joined
    assert "checks[1].dsn" in joined
    for secret in ("hunter2", "hunter3", "secret2"):
        assert secret not in joined


def test_config_collects_the_password_for_the_redactor() -> None:
    config = parse_config("checks:\n  - {name: db, type: postgres, host: db, password: s3cr3t-pw}\n")
    assert config.redactor.text("oops s3cr3t-pw") == "oops ***"


def test_target_never_shows_a_password() -> None:
    assert spec(dsn="postgresql://app:pa%40ss@db.internal:6432/orders?sslmode=require").target() == (
        "app@db.internal:6432/orders"
    )
    assert spec(dsn="host=db user=app password='x y' dbname=orders").target() == "app@db:5432/orders"
    assert spec(host="db", user="app", password="pw").target() == "app@db:5432"
    assert spec(host="::1", port=5433).target() == "[::1]:5433"
    assert spec(dsn="postgresql://a:b@h1:5432,h2:5433/x").target() == "a@h1,h2:5432,5433/x"


def test_secrets_cover_decoded_and_raw_url_passwords() -> None:
    url = "postgresql://app:pa%40ss@db/orders"
    assert set(spec(dsn=url).secrets()) == {url, "pa@ss", "pa%40ss"}
    assert "x y" in spec(dsn="host=db password='x y'").secrets()
    assert spec(host="db", password="pw!").secrets() == ["pw!"]


# --------------------------------------------------------------------------- DSN parsing


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db port=5432 user=app dbname=orders",
        "host = db  user=app   password='it''s'",
        r"host=db password='a\'b\\c d' dbname=x",
        r"host=db password=a\ b",
        "host=db password=",
        "postgresql://app:p%40ss@db:6432/orders?sslmode=require&application_name=x",
        "postgres://db",
        "postgresql://app@h1:5432,h2:5433/orders",
        "postgresql://[::1]:5433/x",
        "postgresql:///orders?host=/var/run/postgresql",
    ],
)
def test_parse_dsn_agrees_with_libpq(dsn: str) -> None:
    try:
        expected = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v not in (None, "")}
    except psycopg.ProgrammingError:
        with pytest.raises(ValueError):  # noqa: PT011 - any ValueError is a config error
            parse_dsn(dsn)
        return
    assert {k: v for k, v in parse_dsn(dsn).items() if v} == expected


def test_parse_keyvalue_errors_are_secret_free() -> None:
    with pytest.raises(ValueError, match="item 3") as info:
        parse_keyvalue_dsn("host=db password=abc def")
    assert "def" not in str(info.value)
    assert "abc" not in str(info.value)


# --------------------------------------------------------------------------- connection params


def test_params_from_fields_with_defaults() -> None:
    params = connection_params(spec(host="db", port=6432, user="app", password="pw", dbname="x"), {})
    assert params == {
        "host": "db", "port": "6432", "user": "app", "password": "pw", "dbname": "x",
        "application_name": "paramedic", "connect_timeout": "5",
        "options": "-c statement_timeout=4500",
    }


def test_params_from_dsn_keep_its_choices_but_explicit_fields_win() -> None:
    dsn = {"host": "db", "application_name": "theirs", "connect_timeout": "3",
           "options": "-c search_path=app", "sslmode": "prefer"}
    params = connection_params(spec(dsn="host=db", sslmode="verify-full", sslrootcert="/ca.pem"), dsn)
    assert params["application_name"] == "theirs"
    assert params["connect_timeout"] == "3"
    assert params["options"] == "-c search_path=app -c statement_timeout=4500"
    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == "/ca.pem"
    named = connection_params(spec(dsn="host=db", application_name="probe"), dsn)
    assert named["application_name"] == "probe"


@pytest.mark.parametrize(
    ("fields", "connect_timeout", "options"),
    [
        ({"timeout": "1s"}, "1", "-c statement_timeout=900"),
        ({"timeout": "2.5s"}, "3", "-c statement_timeout=2250"),
        ({"timeout": "60s"}, "60", "-c statement_timeout=59500"),
        ({"timeout": "300ms"}, "1", "-c statement_timeout=270"),
        ({"statement_timeout": "250ms", "connect_timeout": 2}, "2", "-c statement_timeout=250"),
        ({"statement_timeout": 0}, "5", None),
    ],
)
def test_timeouts(fields: dict[str, Any], connect_timeout: str, options: str | None) -> None:
    params = connection_params(spec(host="db", **fields), {})
    assert params["connect_timeout"] == connect_timeout
    assert params.get("options") == options


# --------------------------------------------------------------------------- connect errors

AT = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '


@pytest.mark.parametrize(
    ("message", "kind", "text"),
    [
        (AT + "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
         ConnectionRefusedProbeError, "connection refused by 10.0.0.5:5432"),
        ("connection timeout expired", ProbeTimeoutError, "connection to db:5432 timed out"),
        (AT + "FATAL:  the database system is starting up", TargetError,
         "10.0.0.5:5432: the database system is starting up"),
        (AT + "FATAL:  the database system is shutting down", TargetError,
         "10.0.0.5:5432: the database system is shutting down"),
        (AT + "FATAL:  sorry, too many clients already", TargetError,
         "10.0.0.5:5432: sorry, too many clients already"),
        (AT + "server closed the connection unexpectedly\n\tThis probably means...", ConnectionLostError,
         "connection to 10.0.0.5:5432 lost during connect: server closed the connection unexpectedly"),
        ("failed to resolve host 'db.invalid': [Errno -2] Name or service not known", DNSError,
         "cannot resolve db:5432: failed to resolve host 'db.invalid': [Errno -2] Name or service not known"),
        (AT + 'FATAL:  password authentication failed for user "app"', AuthError,
         '10.0.0.5:5432: password authentication failed for user "app"'),
        (AT + "fe_sendauth: no password supplied", AuthError, "10.0.0.5:5432: no password supplied"),
        (AT + 'FATAL:  role "ghost" does not exist', AuthError, '10.0.0.5:5432: role "ghost" does not exist'),
        (AT + 'FATAL:  database "nope" does not exist', AuthError,
         '10.0.0.5:5432: database "nope" does not exist'),
        (AT + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "x", SSL off',
         AuthError, '10.0.0.5:5432: no pg_hba.conf entry for host "10.0.0.9", user "app", database "x", SSL off'),
        (AT + 'FATAL:  permission denied for database "x"', AuthError,
         '10.0.0.5:5432: permission denied for database "x"'),
        (AT + "SSL error: certificate verify failed", TLSError,
         "TLS with 10.0.0.5:5432 failed: SSL error: certificate verify failed"),
        (AT + 'server certificate for "db" does not match host name "10.0.0.5"', TLSError,
         'TLS with 10.0.0.5:5432 failed: server certificate for "db" does not match host name "10.0.0.5"'),
        (AT + 'root certificate file "/ca.pem" does not exist\nEither provide the file...', TLSError,
         'TLS with 10.0.0.5:5432 failed: root certificate file "/ca.pem" does not exist'),
        (AT + "server does not support SSL, but SSL was required", TLSError,
         "TLS with 10.0.0.5:5432 failed: server does not support SSL, but SSL was required"),
        ('connection failed: connection to server on socket "/run/pg/.s.PGSQL.5432" failed: '
         "No such file or directory", TargetError,
         "cannot connect to /run/pg/.s.PGSQL.5432: No such file or directory"),
        (AT + "No route to host", TargetError, "10.0.0.5:5432 is unreachable: No route to host"),
    ],
)
def test_connect_errors_are_classified(message: str, kind: type[Exception], text: str) -> None:
    error = connect_error(message, "db:5432")
    assert type(error) is kind
    assert str(error) == text


def test_connect_error_messages_are_scrubbed() -> None:
    error = connect_error('missing "=" after "hunter2" in connection info string', "db:5432",
                          secrets=["hunter2"])
    assert "hunter2" not in str(error)
    leaked = connect_error("invalid: password=hunter2 host=db and postgresql://app:hunter2@db/x", "db:5432")
    assert "hunter2" not in str(leaked)


def test_scrub() -> None:
    assert scrub("dsn postgresql://app:pw@db/x", []) == "dsn postgresql://app:***@db/x"
    assert scrub("password = 'a b' host=db", []) == "password = *** host=db"
    assert scrub("token abcdef here", ["abcdef"]) == "token *** here"


# --------------------------------------------------------------------------- query errors


def _error(sqlstate: str, message: str) -> psycopg.Error:
    cls = psycopg.errors.lookup(sqlstate)
    return cls(message)


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (_error("57014", "canceling statement due to statement timeout"), TargetError,
         "query cancelled on the server: canceling statement due to statement timeout (statement_timeout 4.5s)"),
        (_error("42601", 'syntax error at or near "SELEC"\nLINE 1: SELEC 1'), AgentSideError,
         'query failed: syntax error at or near "SELEC" (SQLSTATE 42601)'),
        (_error("42P01", 'relation "t" does not exist'), AgentSideError,
         'query failed: relation "t" does not exist (SQLSTATE 42P01)'),
        (_error("42501", "permission denied for table t"), AuthError,
         "query refused: permission denied for table t (SQLSTATE 42501)"),
        (_error("22012", "division by zero"), TargetError, "query failed: division by zero (SQLSTATE 22012)"),
        (_error("53100", "could not extend file: No space left on device"), TargetError,
         "query failed: could not extend file: No space left on device (SQLSTATE 53100)"),
        (_error("57P01", "terminating connection due to administrator command"), TargetError,
         "query failed: terminating connection due to administrator command (SQLSTATE 57P01)"),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
         ConnectionLostError, "connection to db:5432 lost during the query: consuming input failed: "
                              "server closed the connection unexpectedly"),
        (psycopg.DataError("date too large (after year 10K): 'infinity'"), TargetError,
         "query failed: date too large (after year 10K): 'infinity'"),
    ],
)
def test_query_errors_are_classified(error: Exception, kind: type[Exception], text: str) -> None:
    mapped = query_error(error, "query", spec(host="db"))
    assert type(mapped) is kind
    assert str(mapped) == text


# --------------------------------------------------------------------------- observations


def test_stats_with_full_visibility() -> None:
    raw = {"in_recovery": True, "max_connections": 100, "sees_all": True, "connections": 25,
           "longest_query_s": Decimal("12.3456"), "idle_in_transaction": 2,
           "longest_idle_in_transaction_s": Decimal("3.5"), "replication_lag_s": Decimal("0.25")}
    assert stats_observations(raw) == {
        "in_recovery": True, "max_connections": 100, "connections": 25, "connections_ratio": 0.25,
        "longest_query_s": 12.346, "idle_in_transaction": 2, "longest_idle_in_transaction_s": 3.5,
        "replication_lag_s": 0.25,
    }


def test_stats_without_pg_read_all_stats_are_null_not_partial() -> None:
    raw = {"in_recovery": False, "max_connections": 100, "sees_all": False, "connections": 1,
           "longest_query_s": Decimal(0), "idle_in_transaction": 0,
           "longest_idle_in_transaction_s": Decimal(0), "replication_lag_s": None}
    out = stats_observations(raw)
    assert out["max_connections"] == 100
    for name in ("connections", "connections_ratio", "longest_query_s", "idle_in_transaction",
                 "longest_idle_in_transaction_s", "replication_lag_s"):
        assert out[name] is None, name


def test_json_values() -> None:
    tz = dt.timezone(dt.timedelta(hours=2))
    assert json_value(Decimal("1.50")) == 1.5
    assert json_value(Decimal("NaN")) is None
    assert json_value(float("inf")) is None
    assert json_value(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz)) == "2024-01-02T03:04:05+02:00"
    assert json_value(dt.date(2024, 1, 2)) == "2024-01-02"
    assert json_value(dt.time(3, 4)) == "03:04:00"
    assert json_value(dt.timedelta(minutes=2)) == 120.0
    assert json_value(b"\x00\xff") == "00ff"
    assert json_value(memoryview(b"a")) == "61"
    assert json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_value(ipaddress.ip_address("10.0.0.1")) == "10.0.0.1"
    assert json_value({"a": [Decimal(1), None, True]}) == {"a": [1.0, None, True]}
    assert json_row(["n", "s"], (3, "x")) == {"n": 3, "s": "x"}
    assert json_row(["n"], None) is None


def test_importing_the_module_does_not_import_psycopg() -> None:
    code = "import checks.postgres, sys; assert 'psycopg' not in sys.modules, 'psycopg imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
