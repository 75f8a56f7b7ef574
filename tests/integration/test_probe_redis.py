"""The redis probe against real servers: the shared one (127.0.0.1:6379, read only) and
throwaway ones we stop, freeze, password-protect, replicate from and put TLS on."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import ProbeRunner, run_once
from checks.redis import RedisProbe, RedisSpec
from tests.support.servers import free_port, server_missing
from tests.support.services import RedisFactory, RedisServer
from tests.support.sockets import open_connections_to
from tests.support.waiting import wait_for_tcp, wait_until

pytestmark = pytest.mark.integration

SHARED = "redis://127.0.0.1:6379/0"


def spec(**fields: Any) -> RedisSpec:
    return RedisSpec.model_validate({"name": "cache", "type": "redis", **fields})


def run(check: RedisSpec) -> Result:
    """One run through the real runner, with a redactor that knows NO secrets."""

    async def go() -> Result:
        probe = RedisProbe(check)
        try:
            return await ProbeRunner().run(check, probe)
        finally:
            await probe.close()

    return asyncio.run(go())


def admin(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def shared_available() -> None:
    try:
        with admin(SHARED) as client:
            client.ping()
    except redis.RedisError as exc:
        server_missing(f"the shared Redis at 127.0.0.1:6379 ({exc})")


# --------------------------------------------------------------------------- healthy


def test_shared_server_is_ok_with_real_observations() -> None:
    shared_available()
    config = parse_config(
        f"checks:\n  - name: cache\n    type: redis\n    url: {SHARED}\n"
        "    info_fields: [redis_mode, tcp_port]\n"
    )
    [result] = asyncio.run(run_once(config.checks, config.redactor))
    with admin(SHARED) as client:
        info = client.info()
        maxmemory = int(client.config_get("maxmemory")["maxmemory"])

    assert result.status is Status.OK, result.message
    assert [c.expr for c in result.conditions] == ["pong"]
    obs = result.observations
    assert obs["pong"] is True
    assert obs["redis_version"] == info["redis_version"]
    assert obs["role"] == "master"
    assert obs["master_link_status"] is None
    assert obs["maxmemory"] == maxmemory
    assert obs["memory_ratio"] == (round(obs["used_memory"] / maxmemory, 4) if maxmemory else None)
    assert 0 < obs["used_memory"] < 2**40
    assert obs["connected_clients"] >= 1
    assert obs["uptime_s"] >= 0
    assert obs["rejected_connections"] >= 0
    assert obs["blocked_clients"] >= 0
    assert obs["connect_ms"] > 0
    assert obs["latency_ms"] > 0
    assert obs["info"] == {"redis_mode": "standalone", "tcp_port": 6379}


def test_conditions_on_memory(throwaway_redis: RedisServer) -> None:
    server = throwaway_redis
    with admin(server.url()) as client:
        client.config_set("maxmemory", str(64 * 2**20))
        client.set("ballast", "x" * 2**20)
    ok = run(spec(url=server.url(), conditions=["pong", "memory_ratio < 0.9", "used_memory > 1MiB"]))
    assert ok.status is Status.OK, ok.message
    obs = ok.observations
    assert obs["maxmemory"] == 64 * 2**20
    assert obs["memory_ratio"] == round(obs["used_memory"] / obs["maxmemory"], 4)

    tight = run(spec(url=server.url(), conditions=["memory_ratio < 0.001"]))
    assert tight.status is Status.CRITICAL
    assert tight.conditions[0].actual == tight.observations["memory_ratio"]
    assert tight.conditions[0].actual > 0.001

    with admin(server.url()) as client:
        client.config_set("maxmemory", "0")
    unlimited = run(spec(host=server.host, port=server.port, conditions=["memory_ratio == null"]))
    assert unlimited.status is Status.OK, unlimited.message
    assert unlimited.observations["maxmemory"] == 0


def test_replica_reports_role_and_link(redis_factory: RedisFactory) -> None:
    primary, replica = redis_factory(), redis_factory()
    with admin(primary.url()) as client:
        client.config_set("repl-diskless-sync-delay", "0")  # default: wait 5 s for more replicas
    with admin(replica.url()) as client:
        client.replicaof(primary.host, primary.port)
        wait_until(lambda: client.info("replication").get("master_link_status") == "up" or None,
                   timeout=15, what="replica link up")
    result = run(spec(url=replica.url(), conditions=['role == "slave"', 'master_link_status == "up"']))
    assert result.status is Status.OK, result.message

    primary.stop()
    with admin(replica.url()) as client:
        wait_until(lambda: client.info("replication").get("master_link_status") == "down" or None,
                   timeout=15, what="replica link down")
    broken = run(spec(url=replica.url(), conditions=['master_link_status == "up"']))
    assert broken.status is Status.CRITICAL
    assert broken.conditions[0].actual == "down"


# --------------------------------------------------------------------------- target failing


def test_stopped_server_is_critical_connection_refused(throwaway_redis: RedisServer) -> None:
    server = throwaway_redis
    server.stop()
    result = run(spec(url=server.url()))
    assert result.status is Status.CRITICAL
    assert result.message == f"connection refused by 127.0.0.1:{server.port}"
    assert result.error == "ConnectionRefusedProbeError"


@pytest.mark.parametrize("password", [None, "frozen-pw"])
def test_frozen_server_times_out_and_leaves_no_socket(redis_factory: RedisFactory, password: str | None) -> None:
    server = redis_factory(password=password)
    server.freeze()
    started = time.monotonic()
    result = run(spec(host=server.host, port=server.port, password=password, timeout="1s"))
    took = time.monotonic() - started

    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 1s"
    assert took < 1.5
    assert open_connections_to(server.port) == 0


def test_short_socket_timeout_is_a_timeout(throwaway_redis: RedisServer) -> None:
    server = throwaway_redis
    server.freeze()
    started = time.monotonic()
    result = run(spec(url=server.url(), timeout="5s", socket_timeout="300ms"))
    assert time.monotonic() - started < 1.5
    assert result.status is Status.CRITICAL
    assert result.error == "ProbeTimeoutError"
    assert open_connections_to(server.port) == 0


# --------------------------------------------------------------------------- agent side


def test_wrong_password_is_unknown_and_never_leaks(redis_factory: RedisFactory) -> None:
    server = redis_factory(password="right-pw", acl_user="probe")
    secret = "Wr0ng-pa55word!"
    forms: dict[str, dict[str, Any]] = {
        "url": {"url": server.url(password=secret)},
        "url+user": {"url": server.url(username="probe", password=secret)},
        "fields": {"host": server.host, "port": server.port, "password": secret},
        "url+password": {"url": f"redis://{server.host}:{server.port}/0", "password": secret},
    }
    for form, fields in forms.items():
        result = run(spec(**fields))
        assert result.status is Status.UNKNOWN, form
        assert result.error == "AuthError", form
        assert "WRONGPASS" in result.message, form
        assert result.message.startswith(f"127.0.0.1:{server.port}: "), form
        assert secret not in json.dumps(result.as_dict()), form

    good = run(spec(url=server.url(username="probe", password="right-pw")))
    assert good.status is Status.OK, good.message


def test_missing_password_and_missing_permission_are_unknown(redis_factory: RedisFactory) -> None:
    server = redis_factory(password="right-pw")
    noauth = run(spec(host=server.host, port=server.port))
    assert noauth.status is Status.UNKNOWN
    assert noauth.error == "AuthError"
    assert "NOAUTH" in noauth.message

    with admin(server.url()) as client:  # a user that may PING but not INFO
        client.acl_setuser("pinger", enabled=True, passwords=["+pinger-pw"], commands=["+ping"])
    noperm = run(spec(url=server.url(username="pinger", password="pinger-pw")))
    assert noperm.status is Status.UNKNOWN
    assert noperm.error == "AuthError"
    assert "NOPERM" in noperm.message
    assert "pinger-pw" not in json.dumps(noperm.as_dict())


def test_least_privilege_acl_user_is_ok(redis_factory: RedisFactory) -> None:
    server = redis_factory(password="right-pw")
    with admin(server.url()) as client:
        client.acl_setuser("monitor", enabled=True, passwords=["+monitor-pw"], commands=["+ping", "+info"])
    result = run(spec(url=server.url(username="monitor", password="monitor-pw")))
    assert result.status is Status.OK, result.message
    assert result.observations["used_memory"] > 0


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS (trustme CA, no client certs); yields port and CA file."""
    binary = shutil.which("redis-server")
    if binary is None:
        server_missing("redis-server")
        raise AssertionError("unreachable")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    argv = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), "--tls-cert-file", str(tmp_path / "server.crt"),
            "--tls-key-file", str(tmp_path / "server.key"), "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
            "--tls-auth-clients", "no"]
    with (tmp_path / "redis.log").open("wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_tcp(port)
        yield port, tmp_path / "ca.pem"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tls_verified_wrong_ca_and_insecure(tls_redis: tuple[int, Path], tmp_path: Path) -> None:
    port, ca_file = tls_redis
    url = f"rediss://127.0.0.1:{port}/0"
    ok = run(spec(url=url, tls={"ca_file": str(ca_file)}))
    assert ok.status is Status.OK, ok.message

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    bad = run(spec(url=url, tls={"ca_file": str(other)}))
    assert bad.status is Status.UNKNOWN
    assert bad.error == "TLSError"
    assert bad.message.startswith(f"TLS certificate of 127.0.0.1:{port} failed verification: ")

    insecure = run(spec(host="127.0.0.1", port=port, tls={"insecure": True}))
    assert insecure.status is Status.OK, insecure.message
