"""``tls`` probe: handshake with ``host:port`` and report the server certificate's health.

What it checks: the leaf certificate's validity window (``days_left``), and, with
``verify: true`` (the default), that the chain is trusted and the name matches. When
verification fails, a second handshake *without* verification reads the certificate
anyway, so an expired certificate still reports ``days_left`` (negative) and who issued
it, rather than only "verification failed".

Why a verification failure is CRITICAL here but UNKNOWN in the ``http`` probe: an http
check asks "does the service answer?", and a certificate our side cannot verify (a
missing CA bundle in *our* config) must not get a healthy service restarted. A tls check
asks "is this endpoint's certificate good?": expired, untrusted or issued for another
name *is* the answer, so it is reported with the observations and an implicit condition
``verify_error == null``. Only problems of our own setup stay UNKNOWN: an unreadable
``ca_file``, a name that does not resolve.

Observations: ``days_left`` (float, negative once expired), ``not_after`` and
``not_before`` (ISO 8601, UTC), ``subject``, ``subject_cn``, ``issuer``, ``issuer_cn``
(RFC 4514 strings and their common names), ``sans`` (DNS names and IP addresses),
``serial_number`` (hex), ``verified`` (the verifying handshake succeeded),
``verify_error`` (OpenSSL's reason, or null), ``tls_version``, ``connect_ms``.

Certificates are parsed with ``cryptography`` (imported when a tls check first runs).
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from agent.kernel.conditions import CompiledCondition, compile_condition
from agent.kernel.errors import DependencyUnavailableError, ProtocolError, TLSError
from checks.base import CheckSpec, Probe
from checks.net import Connection, TlsSpec, connect, make_ssl_context

#: Added in front of the conditions when ``verify`` is on: a failed verification is CRITICAL.
VERIFIED_CONDITION = "verify_error == null"


class TlsCheckSpec(CheckSpec):
    """Where to handshake, and how to verify what the server presents."""

    type: Literal["tls"]
    host: str = Field(min_length=1)
    port: int = Field(default=443, ge=1, le=65535)
    server_name: str | None = Field(default=None, min_length=1)
    ca_file: str | None = None
    verify: bool = True

    default_conditions: ClassVar[tuple[str, ...]] = ("days_left > 14",)

    def effective_conditions(self) -> tuple[CompiledCondition, ...]:
        """``verify_error == null`` (when verifying), then the configured or default ones."""
        base = super().effective_conditions()
        if not self.verify:
            return base
        return (compile_condition(VERIFIED_CONDITION, self.severity), *base)

    def target(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.server_name and self.server_name != self.host:
            return f"{where} (SNI {self.server_name})"
        return where


class TlsProbe(Probe[TlsCheckSpec]):
    """One verifying handshake per run (two when verification fails); no data is exchanged."""

    spec_model = TlsCheckSpec
    lazy_imports = ("cryptography.x509",)
    _verifying: ssl.SSLContext | None = None
    _reading: ssl.SSLContext | None = None

    def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(verifying, non-verifying) client contexts; a bad ``ca_file`` is UNKNOWN."""
        if self._verifying is None or self._reading is None:
            self._verifying = make_ssl_context(TlsSpec(ca_file=self.spec.ca_file))
            self._reading = make_ssl_context(TlsSpec(insecure=True))
        return self._verifying, self._reading

    async def observe(self) -> dict[str, Any]:
        verifying, reading = self._contexts()
        verify_error: str | None = None
        if self.spec.verify:
            try:
                conn = await self._handshake(verifying)
            except TLSError as exc:  # only certificate verification failures get here
                verify_error = verification_failure(exc) or str(exc)
                conn = await self._handshake(reading)
        else:
            conn = await self._handshake(reading)
        try:
            ssl_obj = conn.writer.get_extra_info("ssl_object")
            der: bytes | None = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
            version = ssl_obj.version() if ssl_obj is not None else None
        finally:
            conn.close()
        if not der:
            raise ProtocolError(f"{self.spec.target()} presented no certificate")
        out = describe(der, datetime.now(UTC), self.spec.target())
        out.update(
            verified=self.spec.verify and verify_error is None,
            verify_error=verify_error,
            tls_version=version,
            connect_ms=round(conn.connect_ms, 3),
        )
        return out

    async def _handshake(self, context: ssl.SSLContext) -> Connection:
        """Connect and handshake; a handshake that fails for a non-certificate reason is CRITICAL."""
        try:
            return await connect(self.spec.host, self.spec.port, context, self.spec.server_name)
        except TLSError as exc:
            if context is self._verifying and verification_failure(exc) is not None:
                raise
            raise ProtocolError(str(exc)) from None


def verification_failure(exc: TLSError) -> str | None:
    """OpenSSL's reason when ``exc`` is a certificate verification failure, else ``None``.

    ``checks.net.connect`` raises ``TLSError(...) from None``: the original
    ``ssl.SSLCertVerificationError`` is still the exception's ``__context__``.
    """
    original = exc.__context__
    if isinstance(original, ssl.SSLCertVerificationError):
        return str(original.verify_message or original.reason or "certificate verification failed")
    return None


def describe(der: bytes, now: datetime, where: str = "the server") -> dict[str, Any]:
    """Observations from a DER certificate at time ``now`` (pure; tested without a server)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - depends on the install
        raise DependencyUnavailableError("the tls probe needs the 'cryptography' package") from None
    try:
        cert = x509.load_der_x509_certificate(der)
        not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
        sans = _sans(x509, cert)
        subject, issuer = cert.subject, cert.issuer
        out = {
            "days_left": round((not_after - now).total_seconds() / 86400, 3),
            "not_after": not_after.isoformat(),
            "not_before": not_before.isoformat(),
            "subject": subject.rfc4514_string(),
            "subject_cn": _common_name(x509, subject),
            "issuer": issuer.rfc4514_string(),
            "issuer_cn": _common_name(x509, issuer),
            "sans": sans,
            "serial_number": format(cert.serial_number, "x"),
        }
    except ValueError as exc:
        raise ProtocolError(f"certificate of {where} cannot be parsed: {exc}") from None
    return out


def _common_name(x509: Any, name: Any) -> str | None:
    values = name.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _sans(x509: Any, cert: Any) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
