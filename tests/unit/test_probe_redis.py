"""The redis probe's pure parts: spec validation, client settings, INFO, error mapping."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError
from redis import exceptions as rx

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
from checks.redis import RedisSpec, connection_kwargs, info_observations, redis_error


def spec(**fields: Any) -> RedisSpec:
    return RedisSpec.model_validate({"name": "cache", "type": "redis", **fields})


# --------------------------------------------------------------------------- spec


def test_minimal_specs_and_default_condition() -> None:
    assert [c.expr for c in spec(url="redis://cache").effective_conditions()] == ["pong"]
    assert spec(host="cache").info_fields == ()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "give url, or host"),
        ({"url": "redis://cache", "host": "cache"}, "give either url or host"),
        ({"url": "redis://cache", "db": 1}, "give either url or db"),
        ({"url": "redis://:pw@cache", "password": "pw"}, "url already holds a password"),
        ({"url": "redis://u:pw@cache", "username": "u"}, "url already holds a username"),
        ({"url": "redis://cache", "tls": {}}, "rediss://"),
        ({"url": "http://cache"}, "redis://, rediss:// or unix://"),
        ({"url": "redis://cache:port"}, "not a valid URL"),
        ({"url": "redis://cache/zero"}, "database number"),
        ({"url": "redis:///0"}, "needs a host"),
        ({"url": "unix://"}, "socket path"),
        ({"host": "cache", "db": -1}, "db"),
        ({"host": "cache", "tls": {"server_name": "x"}}, "server_name is not supported"),
        ({"host": "cache", "socket_timeout": 0}, "greater than 0"),
        ({"host": "cache", "info_fields": ["used memory"]}, "INFO field names"),
    ],
)
def test_invalid_specs(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        spec(**fields)


def test_bad_url_config_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("checks:\n  - {name: c, type: redis, url: 'redis://:hunter2@cache:notaport/0'}\n")
    assert "checks[0].url" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_target_and_address_never_show_a_password() -> None:
    assert spec(url="redis://user:p%40ss@cache.internal:6380/2").target() == "cache.internal:6380/2"
    assert spec(url="rediss://:pw@cache").target() == "rediss://cache:6379/0"
    assert spec(url="unix:///run/redis.sock?db=1").target() == "/run/redis.sock"
    assert spec(host="cache", password="pw", db=3).target() == "cache:6379/3"
    assert spec(host="::1", port=6380).address() == "[::1]:6380"
    assert spec(url="redis://:pw@cache:6380/2").address() == "cache:6380"


def test_secrets() -> None:
    url = "redis://user:p%40ss@cache/0"
    assert set(spec(url=url).secrets()) == {url, "p%40ss", "p@ss"}
    assert spec(host="c", password="pw1").secrets() == ["pw1"]


# --------------------------------------------------------------------------- client settings


def test_kwargs_always_set_timeouts_and_resp2() -> None:
    kwargs = connection_kwargs(spec(host="cache", password="pw", username="probe", timeout="2s"))
    assert kwargs == {
        "socket_connect_timeout": 2.0, "socket_timeout": 2.0, "protocol": 2, "driver_info": None,
        "health_check_interval": 0, "single_connection_client": True,
        "host": "cache", "port": 6379, "db": 0, "username": "probe", "password": "pw",
    }
    custom = connection_kwargs(spec(url="redis://cache", socket_connect_timeout="300ms", socket_timeout=1))
    assert custom["socket_connect_timeout"] == 0.3
    assert custom["socket_timeout"] == 1.0
    assert "host" not in custom


def test_tls_kwargs() -> None:
    verified = connection_kwargs(spec(url="rediss://cache"))
    assert verified["ssl_cert_reqs"] == "required"
    assert verified["ssl_check_hostname"] is True
    assert "ssl" not in verified  # rediss:// already selects TLS
    by_host = connection_kwargs(spec(host="cache", tls={"ca_file": "/ca.pem", "cert_file": "/c.pem",
                                                        "key_file": "/k.pem"}))
    assert by_host["ssl"] is True
    assert (by_host["ssl_ca_certs"], by_host["ssl_certfile"], by_host["ssl_keyfile"]) == (
        "/ca.pem", "/c.pem", "/k.pem")
    insecure = connection_kwargs(spec(host="cache", tls={"insecure": True}))
    assert insecure["ssl_cert_reqs"] == "none"
    assert insecure["ssl_check_hostname"] is False
    assert "ssl_cert_reqs" not in connection_kwargs(spec(host="cache"))


# --------------------------------------------------------------------------- INFO


def test_info_observations_on_a_primary_without_maxmemory() -> None:
    info = {"redis_version": "7.0.15", "uptime_in_seconds": 42, "role": "master", "connected_clients": 3,
            "blocked_clients": 1, "rejected_connections": 0, "used_memory": 1_000_000, "maxmemory": 0,
            "master_link_status": "up"}
    assert info_observations(info) == {
        "redis_version": "7.0.15", "uptime_s": 42, "role": "master", "master_link_status": None,
        "connected_clients": 3, "blocked_clients": 1, "rejected_connections": 0,
        "used_memory": 1_000_000, "maxmemory": 0, "memory_ratio": None,
    }


def test_info_observations_on_a_replica_with_fields() -> None:
    info = {"redis_version": 6.0, "role": "slave", "master_link_status": "down", "used_memory": 300,
            "maxmemory": 1000, "db0": {"keys": 2, "expires": 0}, "run_id": b"abc"}
    out = info_observations(info, ["db0", "run_id", "missing"])
    assert out["redis_version"] == "6.0"
    assert out["master_link_status"] == "down"
    assert out["memory_ratio"] == 0.3
    assert out["uptime_s"] is None
    assert out["info"] == {"db0": {"keys": 2, "expires": 0}, "run_id": "abc", "missing": None}


# --------------------------------------------------------------------------- errors


def _wrapped(error: rx.RedisError, cause: BaseException) -> rx.RedisError:
    """Raise ``error`` inside ``except`` of ``cause``, the way redis-py does."""
    try:
        try:
            raise cause
        except BaseException:
            raise error  # noqa: B904 - reproducing redis-py's implicit chaining
    except rx.RedisError as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (rx.AuthenticationError("invalid username-password pair or user is disabled.", status_code="WRONGPASS"),
         AuthError, "db:6379: WRONGPASS invalid username-password pair or user is disabled."),
        (rx.AuthenticationError("Authentication required.", status_code="NOAUTH"), AuthError,
         "db:6379: NOAUTH Authentication required."),
        (rx.NoPermissionError("this user has no permissions to run the 'info' command", status_code="NOPERM"),
         AuthError, "db:6379: NOPERM this user has no permissions to run the 'info' command"),
        (rx.ResponseError("NOAUTH Authentication required."), AuthError, "db:6379: NOAUTH Authentication required."),
        (rx.BusyLoadingError("Redis is loading the dataset in memory", status_code="LOADING"), TargetError,
         "db:6379 is loading its dataset: LOADING Redis is loading the dataset in memory"),
        (rx.TimeoutError("Timeout reading from db:6379"), ProbeTimeoutError, "db:6379: Timeout reading from db:6379"),
        (_wrapped(rx.ConnectionError("Error 111 connecting to db:6379. Connection refused."),
                  ConnectionRefusedError(111, "Connection refused")),
         ConnectionRefusedProbeError, "connection refused by db:6379"),
        (_wrapped(rx.ConnectionError("Error -2 connecting to db:6379. Name or service not known."),
                  socket.gaierror(-2, "Name or service not known")),
         DNSError, "cannot resolve db:6379: Name or service not known"),
        (rx.ConnectionError("Connection closed by server."), ConnectionLostError,
         "db:6379: Connection closed by server."),
        (rx.ConnectionError("max number of clients reached"), TargetError, "db:6379: max number of clients reached"),
        (rx.ResponseError("DB index is out of range", status_code="ERR"), AgentSideError,
         "db:6379: ERR DB index is out of range"),
        (rx.ResponseError("MISCONF Redis is configured to save RDB snapshots"), TargetError,
         "db:6379 answered an error: MISCONF Redis is configured to save RDB snapshots"),
    ],
)
def test_errors_are_classified(error: rx.RedisError, kind: type[Exception], text: str) -> None:
    mapped = redis_error(error, "db:6379")
    assert type(mapped) is kind
    assert str(mapped) == text


def test_tls_errors_are_classified() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate in certificate chain"
    mapped = redis_error(_wrapped(rx.ConnectionError("Error 1 connecting"), verify), "db:6379")
    assert type(mapped) is TLSError
    assert str(mapped) == "TLS certificate of db:6379 failed verification: self-signed certificate in certificate chain"
    handshake = redis_error(_wrapped(rx.ConnectionError("x"), ssl.SSLError(1, "wrong version number")), "db:6379")
    assert type(handshake) is TLSError


def test_error_messages_are_scrubbed() -> None:
    error = rx.ConnectionError("cannot use redis://user:hunter2@db:6379/0 with hunter3")
    text = str(redis_error(error, "db:6379", secrets=["hunter3"]))
    assert "hunter2" not in text
    assert "hunter3" not in text


def test_importing_the_module_does_not_import_redis() -> None:
    code = "import checks.redis, sys; assert 'redis' not in sys.modules, 'redis imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
