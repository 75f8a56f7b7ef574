"""``http`` probe: one request (following redirects), timed, with status, headers and body.

Why h11 over asyncio streams rather than aiohttp or httpx: on this project's target
machine a cold ``paramedic check`` must finish in well under 0.35 s (importing aiohttp
alone took 0.27 s) and the daemon must run ~1,000 probes/s on one core (httpx could not).
h11 is the sans-I/O HTTP/1.1 state machine httpx itself uses; we add only the socket,
one fresh connection per probe (a health probe should pay for its connect), and
``Connection: close``.

Observations: ``status_code``, ``latency_ms`` (whole exchange), ``connect_ms``,
``ttfb_ms``, ``headers`` (lower-cased names), ``body`` (text, at most
``max_body_bytes``), ``body_bytes``, ``json`` (when the body is JSON), ``redirects``,
``url`` (final, secrets masked), ``http_version``, and ``tls_days_left`` for verified
HTTPS.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit

import h11
from pydantic import Field, field_validator

from agent.kernel.conditions import CompiledCondition, compile_condition
from agent.kernel.errors import ConnectionLostError, ProtocolError, TargetError, TLSError
from agent.kernel.models import Resources
from agent.kernel.redact import redact_url
from checks.base import CheckSpec, Probe
from checks.net import Connection, TlsSpec, connect, make_ssl_context

_REDIRECTS = {301, 302, 303, 307, 308}
USER_AGENT = "paramedic/0.1 (health probe)"


class HttpSpec(CheckSpec):
    """An HTTP(S) request and what counts as healthy."""

    type: Literal["http"]
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expected_status: tuple[int, ...] = ()
    follow_redirects: bool = True
    max_redirects: int = Field(default=5, ge=0, le=20)
    max_body_bytes: int = Field(default=65_536, ge=0)
    tls: TlsSpec = TlsSpec()

    default_conditions: ClassVar[tuple[str, ...]] = ("status_code >= 200 and status_code < 400",)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    def effective_conditions(self) -> tuple[CompiledCondition, ...]:
        """Configured conditions, plus ``status_code in expected_status`` when that is set."""
        if not self.expected_status:
            return super().effective_conditions()
        codes = ", ".join(str(c) for c in self.expected_status)
        status = compile_condition(f"status_code in [{codes}]", self.severity)
        return (status, *(self._with_severity(c) for c in self.conditions))

    def target(self) -> str:
        return f"{self.method} {redact_url(self.url)}"


class HttpProbe(Probe[HttpSpec]):
    """Performs the request; one new connection per run, nothing kept between runs."""

    spec_model = HttpSpec

    def __init__(self, spec: HttpSpec, resources: Resources | None = None) -> None:
        super().__init__(spec, resources)
        # Built here, once, not inside a timed run: loading a CA bundle takes tens of
        # milliseconds and would block (and be billed to) every probe running concurrently.
        self._ssl: ssl.SSLContext | None = make_ssl_context(spec.tls) if spec.url.startswith("https:") else None
        # The first hop is the same every run: parse it, build its h11 request and mask its
        # URL once, not a thousand times a second (together ~10% of a probe's CPU).
        self._shown_url = redact_url(spec.url)
        self._first_hop: _Hop | None = None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:  # a redirect from http to https
            self._ssl = make_ssl_context(self.spec.tls)
        return self._ssl

    async def observe(self) -> dict[str, Any]:
        started = time.perf_counter()
        url, method = self.spec.url, str(self.spec.method)
        body = self.spec.body.encode() if self.spec.body is not None else None
        headers = dict(self.spec.headers)
        redirects = 0
        while True:
            response = await self._exchange(url, method, headers, body, first=redirects == 0)
            location = response["headers"].get("location")
            code = response["status_code"]
            if not (self.spec.follow_redirects and code in _REDIRECTS and location):
                break
            if redirects >= self.spec.max_redirects:
                last = redact_url(location)
                raise TargetError(f"more than {self.spec.max_redirects} redirects (last to {last})")
            redirects += 1
            url, method, body, headers = _follow(url, location, code, method, body, headers)
        response["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        response["redirects"] = redirects
        response["url"] = self._shown_url if url == self.spec.url else redact_url(url)
        return response

    async def _exchange(
        self, url: str, method: str, headers: dict[str, str], body: bytes | None, first: bool = False
    ) -> dict[str, Any]:
        """One request/response on a new connection. ``first``: the spec's own request (cached)."""
        hop = self._first_hop if first else None
        if hop is None:
            hop = _Hop.parse(url)
            if first:
                self._first_hop = hop
        host, port = hop.host, hop.port
        ctx = self._context() if hop.https else None
        conn = await connect(host, port, ctx, self.spec.tls.server_name)
        try:
            request = hop.request
            if request is None:
                request = _request(method, hop.target, hop.host_header, headers, body)
                if first:
                    hop.request = request
            return await _talk(conn, request, method, body, self.spec)
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(f"invalid HTTP response from {host}:{port}: {exc}") from None
        except (ConnectionResetError, BrokenPipeError):
            raise ConnectionLostError(f"connection reset by {host}:{port}") from None
        except EOFError:
            raise ConnectionLostError(f"connection closed by {host}:{port} without a response") from None
        except ssl.SSLError as exc:  # after the handshake, e.g. a client certificate the server requires
            raise TLSError(f"TLS error from {host}:{port}: {exc.reason or exc}") from None
        finally:
            conn.close()


