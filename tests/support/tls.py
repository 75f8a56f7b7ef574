"""TLS for tests: a throwaway certificate authority (trustme) and server contexts signed by it.

Registered as a fixture plugin in ``tests/conftest.py``: ``ca`` and ``ca_file`` need no import.
Nothing on this machine trusts the CA, so a client verifies a test server only when given
``ca_file``, and fails verification (the system store) otherwise.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from pathlib import Path

import pytest
import trustme


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A fresh trustme certificate authority, shared by the tests of one module."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    """The path of ``ca``'s certificate (PEM, ``tmp_path / "ca.pem"``): a client's ``ca_file``."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str, not_after: datetime | None = None) -> ssl.SSLContext:
    """A server-side ``SSLContext`` (``ssl.create_default_context(Purpose.CLIENT_AUTH)``) whose
    certificate, issued by ``ca``, is valid for ``names`` (default ``127.0.0.1`` and
    ``localhost``) until ``not_after`` (trustme's default when None). It asks clients for no
    certificate; set ``verify_mode`` (and ``ca.configure_trust``) on it for mutual TLS.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost")), not_after=not_after).configure_cert(context)
    return context
