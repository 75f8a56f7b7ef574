"""Unit tests of the tls probe's pure parts: spec, implicit condition, certificate parsing."""

from __future__ import annotations

import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from agent.config.model import parse_config
from agent.kernel.conditions import evaluate
from agent.kernel.errors import ProtocolError, TLSError
from checks.tls import TlsCheckSpec, describe, verification_failure

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def spec(**fields: Any) -> TlsCheckSpec:
    return TlsCheckSpec.model_validate({"name": "t", "type": "tls", "host": "example.com", **fields})


def der_of(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_spec_from_yaml_with_defaults() -> None:
    config = parse_config("checks:\n  - {name: cert, type: tls, host: example.com}\n")
    check = config.checks[0]
    assert isinstance(check, TlsCheckSpec)
    assert (check.port, check.server_name, check.ca_file, check.verify) == (443, None, None, True)
    assert check.target() == "example.com:443"


@pytest.mark.parametrize(
    ("fields", "target"),
    [({"port": 8443}, "example.com:8443"),
     ({"host": "10.0.0.1", "server_name": "api.example.com"}, "10.0.0.1:443 (SNI api.example.com)"),
     ({"host": "::1"}, "[::1]:443")],
)
def test_target(fields: dict[str, Any], target: str) -> None:
    assert spec(**fields).target() == target


@pytest.mark.parametrize(
    "fields", [{"host": ""}, {"port": 0}, {"port": 70000}, {"server_name": ""}, {"insecure": True}]
)
def test_spec_rejects(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(**fields)


def test_verification_is_an_implicit_first_condition() -> None:
    assert [c.expr for c in spec().effective_conditions()] == ["verify_error == null", "days_left > 14"]
    custom = spec(conditions=["days_left > 7", {"expr": "days_left > 30", "severity": "warning"}])
    assert [c.expr for c in custom.effective_conditions()] == [
        "verify_error == null", "days_left > 7", "days_left > 30"]
    assert [c.expr for c in spec(verify=False).effective_conditions()] == ["days_left > 14"]


def test_verdicts_over_observations() -> None:
    conditions = spec(conditions=["days_left > 7", {"expr": "days_left > 30", "severity": "warning"}])
    conds = conditions.effective_conditions()
    assert evaluate(conds, {"verify_error": None, "days_left": 90.0})[0] == 0
    assert evaluate(conds, {"verify_error": None, "days_left": 20.0})[0] == 1
    assert evaluate(conds, {"verify_error": None, "days_left": 3.0})[0] == 2
    status, _outcomes, message = evaluate(conds, {"verify_error": "certificate has expired", "days_left": -2.5})
    assert status == 2
    assert message.startswith("verify_error == null failed (actual: 'certificate has expired'); "
                              "days_left > 7 failed (actual: -2.5)")


def test_describe_a_certificate() -> None:
    ca = trustme.CA(organization_name="Test CA Org")
    cert = ca.issue_cert("api.example.com", "127.0.0.1", common_name="api.example.com",
                         not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=30, hours=12))
    out = describe(der_of(cert), NOW)
    assert out["days_left"] == 30.5
    assert out["not_after"] == "2030-07-02T00:00:00+00:00"
    assert out["not_before"] == "2030-05-22T12:00:00+00:00"
    assert out["subject_cn"] == "api.example.com"
    assert out["subject"].startswith("CN=api.example.com,")
    assert "O=Test CA Org" in out["issuer"]
    assert out["issuer_cn"] is None
    assert out["sans"] == ["api.example.com", "127.0.0.1"]
    assert int(out["serial_number"], 16) > 0


def test_describe_an_expired_certificate() -> None:
    cert = trustme.CA().issue_cert("old.example.com", not_before=NOW - timedelta(days=90),
                                   not_after=NOW - timedelta(days=3))
    out = describe(der_of(cert), NOW)
    assert out["days_left"] == -3.0
    assert out["subject_cn"] is None


def test_describe_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="cannot be parsed"):
        describe(b"\x30\x03\x02\x01\x00", NOW, "h:443")


def raised_by_net(original: Exception) -> TLSError:
    """A TLSError raised ``from None`` while handling ``original``, as checks.net does."""
    try:
        try:
            raise original
        except Exception:
            raise TLSError("TLS with h:443 failed") from None
    except TLSError as exc:
        return exc


def test_verification_failure_reads_the_original_error() -> None:
    original = ssl.SSLCertVerificationError(1, "certificate verify failed")
    original.verify_message = "certificate has expired"
    assert verification_failure(raised_by_net(original)) == "certificate has expired"
    assert verification_failure(raised_by_net(ssl.SSLError(1, "wrong version number"))) is None
    assert verification_failure(TLSError("no context")) is None


def test_importing_the_module_does_not_import_cryptography() -> None:
    code = "import sys, checks.tls\nassert 'cryptography' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