@dataclass
class _Hop:
    """Where one request goes, parsed from its URL; ``request`` is filled in once built."""

    host: str
    port: int
    https: bool
    target: str
    host_header: str
    request: h11.Request | None = None

    @classmethod
    def parse(cls, url: str) -> _Hop:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        return cls(parts.hostname or "", port, https, _target(parts), _host_header(parts))


def _request(method: str, target: str, host: str, headers: dict[str, str], body: bytes | None) -> h11.Request:
    """The request event: our defaults, then the configured headers (which win)."""
    names = {k.lower() for k in headers}
    req_headers = [("Host", host), ("Connection", "close")]
    defaults = (("User-Agent", USER_AGENT), ("Accept", "*/*"))
    req_headers += [(k, v) for k, v in defaults if k.lower() not in names]
    req_headers += list(headers.items())
    if body is not None:
        req_headers.append(("Content-Length", str(len(body))))
    return h11.Request(method=method, target=target, headers=req_headers)


async def _talk(
    conn: Connection, request: h11.Request, method: str, body: bytes | None, spec: HttpSpec,
) -> dict[str, Any]:
    """Send one request and read the response with h11's state machine."""
    client = h11.Connection(our_role=h11.CLIENT)
    data = client.send(request)
    if body:
        data += client.send(h11.Data(data=body))
    data += client.send(h11.EndOfMessage())
    started = time.perf_counter()
    conn.writer.write(data)
    out: dict[str, Any] = {"connect_ms": round(conn.connect_ms, 3)}
    chunks: list[bytes] = []
    size = 0
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            chunk = await conn.reader.read(65536)
            if not chunk and "status_code" not in out:
                raise EOFError  # closed before a status line: say so, not h11's state names
            client.receive_data(chunk)
            continue
        if isinstance(event, h11.Response):
            out["ttfb_ms"] = round((time.perf_counter() - started) * 1000, 3)
            out["status_code"] = event.status_code
            out["http_version"] = event.http_version.decode()
            out["headers"] = _headers(event.headers)
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if sum(map(len, chunks)) < spec.max_body_bytes:
                chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    raw = b"".join(chunks)[: spec.max_body_bytes]
    _add_body(out, raw, size, method)
    _add_cert(out, conn)
    return out


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        result[key] = f"{result[key]}, {text}" if key in result else text
    return result


def _add_body(out: dict[str, Any], raw: bytes, size: int, method: str) -> None:
    out["body_bytes"] = size
    out["body"] = raw.decode("utf-8", errors="replace")
    if method == "HEAD" or not raw:
        return
    ctype = out.get("headers", {}).get("content-type", "")
    if "json" in ctype or raw[:1] in (b"{", b"["):
        try:
            out["json"] = json.loads(raw)
        except ValueError:
            return


def _add_cert(out: dict[str, Any], conn: Connection) -> None:
    cert = conn.peercert()
    if cert and "notAfter" in cert:
        expires = ssl.cert_time_to_seconds(cert["notAfter"])
        out["tls_days_left"] = round((expires - time.time()) / 86400, 2)


def _target(parts: Any) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _host_header(parts: Any) -> str:
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _follow(
    url: str, location: str, code: int, method: str, body: bytes | None, headers: dict[str, str]
) -> tuple[str, str, bytes | None, dict[str, str]]:
    """The next request of a redirect chain (RFC 9110 semantics, credentials kept on-origin)."""
    new_url = urljoin(url, location)
    if code == 303 or (code in (301, 302) and method == "POST"):
        method, body = "GET", None
    if urlsplit(new_url).netloc != urlsplit(url).netloc:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
    return new_url, method, body, headers
