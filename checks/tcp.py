"""``tcp`` probe: connect to ``host:port``, optionally send a line and expect a reply.

Observations: ``connected`` (always true when observations exist: a failed connect is
an error), ``connect_ms``, ``latency_ms``, and with ``send``/``expect``: ``response``
(text read, at most ``max_bytes``) and ``matched`` (``expect`` found in it).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Literal

from pydantic import Field, model_validator

from agent.kernel.conditions import CompiledCondition, compile_condition
from agent.kernel.errors import ConnectionLostError, TLSError
from checks.base import CheckSpec, Probe
from checks.net import TlsSpec, connect, make_ssl_context


class TcpSpec(CheckSpec):
    """Where to connect and, optionally, a tiny conversation to have."""

    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    send: str | None = None
    expect: str | None = None
    max_bytes: int = Field(default=65536, ge=1)
    tls: TlsSpec | None = None

    @model_validator(mode="after")
    def _send_needs_something(self) -> TcpSpec:
        if self.send == "":
            raise ValueError("send must not be empty (leave it out to only connect)")
        return self

    def effective_conditions(self) -> tuple[CompiledCondition, ...]:
        """With ``expect`` set and no conditions, the reply must contain it."""
        if self.conditions:
            return super().effective_conditions()
        return (compile_condition("matched" if self.expect is not None else "connected", self.severity),)

    def target(self) -> str:
        return f"{self.host}:{self.port}"


class TcpProbe(Probe[TcpSpec]):
    """Opens a fresh connection per run."""

    spec_model = TcpSpec

    async def observe(self) -> dict[str, Any]:
        started = time.perf_counter()
        tls = self.spec.tls
        ctx = make_ssl_context(tls) if tls is not None else None
        conn = await connect(self.spec.host, self.spec.port, ctx, tls.server_name if tls else None)
        out: dict[str, Any] = {"connected": True, "connect_ms": round(conn.connect_ms, 3)}
        try:
            if self.spec.send is not None:
                conn.writer.write(self.spec.send.encode().decode("unicode_escape").encode("latin-1"))
                await conn.writer.drain()
            if self.spec.send is not None or self.spec.expect is not None:
                response = await self._read(conn.reader)
                out["response"] = response
                if self.spec.expect is not None:
                    out["matched"] = self.spec.expect in response
        except (ConnectionResetError, BrokenPipeError):
            raise ConnectionLostError(f"connection reset by {self.spec.host}:{self.spec.port}") from None
        except ssl.SSLError as exc:  # after the handshake, e.g. a client certificate the server requires
            raise TLSError(f"TLS error from {self.spec.host}:{self.spec.port}: {exc.reason or exc}") from None
        finally:
            conn.close()
        out["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return out

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Read until ``expect`` appears, the peer closes, or ``max_bytes`` arrive."""
        buf = b""
        expect = self.spec.expect.encode() if self.spec.expect is not None else None
        while len(buf) < self.spec.max_bytes:
            chunk = await reader.read(self.spec.max_bytes - len(buf))
            if not chunk:
                break
            buf += chunk
            if expect is None or expect in buf:
                break
        return buf.decode("utf-8", errors="replace")
