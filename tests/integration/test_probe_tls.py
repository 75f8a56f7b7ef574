"""The tls probe against real TLS servers (asyncio + ssl) with certificates from trustme
(the ``ca`` and ``ca_file`` fixtures of ``tests/support/tls.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import run_once
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()
    except (ssl.SSLError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve(cert: trustme.LeafCert | None, handler: Handler = _until_eof) -> AsyncIterator[int]:
    """A server on 127.0.0.1 (TLS with ``cert``, plain TCP when None); yields its port."""
    context = None
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def config_text(port: int, **fields: Any) -> str:
    lines = ["checks:", "  - name: cert", "    type: tls", "    host: 127.0.0.1", f"    port: {port}"]
    lines += [f"    {k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def probe(cert: trustme.LeafCert | None, handler: Handler = _until_eof, **fields: Any) -> Result:
    """Serve ``cert`` and run one tls check against it through the runner."""

    async def main() -> Result:
        async with serve(cert, handler) as port:
            config = parse_config(config_text(port, **fields))
            return (await run_once(config.checks, config.redactor))[0]

    return asyncio.run(main())


def leaf(ca: trustme.CA, *names: str, days: float, age: float = 30.0) -> trustme.LeafCert:
    return ca.issue_cert(*(names or ("localhost", "127.0.0.1")), common_name=(names or ("localhost",))[0],
                         not_before=NOW - timedelta(days=age), not_after=NOW + timedelta(days=days))


def test_valid_certificate_is_ok(ca: trustme.CA, ca_file: str) -> None:
    result = probe(leaf(ca, days=90), ca_file=ca_file, server_name="localhost")

    assert result.status is Status.OK, result
    obs = result.observations
    assert 89.9 < obs["days_left"] <= 90
    assert (obs["verified"], obs["verify_error"], obs["subject_cn"]) == (True, None, "localhost")
    assert obs["sans"] == ["localhost", "127.0.0.1"]
    assert obs["issuer"].startswith("OU=Testing CA")
    assert obs["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert obs["connect_ms"] > 0
    assert datetime.fromisoformat(obs["not_after"]) > NOW


def test_ip_address_is_verified_against_ip_sans(ca: trustme.CA, ca_file: str) -> None:
    result = probe(leaf(ca, days=90), ca_file=ca_file)

    assert result.status is Status.OK, result


def test_certificate_expiring_soon_fails_the_default_condition(ca: trustme.CA, ca_file: str) -> None:
    result = probe(leaf(ca, days=5), ca_file=ca_file)

    assert result.status is Status.CRITICAL
    assert re.fullmatch(r"days_left > 14 failed \(actual: (4\.99\d*|5\.0)\)", result.message), result


def test_warning_and_critical_thresholds(ca: trustme.CA, ca_file: str) -> None:
    conditions = '["days_left > 7", {expr: "days_left > 30", severity: warning}]'

    assert probe(leaf(ca, days=20), ca_file=ca_file, conditions=conditions).status is Status.WARNING
    assert probe(leaf(ca, days=3), ca_file=ca_file, conditions=conditions).status is Status.CRITICAL
    assert probe(leaf(ca, days=60), ca_file=ca_file, conditions=conditions).status is Status.OK


def test_expired_certificate_is_critical_and_still_described(ca: trustme.CA, ca_file: str) -> None:
    result = probe(leaf(ca, days=-2), ca_file=ca_file)

    assert result.status is Status.CRITICAL
    assert re.fullmatch(r"verify_error == null failed \(actual: 'certificate has expired'\); "
                        r"days_left > 14 failed \(actual: -2\.0\d*\)", result.message), result
    obs = result.observations
    assert (obs["verified"], obs["subject_cn"]) == (False, "localhost")
    assert -2.01 < obs["days_left"] < -1.99


def test_untrusted_certificate_is_critical(ca: trustme.CA) -> None:
    result = probe(leaf(ca, days=90))  # no ca_file: the system store does not know trustme's CA

    assert result.status is Status.CRITICAL
    assert result.message.startswith("verify_error == null failed (actual: 'unable to get local issuer")
    assert result.observations["days_left"] > 89


def test_name_mismatch_is_critical(ca: trustme.CA, ca_file: str) -> None:
    result = probe(leaf(ca, "other.example.com", days=90), ca_file=ca_file, server_name="localhost")

    assert result.status is Status.CRITICAL
    assert "Hostname mismatch" in result.observations["verify_error"]
    assert result.observations["sans"] == ["other.example.com"]


def test_verify_false_reports_without_judging_trust(ca: trustme.CA) -> None:
    result = probe(leaf(ca, days=90), verify="false")

    assert result.status is Status.OK, result
    assert (result.observations["verified"], result.observations["verify_error"]) == (False, None)


def test_missing_ca_file_is_unknown(ca: trustme.CA, tmp_path: Path) -> None:
    result = probe(leaf(ca, days=90), ca_file=str(tmp_path / "missing.pem"))

    assert result.status is Status.UNKNOWN
    assert result.error == "TLSError"
    assert result.message.startswith("cannot load TLS files")


async def _speak_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def test_plain_tcp_server_is_a_critical_handshake_failure() -> None:
    result = probe(None, _speak_http)

    assert result.status is Status.CRITICAL
    assert result.error == "ProtocolError"
    assert result.message.startswith("TLS handshake with 127.0.0.1:")


def test_connection_refused_is_critical() -> None:
    async def main() -> Result:
        config = parse_config(config_text(free_port()))
        return (await run_once(config.checks))[0]

    result = asyncio.run(main())

    assert result.status is Status.CRITICAL
    assert result.message.startswith("connection refused by 127.0.0.1:")


def test_server_that_never_answers_times_out(hanging_listener: int) -> None:
    async def main() -> Result:
        config = parse_config(config_text(hanging_listener, timeout="500ms"))
        return (await run_once(config.checks))[0]

    result = asyncio.run(main())

    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 500ms"
