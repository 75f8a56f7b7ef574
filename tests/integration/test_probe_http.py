"""The ``http`` probe against real HTTP(S) servers started by the tests on 127.0.0.1.

Every server here is a real socket server (stdlib ``http.server`` in a thread, or a raw
socket for the broken ones), so connect, TLS, redirects, chunking and timeouts are the
real thing. Probes run through the whole path a user gets: YAML -> config -> runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
import yaml

from agent.config.model import parse_config
from agent.kernel.results import Result, Status
from agent.runtime.runner import run_once
from tests.support.servers import QuietHandler, ServerThread, free_port, tcp_server
from tests.support.tls import server_context

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- servers


@dataclass
class Seen:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Handler(QuietHandler):
    """A small app with one route per behaviour a probe must handle."""

    protocol_version = "HTTP/1.1"
    server: TestServer

    def do_GET(self) -> None:
        self._route()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, headers, body))
        path = parts.path
        if path == "/ok":
            self._send(200, b"all healthy\n")
        elif path == "/json":
            doc = {"status": "ok", "items": [{"id": 1}, {"id": 2}], "a.b": {"c": 3}, "checks": {"db": "up"}}
            self._send(200, json.dumps(doc).encode(), "application/json")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._send(code, f"status {code}".encode())
        elif path == "/echo":
            doc = {"method": self.command, "path": self.path, "headers": headers, "body": body.decode()}
            self._send(200, json.dumps(doc).encode(), "application/json")
        elif path == "/headers":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.send_header("X-Custom", "yes")
            self.send_header("X-Multi", "a")
            self.send_header("X-Multi", "b")
            self.end_headers()
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            if n == 0:
                self._send(200, b"arrived")
            else:
                self._send(int(query.get("code", "302")), b"", Location=f"/redirect/{n - 1}")
        elif path == "/to":
            self._send(int(query.get("code", "302")), b"", Location=query["url"])
        elif path == "/loop":
            self._send(302, b"", Location="/loop")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b'{"status": ', b'"chunky", ', b'"n": 3}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big":
            self._send(200, b"x" * int(query.get("n", "100000")))
        elif path == "/slow":
            time.sleep(int(query.get("ms", "100")) / 1000)
            self._send(200, b"slow but fine")
        else:
            self._send(404, b"not found")


class TestServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that records what it received."""

    __test__ = False
    daemon_threads = True

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.seen: list[Seen] = []
        super().__init__(("127.0.0.1", free_port()), Handler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.port: int = self.server_address[1]
        self.scheme = "https" if ssl_context is not None else "http"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a probe hanging up early is expected in these tests


def serving(ssl_context: ssl.SSLContext | None = None) -> ServerThread[TestServer]:
    """Run a :class:`TestServer` in a thread for the duration of a ``with`` block."""
    return ServerThread(TestServer(ssl_context), poll_interval=0.05)


@pytest.fixture
def server() -> Iterator[TestServer]:
    with serving() as srv:
        yield srv


@pytest.fixture
def other_server() -> Iterator[TestServer]:
    with serving() as srv:
        yield srv


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """Accepts connections (kernel backlog) and never says a word."""
    with socket.create_server(("127.0.0.1", free_port()), backlog=16) as listener:
        yield listener.getsockname()[1]


# ---------------------------------------------------------------- running a check


def check(**spec: Any) -> Result:
    """Load one http check from YAML (as a user would write it) and run it once."""
    spec = {"name": "probe", "type": "http", **spec}
    config = parse_config(yaml.safe_dump({"checks": [spec]}), env={})
    [result] = asyncio.run(run_once(config.checks, config.redactor))
    return result


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------- plain HTTP


def test_status_latency_and_observations(server: TestServer) -> None:
    result = check(url=server.url("/ok"), conditions=["status_code == 200", "latency_ms < 2s"])
    assert result.status is Status.OK, result.message
    obs = result.observations
    assert obs["status_code"] == 200
    assert obs["http_version"] == "1.1"
    assert obs["body"] == "all healthy\n"
    assert obs["body_bytes"] == len("all healthy\n")
    assert obs["headers"]["content-type"] == "text/plain"
    assert obs["redirects"] == 0
    assert obs["url"] == server.url("/ok")
    assert 0 < obs["connect_ms"] <= obs["latency_ms"]
    assert 0 < obs["ttfb_ms"] <= obs["latency_ms"]
    assert [(c.expr, c.ok, c.actual) for c in result.conditions] == [
        ("status_code == 200", True, 200),
        ("latency_ms < 2s", True, obs["latency_ms"]),
    ]
    [req] = server.seen
    assert (req.method, req.path) == ("GET", "/ok")
    assert req.headers["host"] == f"127.0.0.1:{server.port}"
    assert req.headers["connection"] == "close"
    assert req.headers["user-agent"].startswith("paramedic/")


def test_latency_measures_the_server_time(server: TestServer) -> None:
    result = check(url=server.url("/slow?ms=150"), conditions=["latency_ms >= 150ms", "latency_ms < 100ms"])
    assert result.status is Status.CRITICAL
    assert result.observations["latency_ms"] >= 150
    assert result.message.startswith("latency_ms < 100ms failed (actual: ")


def test_default_condition_accepts_2xx_and_3xx_only(server: TestServer) -> None:
    assert check(url=server.url("/status/204")).status is Status.OK
    assert check(url=server.url("/status/304")).status is Status.OK
    result = check(url=server.url("/status/404"))
    assert result.status is Status.CRITICAL
    assert result.message == "status_code >= 200 and status_code < 400 failed (actual: 404)"


def test_json_body_paths(server: TestServer) -> None:
    result = check(
        url=server.url("/json"),
        conditions=[
            'json.status == "ok"',
            "json.items[1].id == 2",
            'json["a.b"].c == 3',
            'json.checks.db in ["up", "degraded"]',
            'headers["content-type"] matches "^application/json"',
        ],
    )
    assert result.status is Status.OK, result.message
    assert result.observations["json"]["items"] == [{"id": 1}, {"id": 2}]


def test_json_path_failure_reports_actual(server: TestServer) -> None:
    result = check(url=server.url("/json"), conditions=['json.status == "degraded"', "json.missing.deep == 1"])
    assert result.status is Status.CRITICAL
    assert [(c.ok, c.actual) for c in result.conditions] == [(False, "ok"), (False, None)]
    assert result.message == (
        "json.status == \"degraded\" failed (actual: 'ok'); json.missing.deep == 1 failed (actual: None)"
    )


def test_body_contains(server: TestServer) -> None:
    assert check(url=server.url("/ok"), conditions=['body contains "healthy"']).status is Status.OK
    result = check(url=server.url("/ok"), conditions=['body contains "degraded"'])
    assert result.status is Status.CRITICAL
    assert result.conditions[0].actual == "all healthy\n"


def test_no_json_observation_for_a_text_body(server: TestServer) -> None:
    result = check(url=server.url("/ok"), conditions=["json.status == 1"])
    assert "json" not in result.observations
    assert result.status is Status.CRITICAL


def test_headers_sent_including_authorization(server: TestServer) -> None:
    result = check(
        url=server.url("/echo"),
        headers={"Authorization": "Bearer tok-123456", "X-Trace": "abc", "User-Agent": "custom/1"},
    )
    assert result.status is Status.OK
    [req] = server.seen
    assert req.headers["authorization"] == "Bearer tok-123456"
    assert req.headers["x-trace"] == "abc"
    assert req.headers["user-agent"] == "custom/1"  # a configured header replaces the default
    # the echoed token comes back in the body and is masked there
    assert "tok-123456" not in json.dumps(result.observations)
    assert result.observations["json"]["headers"]["authorization"] == "***"


def test_headers_received(server: TestServer) -> None:
    result = check(
        url=server.url("/headers"),
        conditions=['headers["x-custom"] == "yes"', 'headers["x-multi"] == "a, b"', "headers.x-custom == \"yes\""],
    )
    assert result.status is Status.OK, result.message


def test_post_with_body(server: TestServer) -> None:
    result = check(
        url=server.url("/echo"),
        method="POST",
        body='{"ping": true}',
        headers={"Content-Type": "application/json"},
        conditions=['json.method == "POST"', 'json.body == "{\\"ping\\": true}"'],
    )
    assert result.status is Status.OK, result.message
    [req] = server.seen
    assert (req.method, req.body) == ("POST", b'{"ping": true}')
    assert req.headers["content-length"] == "14"
    assert req.headers["content-type"] == "application/json"


def test_put_with_empty_body_sends_content_length_zero(server: TestServer) -> None:
    assert check(url=server.url("/echo"), method="PUT", body="").status is Status.OK
    [req] = server.seen
    assert (req.method, req.headers.get("content-length"), req.body) == ("PUT", "0", b"")


def test_head(server: TestServer) -> None:
    result = check(url=server.url("/ok"), method="HEAD", conditions=["status_code == 200", 'body == ""'])
    assert result.status is Status.OK, result.message
    assert result.observations["headers"]["content-length"] == str(len("all healthy\n"))
    assert result.observations["body_bytes"] == 0
    assert [r.method for r in server.seen] == ["HEAD"]


def test_redirects_are_followed_and_counted(server: TestServer) -> None:
    result = check(url=server.url("/redirect/3"), conditions=["status_code == 200", "redirects == 3"])
    assert result.status is Status.OK, result.message
    assert result.observations["body"] == "arrived"
    assert result.observations["url"] == server.url("/redirect/0")
    assert [r.path for r in server.seen] == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_too_many_redirects_is_critical(server: TestServer) -> None:
    result = check(url=server.url("/redirect/3"), max_redirects=2)
    assert result.status is Status.CRITICAL
    assert result.message == "more than 2 redirects (last to /redirect/0)"
    assert len(server.seen) == 3


def test_redirect_loop_is_critical(server: TestServer) -> None:
    result = check(url=server.url("/loop"))
    assert result.status is Status.CRITICAL
    assert result.message == "more than 5 redirects (last to /loop)"


def test_redirects_not_followed_when_asked(server: TestServer) -> None:
    result = check(url=server.url("/redirect/3"), follow_redirects=False, expected_status=[302])
    assert result.status is Status.OK, result.message
    assert result.observations["headers"]["location"] == "/redirect/2"
    assert result.observations["redirects"] == 0


def test_authorization_kept_on_same_origin_redirect(server: TestServer) -> None:
    check(url=server.url("/redirect/1"), headers={"Authorization": "Bearer same-origin"})
    assert [r.headers.get("authorization") for r in server.seen] == ["Bearer same-origin"] * 2


def test_authorization_dropped_on_cross_origin_redirect(server: TestServer, other_server: TestServer) -> None:
    target = other_server.url("/echo")
    result = check(
        url=server.url(f"/to?url={target}"),
        headers={"Authorization": "Bearer cross-origin", "Cookie": "s=1", "X-Keep": "kept"},
    )
    assert result.status is Status.OK, result.message
    assert result.observations["redirects"] == 1
    [first] = server.seen
    [second] = other_server.seen
    assert first.headers["authorization"] == "Bearer cross-origin"
    assert "authorization" not in second.headers
    assert "cookie" not in second.headers
    assert second.headers["x-keep"] == "kept"
    assert second.headers["host"] == f"127.0.0.1:{other_server.port}"


@pytest.mark.parametrize(("code", "method"), [(303, "GET"), (302, "GET"), (307, "POST"), (308, "POST")])
def test_redirect_method_rules_for_post(server: TestServer, code: int, method: str) -> None:
    target = server.url("/echo")
    result = check(url=server.url(f"/to?code={code}&url={target}"), method="POST", body="payload")
    assert result.status is Status.OK, result.message
    assert [r.method for r in server.seen] == ["POST", method]
    assert server.seen[1].body == (b"payload" if method == "POST" else b"")


def test_expected_status(server: TestServer) -> None:
    assert check(url=server.url("/status/503"), expected_status=[503]).status is Status.OK
    result = check(url=server.url("/status/200"), expected_status=[201, 202])
    assert result.status is Status.CRITICAL
    assert result.message == "status_code in [201, 202] failed (actual: 200)"


def test_expected_status_combines_with_conditions(server: TestServer) -> None:
    result = check(url=server.url("/status/404"), expected_status=[404], conditions=['body contains "nope"'])
    assert result.status is Status.CRITICAL
    assert [(c.expr, c.ok) for c in result.conditions] == [("status_code in [404]", True),
                                                            ('body contains "nope"', False)]


def test_server_error_is_critical_with_the_failed_condition(server: TestServer) -> None:
    result = check(url=server.url("/status/500"), conditions=["status_code == 200", "latency_ms < 5s"])
    assert result.status is Status.CRITICAL
    assert result.message == "status_code == 200 failed (actual: 500)"
    failed = [c for c in result.conditions if not c.ok]
    assert [(c.expr, c.actual) for c in failed] == [("status_code == 200", 500)]
    assert result.error is None  # the target answered: a condition failed, not the probe


def test_warning_condition_gives_warning(server: TestServer) -> None:
    result = check(
        url=server.url("/slow?ms=50"),
        conditions=["status_code == 200", {"expr": "latency_ms < 10ms", "severity": "warning"}],
    )
    assert result.status is Status.WARNING
    assert result.message.startswith("latency_ms < 10ms failed (actual: ")


def test_chunked_response(server: TestServer) -> None:
    result = check(url=server.url("/chunked"), conditions=['json.status == "chunky"', "json.n == 3"])
    assert result.status is Status.OK, result.message
    assert result.observations["headers"]["transfer-encoding"] == "chunked"
    assert result.observations["body_bytes"] == len('{"status": "chunky", "n": 3}')


def test_body_is_capped_but_counted(server: TestServer) -> None:
    result = check(url=server.url("/big?n=100000"), max_body_bytes=1000)
    assert result.status is Status.OK
    assert len(result.observations["body"]) == 1000
    assert result.observations["body_bytes"] == 100000


# ---------------------------------------------------------------- failures a user can act on


def test_connection_refused_is_critical() -> None:
    port = free_port()
    result = check(url=f"http://127.0.0.1:{port}/health")
    assert result.status is Status.CRITICAL
    assert result.message == f"connection refused by 127.0.0.1:{port}"
    assert result.error == "ConnectionRefusedProbeError"


def test_dns_failure_is_unknown() -> None:
    result = check(url="http://paramedic-test.invalid/health")
    assert result.status is Status.UNKNOWN
    assert result.message.startswith("cannot resolve host 'paramedic-test.invalid'")
    assert result.error == "DNSError"


def test_silent_listener_times_out_without_leaking_fds() -> None:
    with silent_listener() as port:
        check(url=f"http://127.0.0.1:{port}/warm-up", timeout="100ms")  # first-use imports and caches
        before = fd_count()
        t0 = time.perf_counter()
        result = check(url=f"http://127.0.0.1:{port}/health", timeout="500ms")
        elapsed = time.perf_counter() - t0
        after = fd_count()
    assert result.status is Status.CRITICAL
    assert result.message == "timed out after 500ms"
    assert 450 <= result.duration_ms < 1500
    assert elapsed < 3.0
    assert after == before


def test_many_timeouts_leak_nothing() -> None:
    with silent_listener() as port:
        check(url=f"http://127.0.0.1:{port}/", timeout="50ms")
        before = fd_count()
        for _ in range(5):
            assert check(url=f"http://127.0.0.1:{port}/", timeout="50ms").status is Status.CRITICAL
        assert fd_count() == before


def _garbage(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\nthis is not http at all\r\n\r\n")


def test_garbage_response_is_critical_invalid_http() -> None:
    with tcp_server(_garbage, timeout=5) as port:
        result = check(url=f"http://127.0.0.1:{port}/")
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"invalid HTTP response from 127.0.0.1:{port}")
    assert result.error == "ProtocolError"


def _hang_up(conn: socket.socket) -> None:
    conn.recv(65536)


def test_server_closing_without_an_answer_is_critical() -> None:
    with tcp_server(_hang_up, timeout=5) as port:
        result = check(url=f"http://127.0.0.1:{port}/")
    assert result.status is Status.CRITICAL
    assert result.message == f"connection closed by 127.0.0.1:{port} without a response"
    assert result.error == "ConnectionLostError"


def _truncated(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a little")


def test_truncated_body_is_critical() -> None:
    with tcp_server(_truncated, timeout=5) as port:
        result = check(url=f"http://127.0.0.1:{port}/")
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"invalid HTTP response from 127.0.0.1:{port}")


# ---------------------------------------------------------------- HTTPS


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: str
    client_cert: str
    client_key: str
    tmp: Path

    def server_context(self, *identities: str, require_client_cert: bool = False,
                       not_after: dt.datetime | None = None) -> ssl.SSLContext:
        ctx = server_context(self.ca, *identities, not_after=not_after)
        if require_client_cert:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    client = ca.issue_cert("paramedic-client")
    client.cert_chain_pems[0].write_to_path(str(tmp / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp / "client.key"))
    return Pki(ca, str(tmp / "ca.pem"), str(tmp / "client.pem"), str(tmp / "client.key"), tmp)


def test_https_verified_with_ca_file(pki: Pki) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    with serving(pki.server_context(not_after=expires)) as srv:
        result = check(url=srv.url("/ok"), tls={"ca_file": pki.ca_file},
                       conditions=["status_code == 200", "tls_days_left > 29", "tls_days_left < 31"])
    assert result.status is Status.OK, result.message
    assert 29 < result.observations["tls_days_left"] < 31


def test_https_verified_by_host_name(pki: Pki) -> None:
    with serving(pki.server_context()) as srv:
        result = check(url=srv.url("/ok", host="localhost"), tls={"ca_file": pki.ca_file})
    assert result.status is Status.OK, result.message


def test_https_without_ca_file_is_unknown(pki: Pki) -> None:
    with serving(pki.server_context()) as srv:
        result = check(url=srv.url("/ok"))
    assert result.status is Status.UNKNOWN
    assert result.message.startswith(f"TLS certificate of 127.0.0.1:{srv.port} failed verification")
    assert result.error == "TLSError"


def test_https_name_mismatch_is_unknown(pki: Pki) -> None:
    with serving(pki.server_context("other.example")) as srv:
        result = check(url=srv.url("/ok"), tls={"ca_file": pki.ca_file})
    assert result.status is Status.UNKNOWN
    assert "failed verification" in result.message
    assert "mismatch" in result.message


def test_https_server_name_override(pki: Pki) -> None:
    with serving(pki.server_context("app.internal")) as srv:
        result = check(url=srv.url("/ok"), tls={"ca_file": pki.ca_file, "server_name": "app.internal"})
    assert result.status is Status.OK, result.message


def test_https_insecure_skips_verification(pki: Pki) -> None:
    with serving(pki.server_context("other.example")) as srv:
        result = check(url=srv.url("/ok"), tls={"insecure": True})
    assert result.status is Status.OK, result.message
    assert "tls_days_left" not in result.observations


def test_https_client_certificate(pki: Pki) -> None:
    with serving(pki.server_context(require_client_cert=True)) as srv:
        result = check(url=srv.url("/ok"),
                       tls={"ca_file": pki.ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key})
    assert result.status is Status.OK, result.message


def test_https_missing_client_certificate_is_a_tls_failure(pki: Pki) -> None:
    with serving(pki.server_context(require_client_cert=True)) as srv:
        result = check(url=srv.url("/ok"), tls={"ca_file": pki.ca_file})
    assert result.status is not Status.OK
    # The server's alert races its RST: the probe sees one or the other, never a traceback.
    assert (result.status, result.error) in {(Status.UNKNOWN, "TLSError"), (Status.CRITICAL, "ConnectionLostError")}
    assert result.message in {
        f"TLS error from 127.0.0.1:{srv.port}: TLSV13_ALERT_CERTIFICATE_REQUIRED",
        f"connection reset by 127.0.0.1:{srv.port}",
    }


def test_https_unreadable_ca_file_is_unknown(pki: Pki) -> None:
    result = check(url="https://127.0.0.1:1/", tls={"ca_file": str(pki.tmp / "missing.pem")})
    assert result.status is Status.UNKNOWN
    assert result.message.startswith("cannot load TLS files")


def test_plain_http_against_tls_port_is_critical(pki: Pki) -> None:
    with serving(pki.server_context()) as srv:
        result = check(url=f"http://127.0.0.1:{srv.port}/ok", timeout="2s")
    assert result.status is Status.CRITICAL
    assert result.error in {"ProtocolError", "ConnectionLostError"}
