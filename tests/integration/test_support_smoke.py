"""Smoke tests of the test-support fixtures themselves: each one starts a real server.

If one of these fails, the integration and e2e tiers cannot be trusted either: fix the
machine (``scripts/setup-test-env``) or the fixture first.
"""

from __future__ import annotations

import os
import socket
import time

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.docker import ContainerFactory, published_port
from tests.support.services import PostgresServer, PrometheusServer, RedisFactory, RedisServer
from tests.support.waiting import http_get, wait_for_http

pytestmark = pytest.mark.integration


@pytest.mark.docker
def test_busybox_httpd_is_reachable_on_its_published_port(containers: ContainerFactory) -> None:
    container = containers.run(
        ["sh", "-c", "echo hello-from-busybox > /www/index.html && exec httpd -f -p 80 -h /www"],
        ports={"80/tcp": ("127.0.0.1", None)},
    )
    port = published_port(container, "80/tcp")

    reply = wait_for_http(f"http://127.0.0.1:{port}/", status=200)

    assert reply.body == b"hello-from-busybox\n"
    container.reload()
    assert container.labels["paramedic-test"] == "1"


@pytest.mark.docker
def test_containers_are_removed_at_teardown(
    containers: ContainerFactory,
) -> None:
    first = containers.httpd("one\n")
    second = containers.run(["sleep", "60"], labels={"role": "sleeper"})
    port = published_port(first)
    assert wait_for_http(f"http://127.0.0.1:{port}/", status=200).body == b"one\n"
    assert second.labels == {"paramedic-test": "1", "paramedic-test.pid": str(os.getpid()), "role": "sleeper"}

    containers.cleanup()

    names = {c.name for c in containers.client.containers.list(all=True)}
    assert first.name not in names
    assert second.name not in names


def test_throwaway_postgres_accepts_trust_and_password_logins(
    throwaway_postgres: PostgresServer,
) -> None:
    pg = throwaway_postgres
    assert pg.port != 5432

    with psycopg.connect(pg.dsn()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with psycopg.connect(pg.password_dsn) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "paramedic",
            "paramedic",
        )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn("paramedic", "wrong", dbname="paramedic")).close()


def test_throwaway_postgres_freeze_thaw_and_stop(throwaway_postgres: PostgresServer) -> None:
    pg = throwaway_postgres

    pg.freeze()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(connect_timeout=1)).close()
    assert time.monotonic() - started >= 0.9  # it hung, it did not refuse
    pg.thaw()
    with psycopg.connect(pg.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    pg.stop()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(pg.dsn()).close()


def test_throwaway_redis_answers_ping_and_can_be_frozen(throwaway_redis: RedisServer) -> None:
    client = redis.Redis.from_url(throwaway_redis.url(), socket_timeout=0.5)
    try:
        assert client.ping() is True
        throwaway_redis.freeze()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.get("anything")
        throwaway_redis.thaw()
    finally:
        client.close()
    throwaway_redis.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", throwaway_redis.port), timeout=1).close()


def test_redis_with_password_and_acl_user(redis_factory: RedisFactory) -> None:
    server = redis_factory(password="s3cret", acl_user="paramedic")

    with redis.Redis.from_url(server.url("paramedic")) as client:
        assert client.ping() is True
    no_retry = Retry(NoBackoff(), 0)  # AuthenticationError is a ConnectionError: no retries
    with (
        redis.Redis(host="127.0.0.1", port=server.port, retry=no_retry) as anonymous,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        anonymous.ping()


def test_prometheus_returns_the_exporters_value(prometheus_server: PrometheusServer) -> None:
    prometheus_server.exporter.set_metrics('# TYPE paramedic_smoke gauge\nparamedic_smoke{kind="test"} 42\n')

    result = prometheus_server.wait_for("paramedic_smoke")

    assert result[0]["metric"]["kind"] == "test"
    assert float(result[0]["value"][1]) == 42.0
    assert prometheus_server.value('up{job="exporter"}') == 1.0
    assert http_get(f"{prometheus_server.url}/-/healthy").status == 200


def test_hanging_listener_accepts_and_never_replies(hanging_listener: int) -> None:
    with socket.create_connection(("127.0.0.1", hanging_listener), timeout=2) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)


def test_prometheus_server_is_reset_between_tests(prometheus_server: PrometheusServer) -> None:
    # runs after test_prometheus_returns_the_exporters_value: its series must be gone
    assert prometheus_server.query("paramedic_smoke") == []
    prometheus_server.exporter.set_metrics("paramedic_smoke_second 7")

    assert prometheus_server.wait_for("paramedic_smoke_second")[0]["value"][1] == "7"


def test_throwaway_prometheus_can_be_frozen_and_stopped(throwaway_prometheus: PrometheusServer) -> None:
    prom = throwaway_prometheus
    prom.freeze()
    with pytest.raises(TimeoutError):
        http_get(f"{prom.url}/-/healthy", timeout=0.5)
    prom.thaw()
    assert http_get(f"{prom.url}/-/healthy").status == 200
    prom.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", prom.port), timeout=1).close()
