"""Shared socket plumbing for the network probes: connect with errors a person can act on.

Both ``http`` and ``tcp`` open a fresh connection per run (a health probe should measure
the connect too) with ``asyncio.open_connection``; this module maps the OS and TLS errors
of that step onto the error tree, so every probe says "connection refused by
127.0.0.1:8080" rather than a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from pydantic import model_validator

from agent.kernel.errors import (
    ConnectionLostError,
    ConnectionRefusedProbeError,
    DNSError,
    ProbeError,
    TargetError,
    TLSError,
)
from agent.kernel.models import Frozen


class TlsSpec(Frozen):
    """TLS client settings. Verification is on by default; ``insecure`` must be asked for."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSpec:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        return self


def make_ssl_context(spec: TlsSpec) -> ssl.SSLContext:
    """A client context for ``spec``; a missing CA or cert file is an agent-side error."""
    try:
        ctx = ssl.create_default_context(cafile=spec.ca_file)
        if spec.cert_file:
            ctx.load_cert_chain(spec.cert_file, spec.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"cannot load TLS files: {exc}") from None
    if spec.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Connection:
    """An open stream pair, with timings measured while opening it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    connect_ms: float

    def close(self) -> None:
        """Close without waiting: a hung peer must not hold the probe past its timeout."""
        self.writer.close()

    def peercert(self) -> dict[str, Any] | None:
        """The verified peer certificate (``None`` for plain TCP or unverified TLS)."""
        ssl_obj = self.writer.get_extra_info("ssl_object")
        if ssl_obj is None:
            return None
        cert: dict[str, Any] | None = ssl_obj.getpeercert()
        return cert or None


async def connect(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None, server_name: str | None = None
) -> Connection:
    """Open a connection, translating failures into ``agent.kernel.errors`` probe errors."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    where = f"{host}:{port}"
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=(server_name or host) if ssl_context else None
        )
    except socket.gaierror as exc:
        raise DNSError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    except ssl.SSLCertVerificationError as exc:
        raise TLSError(f"TLS certificate of {where} failed verification: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise TLSError(f"TLS handshake with {where} failed: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise ConnectionRefusedProbeError(f"connection refused by {where}") from None
    except (ConnectionResetError, asyncio.IncompleteReadError):
        raise ConnectionLostError(f"connection reset by {where} during connect") from None
    except OSError as exc:
        raise _os_error(exc, where) from None
    return Connection(reader, writer, (loop.time() - start) * 1000)


def _os_error(exc: OSError, where: str) -> ProbeError:
    if exc.errno in (errno.ECONNREFUSED,):
        return ConnectionRefusedProbeError(f"connection refused by {where}")
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return TargetError(f"{where} is unreachable: {exc.strerror}")
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ConnectionLostError(f"cannot connect to {where}: {reason}")


def split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    """``"h:1"`` -> ``("h", 1)``; ``"[::1]:1"`` -> ``("::1", 1)``; no port -> default."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = hostport.rpartition(":")
    if not sep or ":" in host:
        return hostport, default_port
    return host, int(port)
