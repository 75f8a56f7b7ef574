"""The ``tcp`` probe against real sockets on 127.0.0.1: connect, send/expect, failures, TLS."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import trustme
import yaml

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import run_once
from tests.support.servers import free_port, tcp_server
from tests.support.tls import server_context

pytestmark = pytest.mark.integration


def banner_then_pong(conn: socket.socket) -> None:
    """Like a tiny Redis/SMTP: a banner, then PONG for a PING line, then close."""
    conn.sendall(b"+OK paramedic-test ready\r\n")
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            return
        data += chunk
    conn.sendall(b"+PONG\r\n" if data.strip() == b"PING" else b"-ERR unknown command\r\n")


def echo(conn: socket.socket) -> None:
    conn.sendall(conn.recv(1024))


def check(**spec: Any) -> Result:
    spec = {"name": "port", "type": "tcp", "host": "127.0.0.1", **spec}
    config = parse_config(yaml.safe_dump({"checks": [spec]}), env={})
    [result] = asyncio.run(run_once(config.checks, config.redactor))
    return result


def test_connect_ok() -> None:
    with socket.create_server(("127.0.0.1", free_port())) as listener:
        result = check(port=listener.getsockname()[1])
    assert result.status is Status.OK, result.message
    assert result.observations["connected"] is True
    assert 0 < result.observations["connect_ms"] <= result.observations["latency_ms"]
    assert [(c.expr, c.ok) for c in result.conditions] == [("connected", True)]
    assert "response" not in result.observations


def test_expect_banner_without_sending() -> None:
    with tcp_server(banner_then_pong) as port:
        result = check(port=port, expect="ready")
    assert result.status is Status.OK, result.message
    assert result.observations["matched"] is True
    assert result.observations["response"].startswith("+OK paramedic-test ready")


def test_send_and_expect() -> None:
    with tcp_server(banner_then_pong) as port:
        result = check(port=port, send="PING\r\n", expect="+PONG")
    assert result.status is Status.OK, result.message
    assert "+PONG" in result.observations["response"]


def test_send_with_escaped_line_ending() -> None:
    with tcp_server(banner_then_pong) as port:
        # as written in single-quoted YAML: a literal backslash-r-backslash-n
        result = check(port=port, send="PING\\r\\n", expect="+PONG")
    assert result.status is Status.OK, result.message


def test_echo_round_trip() -> None:
    with tcp_server(echo) as port:
        result = check(port=port, send="hello paramedic", expect="hello paramedic")
    assert result.status is Status.OK, result.message
    assert result.observations["response"] == "hello paramedic"


def test_expect_mismatch_is_critical() -> None:
    with tcp_server(banner_then_pong) as port:
        result = check(port=port, send="PING\r\n", expect="+NOPE")
    assert result.status is Status.CRITICAL
    assert result.observations["matched"] is False
    assert result.message == "matched failed (actual: False)"


def test_conditions_replace_the_default_expectation() -> None:
    with tcp_server(banner_then_pong) as port:
        result = check(port=port, send="PING\r\n", expect="+NOPE", conditions=['response contains "PONG"'])
    assert result.status is Status.OK, result.message
    assert result.observations["matched"] is False


def test_expect_mismatch_on_a_peer_that_stays_open_is_critical() -> None:
    # The banner arrives but never matches and the peer waits for input: the probe reads
    # until its timeout (there is no way to know more bytes will not come).
    with tcp_server(banner_then_pong) as port:
        result = check(port=port, expect="+NOPE", timeout="300ms")
    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 300ms"


def test_connection_refused_is_critical() -> None:
    port = free_port()
    result = check(port=port)
    assert result.status is Status.CRITICAL
    assert result.message == f"connection refused by 127.0.0.1:{port}"
    assert result.error == "ConnectionRefusedProbeError"


def test_dns_failure_is_unknown() -> None:
    result = check(host="paramedic-test.invalid", port=5432)
    assert result.status is Status.UNKNOWN
    assert result.message.startswith("cannot resolve host 'paramedic-test.invalid'")


def test_silent_peer_times_out() -> None:
    with socket.create_server(("127.0.0.1", free_port())) as listener:
        result = check(port=listener.getsockname()[1], expect="hello", timeout="300ms")
    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 300ms"


def test_tls_send_and_expect(ca: trustme.CA, ca_file: str) -> None:
    with tcp_server(banner_then_pong, tls=server_context(ca, "127.0.0.1")) as port:
        result = check(port=port, send="PING\r\n", expect="+PONG", tls={"ca_file": ca_file})
    assert result.status is Status.OK, result.message


def test_tls_unverified_is_unknown(ca: trustme.CA) -> None:
    with tcp_server(banner_then_pong, tls=server_context(ca, "127.0.0.1")) as port:
        result = check(port=port, expect="+OK", tls={})
    assert result.status is Status.UNKNOWN
    assert result.message.startswith(f"TLS certificate of 127.0.0.1:{port} failed verification")
